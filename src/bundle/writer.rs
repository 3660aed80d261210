//! Writing a planned bundle in one pass from any `Source`: header, each blob once (verified as
//! it is copied), index, trailer; into stdout, a file or volumes, committed only when complete.
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;

use super::format::{encode_entry, encode_header, encode_trailer, Trailer, KIND_BLOB, VERSION};
use super::plan::BundlePlan;
use super::volumes::{Target, VolumeWriter};
use crate::digest::{BundleId, Digest, Hasher};
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::mapped::{Chunk, Shared};
use crate::progress::Progress;
use crate::source::Source;

#[derive(Debug, Serialize)]
pub struct WriteReport {
    pub bundle_id: BundleId,
    pub bytes: u64,
    pub files: Vec<(PathBuf, u64)>,
}

/// How much of a blob is mapped at once (windows in flight: a few per thread).
const WINDOW: u64 = 2 << 20;

pub(super) fn io_err(e: std::io::Error) -> Error {
    Error::Other(format!("writing the bundle: {e}"))
}

/// Verifies blobs on a thread of its own: chunks go in as they are written, each blob's end
/// brings its expected digest; the first mismatch is kept for the writer to act on.
pub(super) struct BlobChecker {
    tx: Option<SyncSender<Check>>,
    handle: Option<JoinHandle<Result<()>>>,
}

pub(super) enum Check {
    Data(Chunk),
    End { digest: Digest, size: u64, what: String },
}

impl BlobChecker {
    pub(super) fn new() -> BlobChecker {
        let (tx, rx) = sync_channel::<Check>(4);
        let handle = std::thread::spawn(move || {
            let mut h = Hasher::new();
            let mut first: Result<()> = Ok(());
            for m in rx {
                match m {
                    Check::Data((c, r)) => h.update(&(*c).as_ref()[r]),
                    Check::End { digest, size, what } => {
                        let done = std::mem::take(&mut h);
                        if first.is_ok() {
                            first = done.verify(&what, &digest, Some(size));
                        }
                    }
                }
            }
            first
        });
        BlobChecker { tx: Some(tx), handle: Some(handle) }
    }
    pub(super) fn send(&self, m: Check) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(m);
        }
    }
    fn finish(mut self) -> Result<()> {
        drop(self.tx.take());
        self.handle.take().unwrap().join().expect("checker thread")
    }
}

/// Writes one whole blob as an entry (header, then its bytes), mapped a window at a time where
/// the source has local files (the output and both hash threads read the same pages, with no
/// copy into a buffer), else from the source's verified stream. The checker hashes both kinds.
pub(super) fn write_blob_entry(w: &mut VolumeWriter, source: &dyn Source, desc: &Descriptor, checker: &BlobChecker, total: &dyn Fn(u64), what: &str) -> Result<()> {
    w.write_all(&encode_entry(KIND_BLOB, desc.size, &desc.digest)).map_err(io_err)?;
    let mapped = match source.local() {
        Some(l) => l.mapped(desc)?,
        None => None,
    };
    // The stream fails before its last byte on a mismatch.
    let mut stream = match mapped {
        Some(_) => None,
        None => Some(source.blob(desc)?),
    };
    let mut at = 0u64;
    while at < desc.size {
        if crate::cancel::requested() {
            return Err(Error::Interrupted);
        }
        let (window, n): (Shared, usize) = match (&mapped, &mut stream) {
            (Some(m), _) => {
                let w = m.window(at, WINDOW as usize)?;
                let n = w.as_ref().len();
                (Arc::new(w), n)
            }
            (None, Some(r)) => {
                let mut buf = vec![0u8; WINDOW.min(desc.size - at) as usize];
                r.read_exact(&mut buf).map_err(|x| Error::Other(format!("{what} {}: {x}", desc.digest)))?;
                let n = buf.len();
                (Arc::new(buf), n)
            }
            (None, None) => unreachable!("one of the two is set"),
        };
        w.write_shared(window.clone(), 0..n)?;
        checker.send(Check::Data((window, 0..n)));
        total(n as u64);
        at += n as u64;
    }
    checker.send(Check::End { digest: desc.digest.clone(), size: desc.size, what: what.to_string() });
    Ok(())
}

/// Writes the index and the trailer.
pub(super) fn write_index(w: &mut VolumeWriter, index: &[u8], version: u32) -> Result<()> {
    let index_offset = w.position;
    w.write_all(index).map_err(io_err)?;
    let trailer = Trailer { index_offset, index_len: index.len() as u64, index_sha256: Digest::of(index).raw() };
    w.write_all(&encode_trailer(&trailer, version)).map_err(io_err)
}

/// What the checker found, as the writer reports it.
pub(super) fn checked(checker: BlobChecker, what: &str) -> Result<()> {
    checker.finish().map_err(|x| Error::Other(format!("{x} (the source is damaged{})", if what.starts_with("store ") { ": run `ocibundle store fsck`" } else { "" })))
}

pub fn write(source: &dyn Source, plan: &BundlePlan, target: Target, progress: bool) -> Result<WriteReport> {
    let mut w = VolumeWriter::new(target, plan.bundle_id)?;
    let bar = Progress::new(progress, plan.stream_len, "bundle");
    let total = bar.blob("", 0);
    w.write_all(&encode_header(&plan.bundle_id, VERSION)).map_err(io_err)?;
    // Three threads share the work: this one reads and writes, one verifies each blob against
    // its digest, one hashes the output for FILE.sha256.
    let checker = BlobChecker::new();
    let what = format!("{}: blob", source.name());
    let copied = (|| -> Result<()> {
        for e in &plan.index.entries {
            let desc = Descriptor { media_type: e.media_type.clone(), digest: e.digest.clone(), size: e.size, platform: None, annotations: None };
            write_blob_entry(&mut w, source, &desc, &checker, &|n| total.inc(n), &what)?;
            debug_assert_eq!(w.position, e.offset + e.size);
        }
        Ok(())
    })();
    // A store blob that no longer matches its name never reaches a committed bundle.
    let verdict = checked(checker, &what);
    copied?;
    verdict?;
    write_index(&mut w, &plan.index.to_bytes(), VERSION)?;
    if w.position != plan.stream_len {
        return Err(Error::Other(format!("internal error: wrote {} bytes, planned {}", w.position, plan.stream_len)));
    }
    bar.finish();
    let files = w.commit()?;
    Ok(WriteReport { bundle_id: plan.index.bundle_id, bytes: plan.file_size(), files })
}

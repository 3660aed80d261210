//! Writing a planned bundle in one pass from any `Source`: header, each blob once (verified as
//! it is copied), index, trailer; into stdout, a file or volumes, committed only when complete.
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;

use super::format::{encode_entry, encode_header, encode_trailer, Trailer, KIND_BLOB};
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

fn io_err(e: std::io::Error) -> Error {
    Error::Other(format!("writing the bundle: {e}"))
}

/// Verifies blobs on a thread of its own: chunks go in as they are written, each blob's end
/// brings its expected digest; the first mismatch is kept for the writer to act on.
struct BlobChecker {
    tx: Option<SyncSender<Check>>,
    handle: Option<JoinHandle<Result<()>>>,
}

enum Check {
    Data(Chunk),
    End { digest: Digest, size: u64, what: String },
}

impl BlobChecker {
    fn new() -> BlobChecker {
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
    fn send(&self, m: Check) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(m);
        }
    }
    fn finish(mut self) -> Result<()> {
        drop(self.tx.take());
        self.handle.take().unwrap().join().expect("checker thread")
    }
}

pub fn write(source: &dyn Source, plan: &BundlePlan, target: Target, progress: bool) -> Result<WriteReport> {
    let mut w = VolumeWriter::new(target, plan.bundle_id)?;
    let bar = Progress::new(progress, plan.stream_len, "bundle");
    let total = bar.blob("", 0);
    w.write_all(&encode_header(&plan.bundle_id)).map_err(io_err)?;
    // Three threads share the work: this one reads and writes, one verifies each blob against
    // its digest, one hashes the output for FILE.sha256.
    let checker = BlobChecker::new();
    let what = format!("{}: blob", source.name());
    let copied = (|| -> Result<()> {
        for e in &plan.index.entries {
            w.write_all(&encode_entry(KIND_BLOB, e.size, &e.digest)).map_err(io_err)?;
            debug_assert_eq!(w.position, e.offset);
            // Mapped a window at a time where the source has local files: the output and both
            // hash threads read the same pages, with no copy into a buffer. Else the source's
            // (verified) stream, a window at a time.
            let desc = Descriptor { media_type: e.media_type.clone(), digest: e.digest.clone(), size: e.size, platform: None, annotations: None };
            let mapped = match source.local() {
                Some(l) => l.mapped(&desc)?,
                None => None,
            };
            // The stream fails before its last byte on a mismatch; the checker hashes both kinds.
            let mut stream = match mapped {
                Some(_) => None,
                None => Some(source.blob(&desc)?),
            };
            let mut at = 0u64;
            while at < e.size {
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
                        let mut buf = vec![0u8; WINDOW.min(e.size - at) as usize];
                        r.read_exact(&mut buf).map_err(|x| Error::Other(format!("{what} {}: {x}", e.digest)))?;
                        let n = buf.len();
                        (Arc::new(buf), n)
                    }
                    (None, None) => unreachable!("one of the two is set"),
                };
                w.write_shared(window.clone(), 0..n)?;
                checker.send(Check::Data((window, 0..n)));
                total.inc(n as u64);
                at += n as u64;
            }
            checker.send(Check::End { digest: e.digest.clone(), size: e.size, what: what.clone() });
        }
        Ok(())
    })();
    // A store blob that no longer matches its name never reaches a committed bundle.
    let checked = checker.finish();
    copied?;
    checked.map_err(|x| Error::Other(format!("{x} (the source is damaged{})", if what.starts_with("store ") { ": run `ocibundle store fsck`" } else { "" })))?;
    let index = plan.index.to_bytes();
    let index_offset = w.position;
    w.write_all(&index).map_err(io_err)?;
    let trailer = Trailer { index_offset, index_len: index.len() as u64, index_sha256: hex::decode(Digest::of(&index).hex()).unwrap().try_into().unwrap() };
    w.write_all(&encode_trailer(&trailer)).map_err(io_err)?;
    if w.position != plan.stream_len {
        return Err(Error::Other(format!("internal error: wrote {} bytes, planned {}", w.position, plan.stream_len)));
    }
    bar.finish();
    let files = w.commit()?;
    Ok(WriteReport { bundle_id: plan.index.bundle_id, bytes: plan.file_size(), files })
}

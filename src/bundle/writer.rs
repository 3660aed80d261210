//! Writing a planned bundle in one pass: header, each blob once (re-verified as it is copied out
//! of the store), index, trailer; into stdout, a file or volumes, committed only when complete.
use std::io::{Read, Write};
use std::path::PathBuf;

use serde::Serialize;

use super::format::{encode_entry, encode_header, encode_trailer, Trailer, KIND_BLOB};
use super::plan::BundlePlan;
use super::volumes::{Target, VolumeWriter};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::store::Store;

#[derive(Debug, Serialize)]
pub struct WriteReport {
    pub bundle_id: String,
    pub bytes: u64,
    pub files: Vec<(PathBuf, u64)>,
}

fn io_err(e: std::io::Error) -> Error {
    Error::Other(format!("writing the bundle: {e}"))
}

pub fn write(store: &Store, plan: &BundlePlan, target: Target, progress: bool) -> Result<WriteReport> {
    let mut w = VolumeWriter::new(target, plan.bundle_id)?;
    let bar = Progress::new(progress, plan.stream_len, "bundle");
    let total = bar.blob("", 0);
    w.write_all(&encode_header(&plan.bundle_id)).map_err(io_err)?;
    let mut buf = vec![0u8; 1 << 20];
    for e in &plan.index.entries {
        w.write_all(&encode_entry(KIND_BLOB, e.size, &e.digest)).map_err(io_err)?;
        debug_assert_eq!(w.position, e.offset);
        let what = format!("store {}: blob", store.root().display());
        let f = store.open_blob(&e.digest)?;
        let mut r = f.take(e.size + 1);
        let mut h = Hasher::new();
        loop {
            if crate::cancel::requested() {
                return Err(Error::Interrupted);
            }
            let n = r.read(&mut buf).at(store.blob_path(&e.digest))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            if h.len() > e.size {
                break;
            }
            w.write_all(&buf[..n]).map_err(io_err)?;
            total.inc(n as u64);
        }
        // A store blob that no longer matches its name never reaches a bundle.
        h.verify(&what, &e.digest, Some(e.size)).map_err(|x| Error::Other(format!("{x} (the store is damaged: run `ocibundle store fsck`)")))?;
    }
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
    Ok(WriteReport { bundle_id: plan.index.bundle_id.clone(), bytes: plan.file_size(), files })
}

//! The store as a `copy::Sink`: each blob through its partial file (resumed where a local or
//! remote source can continue it), verified and made durable as it completes, but named (with
//! the manifests, then the references in one index.json update) only at the commit. Dropped
//! before its commit, the sink leaves nothing under `blobs/` and no reference: its verified
//! blobs go back to being partial files, which the next copy finds complete (nothing is read
//! again) and `store gc` clears; a killed process's are taken back by the next copy the same
//! way (`PartialBlob::open`).
use std::io::{Read, Write};
use std::sync::Mutex;

use super::{PartialBlob, Sealed, Store, UseGuard};
use crate::copy::Sink;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::source::Source;

pub struct StoreSink<'a> {
    store: &'a Store,
    _guard: UseGuard,
    sealed: Mutex<Vec<Sealed>>,
    manifests: Mutex<Vec<(Digest, Vec<u8>)>>,
}

impl<'a> StoreSink<'a> {
    /// A sink into `store`; gc waits while it lives.
    pub fn new(store: &'a Store) -> Result<StoreSink<'a>> {
        Ok(StoreSink { store, _guard: store.use_guard()?, sealed: Mutex::default(), manifests: Mutex::default() })
    }
}

impl StoreSink<'_> {
    /// One attempt at `desc` into an open partial: from a local source by position (resumed
    /// from the partial's end; unverified, which is why the partial hashes what it is given and
    /// checks digest and size before the blob gets a name: one hash, not two), else from the
    /// source's verified stream, from byte zero.
    fn fill(&self, part: &mut PartialBlob, desc: &Descriptor, from: &dyn Source, what: &str, progress: &(dyn Fn(u64) + Sync)) -> Result<()> {
        let mut r: Box<dyn Read + Send + '_> = match (part.offset(), from.local()) {
            // The partial's own hash covers the prefix: its seal checks the whole blob.
            (off, Some(local)) => {
                progress(off);
                local.read_from(desc, off)?
            }
            (0, None) => from.blob(desc)?,
            (_, None) => {
                part.restart()?;
                from.blob(desc)?
            }
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if crate::cancel::requested() {
                part.flush()?;
                return Err(Error::Interrupted);
            }
            let n = r.read(&mut buf).map_err(|e| Error::from_read(what, e))?;
            if n == 0 {
                return Ok(());
            }
            part.writer().write_all(&buf[..n]).map_err(|e| Error::Other(format!("{what}: writing to the store: {e}")))?;
            progress(n as u64);
        }
    }
}

impl Sink for StoreSink<'_> {
    fn parallel(&self) -> bool {
        true
    }

    fn put_blob(&self, desc: &Descriptor, from: &dyn Source, progress: &(dyn Fn(u64) + Sync)) -> Result<bool> {
        let what = from.what_blob(desc);
        for attempt in 0..2 {
            let Some(mut part) = PartialBlob::open(self.store, &desc.digest, Some(desc.size), &what)? else { return Ok(false) };
            let resumed = part.offset() > 0;
            match from.remote() {
                // A download resumes the partial itself (HTTP Range), across cuts and runs.
                Some(remote) => remote.download(desc, &mut part, progress)?,
                None => self.fill(&mut part, desc, from, &what, progress)?,
            }
            match part.seal() {
                Ok(sealed) => {
                    self.sealed.lock().unwrap().push(sealed);
                    return Ok(true);
                }
                // A partial left by a crash may hold a damaged prefix: once more from zero.
                Err(Error::DigestMismatch { .. }) if resumed && attempt == 0 => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    fn put_manifest(&self, desc: &Descriptor, bytes: &[u8]) -> Result<bool> {
        if self.store.has_blob(&desc.digest, Some(desc.size)) {
            return Ok(false);
        }
        self.manifests.lock().unwrap().push((desc.digest.clone(), bytes.to_vec()));
        Ok(true)
    }

    fn keeps_picked_from(&self) -> bool {
        true
    }

    fn commit(self: Box<Self>, refs: &[(String, Descriptor)]) -> Result<u64> {
        for s in self.sealed.lock().unwrap().drain(..) {
            s.publish()?;
        }
        // Children before the index that lists them, as they came.
        for (d, bytes) in self.manifests.lock().unwrap().iter() {
            self.store.put_bytes(d, bytes)?;
        }
        self.store.sync_blobs_dir()?;
        self.store.set_refs(refs)?;
        Ok(0)
    }
}

impl Store {
    /// The store as the end of a copy.
    pub fn sink(&self) -> Result<Box<dyn Sink + '_>> {
        Ok(Box::new(StoreSink::new(self)?))
    }

    /// Imports `refs` from `source` (a bundle, an archive, a layout): one copy into the store,
    /// `jobs` blobs at a time, keeping every image whose blobs all check out; the others fail
    /// the run in one line (`Executed::into_result`).
    pub fn import_from(&self, source: &dyn Source, refs: &[(String, Descriptor)], jobs: usize, progress: bool) -> Result<crate::copy::Copied> {
        let plan = crate::copy::plan(source, refs)?;
        let opts = crate::copy::CopyOptions { jobs, progress, label: "import", keep_going: true };
        Ok(crate::copy::execute(source, self.sink()?, &plan, &opts)?.into_result(plan.images.len(), "stored", "run import again")?.copied)
    }
}

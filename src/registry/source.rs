//! The registry as a `Source`, what `fetch` copies from: the references a fetch plan resolved,
//! the manifests the plan read (held in memory, checked against their digests as they came),
//! and content blobs read through the repository of the image that needs them. Into a store,
//! a blob is downloaded by `RemoteBlobs::download`, which resumes the partial file with Range
//! across cuts and runs; any other reader gets one verified stream.
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::AtomicBool;

use super::Registry;
use crate::digest::{Digest, VerifyingReader};
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::reference::Reference;
use crate::source::{RemoteBlobs, Source};
use crate::store::PartialBlob;

pub struct RegistrySource<'a> {
    reg: &'a Registry,
    refs: Vec<(String, Descriptor)>,
    manifests: BTreeMap<Digest, Vec<u8>>,
    /// The image each content blob is read through (the first that needs it).
    through: BTreeMap<Digest, Reference>,
    /// Never raised: a failed blob does not stop the others (copy's `keep_going`); Ctrl-C is
    /// seen by the download loop itself.
    no_abort: AtomicBool,
}

impl<'a> RegistrySource<'a> {
    /// A source of `refs` (name, what it resolved to), whose manifests the caller has read and
    /// checked; content blobs are listed with the image to read them through.
    pub fn new(reg: &'a Registry, refs: Vec<(String, Descriptor)>, manifests: BTreeMap<Digest, Vec<u8>>, through: BTreeMap<Digest, Reference>) -> RegistrySource<'a> {
        RegistrySource { reg, refs, manifests, through, no_abort: AtomicBool::new(false) }
    }

    fn through(&self, d: &Digest) -> Result<&Reference> {
        self.through.get(d).ok_or_else(|| Error::Other(format!("registry: blob {d} belongs to no image of this fetch")))
    }
}

impl Source for RegistrySource<'_> {
    fn name(&self) -> String {
        "registry".into()
    }
    fn refs(&self) -> Result<Vec<(String, Descriptor)>> {
        Ok(self.refs.clone())
    }
    fn has(&self, d: &Digest) -> bool {
        self.manifests.contains_key(d) || self.through.contains_key(d)
    }
    fn size_of(&self, d: &Digest) -> Option<u64> {
        self.manifests.get(d).map(|m| m.len() as u64)
    }
    fn what_blob(&self, desc: &Descriptor) -> String {
        match self.through.get(&desc.digest) {
            Some(r) => format!("{r}: blob {}", desc.digest),
            None => format!("registry: blob {}", desc.digest),
        }
    }
    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        if let Some(m) = self.manifests.get(&desc.digest) {
            return Ok(Box::new(VerifyingReader::new(std::io::Cursor::new(m.clone()), desc.digest.clone(), desc.size, format!("registry: manifest {}", desc.digest))));
        }
        let r = self.through(&desc.digest)?;
        let body = self.reg.blob_stream(r, desc)?;
        Ok(Box::new(VerifyingReader::new(body, desc.digest.clone(), desc.size, self.what_blob(desc))))
    }
    fn remote(&self) -> Option<&dyn RemoteBlobs> {
        Some(self)
    }
}

impl RemoteBlobs for RegistrySource<'_> {
    fn download(&self, desc: &Descriptor, part: &mut PartialBlob, progress: &(dyn Fn(u64) + Sync)) -> Result<()> {
        let r = self.through(&desc.digest)?;
        progress(part.offset());
        self.reg.download_blob(r, desc, part, progress, &self.no_abort)
    }
}

impl Registry {
    /// One GET of a blob, as a stream (no resume: `download_blob` is the resuming way in).
    pub fn blob_stream(&self, r: &Reference, desc: &Descriptor) -> Result<Box<dyn Read + Send + 'static>> {
        let host = self.host(r)?;
        let what = format!("{r}: blob {}", desc.digest);
        let url = format!("{}/v2/{}/blobs/{}", host.base, r.repository, desc.digest);
        let resp = self.retry(|| self.get(&host, r, &url, &what, &[]))?;
        Ok(Box::new(resp.into_body().into_reader()))
    }
}

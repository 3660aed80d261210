//! Where images are read from: the store, a bundle, or a bundle backed by the store (a delta).
//! Every blob handed out is verified against its digest as it is read.
use std::io::Read;

use crate::bundle::Bundle;
use crate::digest::{Digest, VerifyingReader};
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::mapped::Mapped;
use crate::store::Store;

/// A read-only source of images and blobs.
pub trait Source: Sync {
    /// Names the source in messages.
    fn name(&self) -> String;
    /// Every reference it holds, with the descriptor it points at.
    fn refs(&self) -> Result<Vec<(String, Descriptor)>>;
    /// Whether the blob is available.
    fn has(&self, d: &Digest) -> bool;
    /// The blob's bytes as a stream, verified: the stream fails at its end on a mismatch.
    fn open(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>>;

    /// The blob's bytes without the digest check, for a consumer that verifies what it makes
    /// of them against another digest (docker-archive export checks every decompressed layer
    /// against its diff_id, which the verified config names).
    fn open_unverified(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        self.open(desc)
    }

    /// `len` bytes of the blob from `offset`, unverified (a size hint from a gzip trailer, say:
    /// whatever it is used for must be checked later). Blobs are random access everywhere.
    fn read_at(&self, desc: &Descriptor, offset: u64, len: usize) -> Result<Vec<u8>>;

    /// The blob opened for mapping window by window, unverified; for `copy_verified`.
    fn mapped(&self, desc: &Descriptor) -> Result<Box<dyn Mapped + '_>>;

    /// A small blob read whole (manifests, configs), capped and verified.
    fn read_small(&self, desc: &Descriptor, cap: u64) -> Result<Vec<u8>> {
        if desc.size > cap {
            return Err(Error::TooLarge { what: format!("{}: blob {}", self.name(), desc.digest), limit: cap });
        }
        let mut v = Vec::with_capacity(desc.size as usize);
        self.open(desc)?.read_to_end(&mut v).map_err(|e| Error::Other(format!("{}: blob {}: {e}", self.name(), desc.digest)))?;
        Ok(v)
    }
}

impl Source for Store {
    fn name(&self) -> String {
        format!("store {}", self.root().display())
    }
    fn refs(&self) -> Result<Vec<(String, Descriptor)>> {
        Ok(Store::refs(self)?.into_iter().map(|e| (e.name, e.descriptor)).collect())
    }
    fn has(&self, d: &Digest) -> bool {
        self.has_blob(d, None)
    }
    fn open(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        let f = self.open_blob(&desc.digest)?;
        Ok(Box::new(VerifyingReader::new(std::io::BufReader::with_capacity(1 << 20, f), desc.digest.clone(), desc.size, "store blob")))
    }
    fn open_unverified(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(self.open_blob(&desc.digest)?))
    }
    fn read_at(&self, desc: &Descriptor, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(&self.open_blob(&desc.digest)?, &mut v, offset).map_err(|e| Error::io(self.blob_path(&desc.digest), e))?;
        Ok(v)
    }
    fn mapped(&self, desc: &Descriptor) -> Result<Box<dyn Mapped + '_>> {
        Ok(Box::new(self.map_blob(&desc.digest, desc.size)?))
    }
}

impl Source for Bundle {
    fn name(&self) -> String {
        format!("bundle {}", self.name)
    }
    fn refs(&self) -> Result<Vec<(String, Descriptor)>> {
        Ok(self.index.images.iter().map(|i| (i.reference.clone(), i.descriptor.clone())).collect())
    }
    fn has(&self, d: &Digest) -> bool {
        self.entry(d).is_some()
    }
    fn open(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        let e = self.entry(&desc.digest).ok_or_else(|| Error::Other(format!("{}: blob {} is not in the bundle", self.name, desc.digest)))?;
        if e.size != desc.size {
            return Err(Error::Other(format!("{}: blob {} has {} bytes, its descriptor says {}", self.name, desc.digest, e.size, desc.size)));
        }
        Ok(Box::new(VerifyingReader::new(self.vols.range(e.offset, e.size), desc.digest.clone(), desc.size, "bundle blob")))
    }
    fn open_unverified(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        let e = self.entry(&desc.digest).ok_or_else(|| Error::Other(format!("{}: blob {} is not in the bundle", self.name, desc.digest)))?;
        Ok(Box::new(self.vols.range(e.offset, e.size)))
    }
    fn read_at(&self, desc: &Descriptor, offset: u64, len: usize) -> Result<Vec<u8>> {
        let e = self.entry(&desc.digest).ok_or_else(|| Error::Other(format!("{}: blob {} is not in the bundle", self.name, desc.digest)))?;
        if offset.checked_add(len as u64).is_none_or(|end| end > e.size) {
            return Err(Error::Other(format!("{}: blob {} has {} bytes, cannot read {len} at {offset}", self.name, desc.digest, e.size)));
        }
        let mut v = vec![0u8; len];
        self.vols.range(e.offset + offset, len as u64).read_exact(&mut v).map_err(|err| Error::Other(format!("{}: blob {}: {err}", self.name, desc.digest)))?;
        Ok(v)
    }
    fn mapped(&self, desc: &Descriptor) -> Result<Box<dyn Mapped + '_>> {
        let e = self.entry(&desc.digest).ok_or_else(|| Error::Other(format!("{}: blob {} is not in the bundle", self.name, desc.digest)))?;
        if e.size != desc.size {
            return Err(Error::Other(format!("{}: blob {} has {} bytes, its descriptor says {}", self.name, desc.digest, e.size, desc.size)));
        }
        Ok(Box::new(self.vols.mapped(e.offset, e.size)))
    }
}

/// A bundle whose missing blobs (a delta's base) come from a store.
pub struct BundleOverStore<'a> {
    pub bundle: &'a Bundle,
    pub store: Option<&'a Store>,
}

impl Source for BundleOverStore<'_> {
    fn name(&self) -> String {
        self.bundle.name()
    }
    fn refs(&self) -> Result<Vec<(String, Descriptor)>> {
        self.bundle.refs()
    }
    fn has(&self, d: &Digest) -> bool {
        self.bundle.has(d) || self.store.is_some_and(|s| s.has(d))
    }
    fn open_unverified(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        match self.store {
            Some(s) if !self.bundle.has(&desc.digest) && s.has(&desc.digest) => s.open_unverified(desc),
            _ if self.bundle.has(&desc.digest) => self.bundle.open_unverified(desc),
            _ => self.open(desc),
        }
    }
    fn read_at(&self, desc: &Descriptor, offset: u64, len: usize) -> Result<Vec<u8>> {
        match self.store {
            Some(s) if !self.bundle.has(&desc.digest) => s.read_at(desc, offset, len),
            _ => self.bundle.read_at(desc, offset, len),
        }
    }
    fn mapped(&self, desc: &Descriptor) -> Result<Box<dyn Mapped + '_>> {
        match self.store {
            Some(s) if !self.bundle.has(&desc.digest) => s.mapped(desc),
            _ => self.bundle.mapped(desc),
        }
    }
    fn open(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        if self.bundle.has(&desc.digest) {
            return self.bundle.open(desc);
        }
        match self.store {
            Some(s) if s.has(&desc.digest) => s.open(desc),
            Some(s) => Err(Error::Other(format!(
                "{}: blob {} is neither in the bundle nor in the store {} (a delta bundle needs its base imported first)",
                self.bundle.name, desc.digest, s.root().display()
            ))),
            None => Err(Error::Other(format!("{}: blob {} is not in the bundle (a delta bundle needs its base in the store)", self.bundle.name, desc.digest))),
        }
    }
}

/// Copies a blob into `out` (positioned at its start) through mapped windows: hashed and
/// written from the same pages, one copy into the output's page cache instead of two through
/// a read buffer, and dropped from the page cache behind the writer once on disk. Checked
/// against the digest and size at the end: the caller writes into a temp name and drops it on
/// error. Returns the bytes written.
pub fn copy_verified(source: &dyn Source, desc: &Descriptor, out: &mut std::fs::File, path: &std::path::Path) -> Result<u64> {
    use std::io::Write;
    let mut h = crate::digest::Hasher::new();
    let mut at = 0u64;
    let mut drop_behind = crate::writeback::DropBehind::at(0);
    let blob = source.mapped(desc)?;
    while at < desc.size {
        if crate::cancel::requested() {
            return Err(Error::Interrupted);
        }
        let w = blob.window(at, 2 << 20)?;
        let bytes = w.as_ref();
        h.update(bytes);
        out.write_all(bytes).map_err(|e| Error::io(path, e))?;
        at += bytes.len() as u64;
        drop_behind.kick_and_drop(out, at);
    }
    h.verify(&format!("{}: blob", source.name()), &desc.digest, Some(desc.size))?;
    Ok(at)
}

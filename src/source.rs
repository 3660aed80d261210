//! What images are read from: the `Source` trait every format implements (store, bundle, a
//! bundle over the store, OCI layouts and archives, docker-archives), and its optional local
//! capability. Every blob a Source hands out is verified against its digest as it is read.
use std::io::Read;

use crate::bundle::Bundle;
use crate::digest::{Digest, VerifyingReader};
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::mapped::Mapped;
use crate::store::{PartialBlob, Store};

/// A read-only source of images and blobs: the whole required surface.
pub trait Source: Sync {
    /// Names the source in messages.
    fn name(&self) -> String;
    /// Every reference it holds, with the descriptor it points at.
    fn refs(&self) -> Result<Vec<(String, Descriptor)>>;
    /// Whether the blob is available.
    fn has(&self, d: &Digest) -> bool;
    /// The blob's bytes as a stream, verified: the stream fails before its last byte on a
    /// mismatch of digest or size, so nothing reading it can finish on wrong bytes.
    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>>;

    /// Positioned access to blobs held in local files, when the source has it (a store, a
    /// bundle, a layout on disk); `None` for streams (a registry, say).
    fn local(&self) -> Option<&dyn LocalBlobs> {
        None
    }

    /// How errors name a blob of this source (a registry names the image it comes through).
    fn what_blob(&self, desc: &Descriptor) -> String {
        format!("{}: blob {}", self.name(), desc.digest)
    }

    /// Downloading into a store's partial file, when the source is remote (a registry).
    fn remote(&self) -> Option<&dyn RemoteBlobs> {
        None
    }

    /// The blob's size when the source knows it without a descriptor (a store file's length,
    /// a bundle's index entry): for blobs named only by digest, such as the index a platform
    /// was picked from. Unverified: a read through `blob` checks it.
    fn size_of(&self, _d: &Digest) -> Option<u64> {
        None
    }

    /// A layer's tar straight from content the source holds below the layer (a version 2
    /// bundle), with its size, verified against its diff_id as it is read; None when the source
    /// holds the layer only compressed.
    fn layer_tar(&self, _desc: &Descriptor) -> Result<Option<(u64, Box<dyn Read + Send + '_>)>> {
        Ok(None)
    }

    /// A small blob read whole (manifests, configs), capped and verified.
    fn read_small(&self, desc: &Descriptor, cap: u64) -> Result<Vec<u8>> {
        if desc.size > cap {
            return Err(Error::TooLarge { what: format!("{}: blob {}", self.name(), desc.digest), limit: cap });
        }
        let mut v = Vec::with_capacity(desc.size as usize);
        self.blob(desc)?.read_to_end(&mut v).map_err(|e| Error::Other(format!("{}: blob {}: {e}", self.name(), desc.digest)))?;
        Ok(v)
    }
}

/// The descriptor of manifest or index `d`, which `source` holds but nothing names with its
/// size (the index a platform was picked from): sized by the source, read and parsed for its
/// media type. None when the source does not hold it.
pub fn unlisted_manifest(source: &dyn Source, d: &Digest, what: &str) -> Result<Option<Descriptor>> {
    let Some(size) = source.size_of(d) else { return Ok(None) };
    let probe = Descriptor { media_type: Default::default(), digest: d.clone(), size, platform: None, annotations: None };
    let m = crate::image::Manifest::parse(source.read_small(&probe, crate::limits::MANIFEST)?, None, what)?;
    Ok(Some(Descriptor { media_type: m.media_type, ..probe }))
}

/// A borrowed source is a source (so an opened one can be handed out boxed).
impl<S: Source + ?Sized> Source for &S {
    fn name(&self) -> String {
        (**self).name()
    }
    fn refs(&self) -> Result<Vec<(String, Descriptor)>> {
        (**self).refs()
    }
    fn has(&self, d: &Digest) -> bool {
        (**self).has(d)
    }
    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        (**self).blob(desc)
    }
    fn local(&self) -> Option<&dyn LocalBlobs> {
        (**self).local()
    }
    fn size_of(&self, d: &Digest) -> Option<u64> {
        (**self).size_of(d)
    }
    fn what_blob(&self, desc: &Descriptor) -> String {
        (**self).what_blob(desc)
    }
    fn remote(&self) -> Option<&dyn RemoteBlobs> {
        (**self).remote()
    }
    fn layer_tar(&self, desc: &Descriptor) -> Result<Option<(u64, Box<dyn Read + Send + '_>)>> {
        (**self).layer_tar(desc)
    }
}

/// The optional capability of a remote Source (a registry): fills a store's partial file,
/// resuming from what it holds (across cuts and runs) and retrying while bytes arrive. The
/// partial's commit checks digest and size.
pub trait RemoteBlobs: Sync {
    fn download(&self, desc: &Descriptor, part: &mut PartialBlob, progress: &(dyn Fn(u64) + Sync)) -> Result<()>;
}

/// The optional capability of a Source whose blobs are local files: reads from an offset and
/// mapped windows. What these give is NOT verified: whoever uses them checks the bytes against
/// the digest itself (a store's partial blob on commit, `copy_verified` at the end) or uses
/// them only as a hint that is checked later (a gzip trailer's size).
pub trait LocalBlobs: Sync {
    /// The blob's bytes from `offset` to its end, unverified (to resume a copy).
    fn read_from(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>>;

    /// The blob mapped window by window, where the files allow it.
    fn mapped(&self, _desc: &Descriptor) -> Result<Option<Box<dyn Mapped + '_>>> {
        Ok(None)
    }

    /// `len` bytes from `offset`, unverified.
    fn read_at(&self, desc: &Descriptor, offset: u64, len: usize) -> Result<Vec<u8>> {
        if offset.checked_add(len as u64).is_none_or(|end| end > desc.size) {
            return Err(Error::Other(format!("blob {} has {} bytes, cannot read {len} at {offset}", desc.digest, desc.size)));
        }
        let mut v = vec![0u8; len];
        self.read_from(desc, offset)?.read_exact(&mut v).map_err(|e| Error::Other(format!("blob {}: {e}", desc.digest)))?;
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
    fn size_of(&self, d: &Digest) -> Option<u64> {
        std::fs::symlink_metadata(self.blob_path(d)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }
    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        let f = self.open_blob(&desc.digest)?;
        Ok(Box::new(VerifyingReader::new(std::io::BufReader::with_capacity(1 << 20, f), desc.digest.clone(), desc.size, "store blob")))
    }
    fn local(&self) -> Option<&dyn LocalBlobs> {
        Some(self)
    }
}

impl LocalBlobs for Store {
    fn read_from(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>> {
        use std::io::{Seek, SeekFrom};
        let mut f = self.open_blob(&desc.digest)?;
        f.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(self.blob_path(&desc.digest), e))?;
        Ok(Box::new(f))
    }
    fn mapped(&self, desc: &Descriptor) -> Result<Option<Box<dyn Mapped + '_>>> {
        Ok(Some(Box::new(self.map_blob(&desc.digest, desc.size)?)))
    }
    fn read_at(&self, desc: &Descriptor, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(&self.open_blob(&desc.digest)?, &mut v, offset).map_err(|e| Error::io(self.blob_path(&desc.digest), e))?;
        Ok(v)
    }
}

impl Bundle {
    /// The entry of `desc`, checked to have the descriptor's size and an entry header in the
    /// bundle that names it.
    fn sized_entry(&self, desc: &Descriptor) -> Result<&crate::bundle::format::IndexEntry> {
        let e = self.entry(&desc.digest).ok_or_else(|| Error::Other(format!("{}: blob {} is not in the bundle", self.name, desc.digest)))?;
        if e.size != desc.size {
            return Err(Error::SizeMismatch { what: format!("{}: blob", self.name), digest: desc.digest.clone(), expected: desc.size, found: e.size });
        }
        self.check_entry_header(e).map_err(|x| Error::Other(format!("{}: blob {}: {x}", self.name, desc.digest)))?;
        Ok(e)
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
        self.holds(d)
    }
    fn size_of(&self, d: &Digest) -> Option<u64> {
        self.blob_size(d)
    }
    fn layer_tar(&self, desc: &Descriptor) -> Result<Option<(u64, Box<dyn Read + Send + '_>)>> {
        Bundle::layer_tar(self, &desc.digest).map(|o| o.map(|(n, r)| (n, r as Box<dyn Read + Send + '_>)))
    }
    fn what_blob(&self, desc: &Descriptor) -> String {
        format!("{}: blob {}", self.name, desc.digest)
    }
    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        if let Some(r) = self.rebuilt_blob(desc)? {
            return Ok(r);
        }
        let e = self.sized_entry(desc)?;
        Ok(Box::new(VerifyingReader::new(self.vols.range(e.offset, e.size), desc.digest.clone(), desc.size, format!("{}: blob {}", self.name, desc.digest))))
    }
    fn local(&self) -> Option<&dyn LocalBlobs> {
        Some(self)
    }
}

impl LocalBlobs for Bundle {
    fn read_from(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>> {
        if let Some(mut r) = self.rebuilt_blob(desc)? {
            // Rebuilt from the start; what a resumed copy already holds is skipped.
            std::io::copy(&mut (&mut r).take(offset), &mut std::io::sink()).map_err(|e| Error::Other(format!("{}: blob {}: {e}", self.name, desc.digest)))?;
            return Ok(r);
        }
        let e = self.sized_entry(desc)?;
        let offset = offset.min(e.size);
        Ok(Box::new(self.vols.range(e.offset + offset, e.size - offset)))
    }
    fn mapped(&self, desc: &Descriptor) -> Result<Option<Box<dyn Mapped + '_>>> {
        if self.recipe_entry(&desc.digest).is_some() {
            return Ok(None);
        }
        let e = self.sized_entry(desc)?;
        Ok(Some(Box::new(self.vols.mapped(e.offset, e.size))))
    }
}

/// A bundle whose missing blobs (a delta's base) come from a store.
pub struct BundleOverStore<'a> {
    pub bundle: &'a Bundle,
    pub store: Option<&'a Store>,
}

impl BundleOverStore<'_> {
    /// The source that holds `d`: the bundle first, then the store.
    fn holder(&self, d: &Digest) -> Option<&dyn LocalBlobs> {
        if self.bundle.holds(d) {
            return Some(self.bundle);
        }
        self.store.filter(|s| s.has(d)).map(|s| s as &dyn LocalBlobs)
    }
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
    fn size_of(&self, d: &Digest) -> Option<u64> {
        self.bundle.size_of(d).or_else(|| self.store.and_then(|s| s.size_of(d)))
    }
    fn what_blob(&self, desc: &Descriptor) -> String {
        self.bundle.what_blob(desc)
    }
    fn layer_tar(&self, desc: &Descriptor) -> Result<Option<(u64, Box<dyn Read + Send + '_>)>> {
        Source::layer_tar(self.bundle, desc)
    }
    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        if self.bundle.holds(&desc.digest) {
            return self.bundle.blob(desc);
        }
        match self.store {
            Some(s) if s.has(&desc.digest) => s.blob(desc),
            Some(s) => Err(Error::Other(format!(
                "{}: blob {} is neither in the bundle nor in the store {} (a delta bundle needs its base imported first)",
                self.bundle.name, desc.digest, s.root().display()
            ))),
            None => Err(Error::Other(format!("{}: blob {} is not in the bundle (a delta bundle needs its base in the store)", self.bundle.name, desc.digest))),
        }
    }
    fn local(&self) -> Option<&dyn LocalBlobs> {
        Some(self)
    }
}

impl LocalBlobs for BundleOverStore<'_> {
    fn read_from(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>> {
        match self.holder(&desc.digest) {
            Some(h) => h.read_from(desc, offset),
            None => self.blob(desc),
        }
    }
    fn mapped(&self, desc: &Descriptor) -> Result<Option<Box<dyn Mapped + '_>>> {
        match self.holder(&desc.digest) {
            Some(h) => h.mapped(desc),
            None => Ok(None),
        }
    }
    fn read_at(&self, desc: &Descriptor, offset: u64, len: usize) -> Result<Vec<u8>> {
        match self.holder(&desc.digest) {
            Some(h) => h.read_at(desc, offset, len),
            None => Err(Error::Other(format!("{}: blob {} is not in the bundle", self.bundle.name, desc.digest))),
        }
    }
}

/// Copies a blob into `out` (positioned at its start), checked against digest and size at the
/// end: the caller writes into a temp name and drops it on error. From a local source through
/// mapped windows (hashed and written from the same pages, one copy into the output's page
/// cache instead of two, dropped from the page cache behind the writer); from any other
/// through its verified stream. Returns the bytes written.
pub fn copy_verified(source: &dyn Source, desc: &Descriptor, out: &mut std::fs::File, path: &std::path::Path, progress: &dyn Fn(u64)) -> Result<u64> {
    use std::io::Write;
    let mut drop_behind = crate::writeback::DropBehind::at(0);
    let mapped = match source.local() {
        Some(l) => l.mapped(desc)?,
        None => None,
    };
    let Some(blob) = mapped else {
        let mut r = source.blob(desc)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        loop {
            if crate::cancel::requested() {
                return Err(Error::Interrupted);
            }
            let n = r.read(&mut buf).map_err(|e| Error::Other(format!("{}: blob {}: {e}", source.name(), desc.digest)))?;
            if n == 0 {
                return Ok(at);
            }
            out.write_all(&buf[..n]).map_err(|e| Error::io(path, e))?;
            at += n as u64;
            progress(n as u64);
            drop_behind.kick_and_drop(out, at);
        }
    };
    let mut h = crate::digest::Hasher::new();
    let mut at = 0u64;
    while at < desc.size {
        if crate::cancel::requested() {
            return Err(Error::Interrupted);
        }
        let w = blob.window(at, 2 << 20)?;
        let bytes = w.as_ref();
        h.update(bytes);
        out.write_all(bytes).map_err(|e| Error::io(path, e))?;
        at += bytes.len() as u64;
        progress(bytes.len() as u64);
        drop_behind.kick_and_drop(out, at);
    }
    h.verify(&format!("{}: blob", source.name()), &desc.digest, Some(desc.size))?;
    Ok(at)
}

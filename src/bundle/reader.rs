//! Reading a bundle: structure checks (magic, version, trailer, index checksum, volumes), verified
//! blob reads, `verify` (re-hash everything, check completeness) and `import` into a store.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::format::{decode_entry, decode_header, decode_trailer, Index, IndexEntry, ENTRY_HEADER_LEN, HEADER_LEN, TRAILER_LEN};
use super::format::KIND_RECIPE;
use super::rebuild::{blob_reader, read_recipe, Chunks, TarReader};
use super::volumes::VolumeSet;
use std::sync::Arc;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::image::{Descriptor, Manifest};
use crate::limits;
use crate::store::{Store, ANNOTATION_INDEX_DIGEST};

/// An opened bundle: its volumes and its checked index.
/// One image of a bundle walked: its name, every blob it needs, and the blobs found missing
/// (digest, why).
pub type ImageWalk = (String, BTreeMap<Digest, Descriptor>, Vec<(Digest, String)>);

pub struct Bundle {
    pub vols: Arc<VolumeSet>,
    pub index: Index,
    pub name: String,
    by_digest: BTreeMap<Digest, usize>,
    /// Version 2: layers rebuilt from recipes (layer digest -> recipe entry), and the chunks.
    recipes: BTreeMap<Digest, usize>,
    pub chunks: Option<Arc<Chunks>>,
}

/// A bundle's check reports as every other source's does (see `validate`).
pub use crate::validate::{Problem as BlobProblem, Report as VerifyReport};

#[derive(Debug, Serialize, Default)]
pub struct ImportReport {
    pub images: Vec<String>,
    pub blobs_imported: u64,
    pub bytes_imported: u64,
    pub blobs_present: u64,
    pub bytes_present: u64,
}

impl Bundle {
    /// Opens a bundle file or volume set and checks its structure and index (not the blobs).
    pub fn open(path: &Path) -> Result<Bundle> {
        let vols = VolumeSet::open(path)?;
        let name = vols.name.clone();
        if vols.len < HEADER_LEN + TRAILER_LEN {
            return Err(Error::Other(format!("{name}: {} bytes is too short for a bundle (truncated?)", vols.len)));
        }
        let mut h = [0u8; 64];
        vols.read_exact_at(&mut h, 0)?;
        let (id, version) = decode_header(&h, &name)?;
        let mut t = [0u8; 64];
        vols.read_exact_at(&mut t, vols.len - TRAILER_LEN)?;
        let last = if vols.volume_count() > 1 { vols.last_volume().display().to_string() } else { name.clone() };
        let trailer = match decode_trailer(&t, &last) {
            Ok(t) => t,
            Err(e) => {
                if let Some((_, false)) = vols.majority_id() {
                    let (maj, _) = vols.majority_id().unwrap();
                    let foreign: Vec<String> = vols.foreign_volumes(&maj).iter().map(|p| p.display().to_string()).collect();
                    return Err(Error::Other(format!("{} belong(s) to another bundle than the other volumes", foreign.join(", "))));
                }
                if vols.last_is_full() {
                    return Err(Error::Other(format!("{last} is full but the bundle does not end there: volume {} is missing", vols.volume_count() + 1)));
                }
                return Err(e);
            }
        };
        if trailer.index_len > limits::BUNDLE_INDEX {
            return Err(Error::TooLarge { what: format!("{name}: bundle index ({} bytes)", trailer.index_len), limit: limits::BUNDLE_INDEX });
        }
        if trailer.index_offset < HEADER_LEN || trailer.index_offset.checked_add(trailer.index_len).and_then(|v| v.checked_add(TRAILER_LEN)) != Some(vols.len) {
            return Err(Error::Other(format!("{name}: the trailer does not match the file length (truncated or corrupt)")));
        }
        let mut ib = vec![0u8; trailer.index_len as usize];
        vols.read_exact_at(&mut ib, trailer.index_offset)?;
        if Digest::of(&ib).hex() != hex::encode(trailer.index_sha256) {
            return Err(Error::Other(format!("{name}: the bundle index is corrupt (checksum mismatch)")));
        }
        let index = Index::parse(&ib, &name)?;
        let index_id = *index.bundle_id.bytes();
        let foreign = vols.foreign_volumes(&index_id);
        if !foreign.is_empty() {
            let list: Vec<String> = foreign.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::Other(format!("{} belong(s) to another bundle (this one is {})", list.join(", "), index.bundle_id.short())));
        }
        if index.version != version {
            return Err(Error::Other(format!("{name}: header and index give different format versions (corrupt)")));
        }
        if index_id != id {
            return Err(Error::Other(format!("{name}: header and index name different bundles (corrupt)")));
        }
        if index.volumes as usize != vols.volume_count() || (vols.volume_count() > 1 && vols.payload_per_volume != Some(index.volume_size)) {
            return Err(Error::Other(format!(
                "{name}: the bundle has {} volume(s) of {} bytes, found {} (a volume missing, extra or truncated?)",
                index.volumes,
                index.volume_size,
                vols.volume_count()
            )));
        }
        let mut end = HEADER_LEN;
        let mut by_digest = BTreeMap::new();
        for (i, e) in index.entries.iter().enumerate() {
            if e.offset < end + ENTRY_HEADER_LEN || e.offset.checked_add(e.size).is_none_or(|x| x > trailer.index_offset) {
                return Err(Error::Other(format!("{name}: index entry {} has a bad offset (corrupt index)", e.digest)));
            }
            end = e.offset + e.size;
            if e.kind == super::format::KIND_BLOB {
                by_digest.insert(e.digest.clone(), i);
            }
        }
        let mut recipes = BTreeMap::new();
        for (i, e) in index.entries.iter().enumerate().filter(|(_, e)| e.kind == KIND_RECIPE) {
            let layer = &e.recipe.as_ref().expect("checked").layer;
            if by_digest.contains_key(layer) || recipes.insert(layer.clone(), i).is_some() {
                return Err(Error::Other(format!("{name}: layer {layer} is in the bundle twice (corrupt index)")));
            }
        }
        let vols = Arc::new(vols);
        let chunks = match index.version {
            super::format::VERSION_CHUNKED => Some(Arc::new(Chunks::from_index(vols.clone(), &index, &name)?)),
            _ => None,
        };
        Ok(Bundle { vols, index, name, by_digest, recipes, chunks })
    }

    /// The entry carrying blob `d` whole.
    pub fn entry(&self, d: &Digest) -> Option<&IndexEntry> {
        self.by_digest.get(d).map(|&i| &self.index.entries[i])
    }

    /// The recipe entry that rebuilds layer `d` (version 2).
    pub fn recipe_entry(&self, d: &Digest) -> Option<&IndexEntry> {
        self.recipes.get(d).map(|&i| &self.index.entries[i])
    }

    /// Whether the bundle holds blob `d`, whole or as a recipe.
    pub fn holds(&self, d: &Digest) -> bool {
        self.by_digest.contains_key(d) || self.recipes.contains_key(d)
    }

    /// The size of blob `d` if the bundle holds it.
    pub fn blob_size(&self, d: &Digest) -> Option<u64> {
        self.entry(d).map(|e| e.size).or_else(|| self.recipe_entry(d).and_then(|e| e.recipe.as_ref()).map(|r| r.layer_size))
    }

    /// The recipe of layer `d`, read and checked.
    pub fn recipe(&self, d: &Digest) -> Result<Option<Arc<crate::chunk::recipe::Recipe>>> {
        self.recipe_entry(d).map(|e| read_recipe(&self.vols, e, &self.name).map(Arc::new)).transpose()
    }

    /// Layer `d` rebuilt from its recipe, byte for byte, as a stream verified against the
    /// layer's digest and size.
    pub fn rebuilt_blob(&self, desc: &Descriptor) -> Result<Option<Box<dyn Read + Send + 'static>>> {
        let Some(r) = self.recipe(&desc.digest)? else { return Ok(None) };
        if r.layer_size != desc.size {
            return Err(Error::SizeMismatch { what: format!("{}: blob", self.name), digest: desc.digest.clone(), expected: desc.size, found: r.layer_size });
        }
        let what = format!("{}: layer {}", self.name, desc.digest);
        let chunks = self.chunks.clone().expect("a version 2 bundle has a chunk table");
        let inner = blob_reader(r, chunks, what.clone())?;
        Ok(Some(Box::new(crate::digest::VerifyingReader::new(inner, desc.digest.clone(), desc.size, what))))
    }

    /// Layer `d`'s tar straight from its recipe and chunks (no compression), verified against
    /// its diff_id; with the tar's size.
    pub fn layer_tar(&self, d: &Digest) -> Result<Option<(u64, Box<dyn Read + Send + 'static>)>> {
        let Some(r) = self.recipe(d)? else { return Ok(None) };
        let chunks = self.chunks.clone().expect("a version 2 bundle has a chunk table");
        let (diff_id, size) = (r.diff_id.clone(), r.tar_size);
        let what = format!("{}: layer {} (its tar)", self.name, d);
        Ok(Some((size, Box::new(crate::digest::VerifyingReader::new(std::io::BufReader::with_capacity(1 << 20, TarReader::new(r, chunks)), diff_id, size, what)))))
    }

    /// Reads a small blob (manifest, config) from the bundle, capped and verified.
    pub fn read_small(&self, d: &Digest, cap: u64) -> Result<Vec<u8>> {
        let e = self.entry(d).ok_or_else(|| Error::Other(format!("{}: blob {d} is not in the bundle", self.name)))?;
        if e.size > cap {
            return Err(Error::TooLarge { what: format!("{}: blob {d}", self.name), limit: cap });
        }
        let mut v = vec![0u8; e.size as usize];
        self.vols.read_exact_at(&mut v, e.offset)?;
        if Digest::of(&v) != *d {
            return Err(Error::DigestMismatch { what: format!("{}: blob", self.name), expected: d.clone(), found: Digest::of(&v) });
        }
        Ok(v)
    }

    /// A manifest from the bundle, or from `store` for what a delta leaves to its base.
    fn manifest(&self, d: &Descriptor, store: Option<&Store>, what: &str) -> Result<Manifest> {
        let bytes = match (self.entry(&d.digest), store) {
            (Some(_), _) => self.read_small(&d.digest, limits::MANIFEST)?,
            (None, Some(s)) if s.has_blob(&d.digest, Some(d.size)) => s.read_blob_capped(&d.digest, limits::MANIFEST)?,
            _ => return Err(Error::Other(format!("manifest {} is not in the bundle", d.digest))),
        };
        Manifest::parse(bytes, Some(&d.media_type), what)
    }

    /// For each image: every blob it needs, and the problems met while walking it (blobs that
    /// are neither in the bundle nor, for a delta, in `store`).
    pub fn walk_images(&self, store: Option<&Store>) -> Vec<ImageWalk> {
        let mut out = Vec::new();
        for img in &self.index.images {
            let name = &img.reference;
            let mut blobs = BTreeMap::new();
            let mut missing = Vec::new();
            if let Some(idx) = img.descriptor.annotations.as_ref().and_then(|a| a.get(ANNOTATION_INDEX_DIGEST)).and_then(|s| s.parse::<Digest>().ok()) {
                match self.entry(&idx) {
                    Some(e) => {
                        blobs.insert(idx.clone(), Descriptor { media_type: e.media_type.clone(), digest: idx, size: e.size, platform: None, annotations: None });
                    }
                    None if store.is_some_and(|s| s.has_blob(&idx, None)) => {}
                    None => missing.push((idx, "index not in the bundle".to_string())),
                }
            }
            let _ = crate::graph::walk::<std::convert::Infallible>(&img.descriptor, |d| {
                if blobs.contains_key(&d.digest) {
                    return Ok(None);
                }
                let here = self.holds(&d.digest) || store.is_some_and(|s| s.has_blob(&d.digest, Some(d.size)));
                if !here {
                    let why = if self.index.requires.iter().any(|r| r.digest == d.digest) {
                        let base = self.index.base.as_ref().map(|b| format!("{} {}", b.kind, &b.id[..16.min(b.id.len())])).unwrap_or_else(|| "?".into());
                        match store {
                            Some(s) => format!("left to the delta's base ({base}), but not in the store {}: import the base first", s.root().display()),
                            None => format!("left to the delta's base ({base}); no store to find it in: import the base first"),
                        }
                    } else {
                        "not in the bundle".to_string()
                    };
                    missing.push((d.digest.clone(), why));
                    return Ok(None);
                }
                blobs.insert(d.digest.clone(), d.clone());
                if !crate::graph::is_node(d) {
                    return Ok(None);
                }
                Ok(self.manifest(d, store, name).map_err(|e| missing.push((d.digest.clone(), e.to_string()))).ok())
            });
            out.push((name.clone(), blobs, missing));
        }
        out
    }

    fn users(walk: &[ImageWalk]) -> BTreeMap<Digest, Vec<String>> {
        let mut users: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for (name, blobs, missing) in walk {
            for d in blobs.keys().chain(missing.iter().map(|(d, _)| d)) {
                users.entry(d.clone()).or_default().push(name.clone());
            }
        }
        users
    }

    /// Checks an entry's inline header against the index.
    pub(crate) fn check_entry_header(&self, e: &IndexEntry) -> Result<(), String> {
        let mut eh = [0u8; 48];
        self.vols.read_exact_at(&mut eh, e.offset - ENTRY_HEADER_LEN).map_err(|x| x.to_string())?;
        match decode_entry(&eh, &self.name) {
            Ok((_, len, d)) if len == e.size && d == e.digest => Ok(()),
            Ok(_) => Err("entry header does not match the index (corrupt bundle)".into()),
            Err(x) => Err(x.to_string()),
        }
    }

    /// Checks one entry: its inline header and the sha256 of its data.
    fn check_entry(&self, e: &IndexEntry, buf: &mut [u8]) -> Result<(), String> {
        self.check_entry_header(e)?;
        // A chunk pack is read once: hashed, decoded and every chunk checked against its name.
        if let (Some(p), Some(c)) = (&e.pack, &self.chunks) {
            return c.check_pack(e, p);
        }
        let mut r = self.vols.range(e.offset, e.size);
        let mut h = Hasher::new();
        loop {
            let n = r.read(buf).map_err(|x| x.to_string())?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let found = h.finish();
        if found != e.digest {
            return Err(format!("content hashes to {found}"));
        }
        Ok(())
    }

    /// Re-hashes every blob (in parallel) and checks every image is complete; for a delta,
    /// blobs left to the base must be in `store`.
    pub fn verify(&self, store: Option<&Store>) -> VerifyReport {
        let mut report = VerifyReport { images: self.index.images.iter().map(|i| i.reference.clone()).collect(), ..Default::default() };
        let walk = self.walk_images(store);
        let users = Self::users(&walk);
        let mut order: Vec<&IndexEntry> = self.index.entries.iter().collect();
        order.sort_by_key(|e| std::cmp::Reverse(e.size));
        let checked = crate::pool::map_all(&order, |e, buf| self.check_entry(e, buf));
        let mut bad: Vec<(Digest, String)> = order.iter().zip(checked).filter_map(|(e, r)| r.err().map(|x| (e.digest.clone(), x))).collect();
        report.blobs_checked = self.index.entries.len() as u64;
        report.bytes_checked = self.index.entries.iter().map(|e| e.size).sum();
        bad.extend(self.check_recipes(store));
        bad.sort();
        for (d, detail) in bad {
            report.problems.push(BlobProblem { digest: d.to_string(), images: users.get(&d).cloned().unwrap_or_default(), detail });
        }
        for (_, _, missing) in &walk {
            for (d, why) in missing {
                if !report.problems.iter().any(|p| p.digest == d.to_string()) {
                    report.problems.push(BlobProblem { digest: d.to_string(), images: users.get(d).cloned().unwrap_or_default(), detail: why.clone() });
                }
            }
        }
        report
    }

    /// Version 2: every recipe decodes, rebuilds the layer the index says, and names only
    /// chunks the bundle carries or (a delta) its base layers in `store` can give.
    fn check_recipes(&self, store: Option<&Store>) -> Vec<(Digest, String)> {
        let Some(chunks) = &self.chunks else { return Vec::new() };
        let base_ok = !self.index.base_layers.is_empty() && store.is_some_and(|s| self.index.base_layers.iter().all(|r| s.has_blob(&r.digest, Some(r.size))));
        let mut bad = Vec::new();
        for layer in self.recipes.keys() {
            match self.recipe(layer) {
                Err(e) => bad.push((layer.clone(), e.to_string())),
                Ok(Some(r)) => {
                    let missing = r.chunks().filter(|(s, _)| !chunks.has(s)).count();
                    if missing > 0 && !base_ok {
                        let why = if self.index.base_layers.is_empty() { "not in the bundle (corrupt bundle)".to_string() } else { format!("left to the delta's base layers ({}), which the store lacks: import the base first", self.index.base_layers.len()) };
                        bad.push((layer.clone(), format!("{missing} chunk(s) of its recipe are {why}")));
                    }
                }
                Ok(None) => {}
            }
        }
        bad
    }

    /// Copies every blob into `store`, verifying each, then points the references at them.
    /// Blobs already stored are skipped; an interrupted import resumes.
    pub fn import(&self, store: &Store, progress: bool) -> Result<ImportReport> {
        let _guard = store.use_guard()?;
        // A delta needs its base first: check before copying anything.
        let missing: Vec<&super::format::Required> = self.index.requires.iter().filter(|r| !store.has_blob(&r.digest, Some(r.size))).collect();
        if let Some(first) = missing.first() {
            let walk = self.walk_images(None);
            let users = Self::users(&walk);
            let imgs = users.get(&first.digest).map(|v| v.join(", ")).unwrap_or_default();
            let base = self.index.base.as_ref().map(|b| format!("{} {}", b.kind, &b.id[..16.min(b.id.len())])).unwrap_or_else(|| "?".into());
            return Err(Error::Other(format!(
                "{}: delta bundle needs blob {} (for {imgs}) which the store lacks; {} of {} base blobs missing: import its base ({base}) first",
                self.name,
                first.digest,
                missing.len(),
                self.index.requires.len()
            )));
        }
        // A delta's chunks left to its base: cut from the store's own layers first.
        super::base::attach(self, store)?;
        // One copy from the bundle (a delta's base read from the store) into the store.
        let source = crate::source::BundleOverStore { bundle: self, store: Some(store) };
        let refs: Vec<(String, Descriptor)> = self.index.images.iter().map(|i| (i.reference.clone(), i.descriptor.clone())).collect();
        let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let c = store.import_from(&source, &refs, jobs, progress)?;
        // The recipes go into the analysis cache: a later delta against these layers finds its
        // chunks here without cutting them again, and a re-bundle skips their analysis.
        for layer in self.recipes.keys() {
            if let Ok(Some(r)) = self.recipe(layer) {
                let desc = Descriptor { media_type: Default::default(), digest: layer.clone(), size: r.layer_size, platform: None, annotations: None };
                let producer = self.recipe_entry(layer).and_then(|e| e.recipe.as_ref()).map(|i| i.producer.clone()).unwrap_or_default();
                let _ = (crate::chunk::analyze::Cache { store }).put(&desc, &crate::chunk::analyze::Analyzed::Recipe { recipe: (*r).clone(), producer });
            }
        }
        Ok(ImportReport { images: refs.into_iter().map(|(n, _)| n).collect(), blobs_imported: c.blobs_imported, bytes_imported: c.bytes_imported, blobs_present: c.blobs_present, bytes_present: c.bytes_present })
    }
}

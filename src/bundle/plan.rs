//! Planning a bundle from any `Source` (the store, an archive, a layout): which images, which
//! blobs once each, in what order, what a delta leaves to its base — and from that, the exact index and size before a byte is written.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::Digest as _;

use super::format::{Base, Index, IndexEntry, IndexImage, Required, ENTRY_HEADER_LEN, HEADER_LEN, KIND_BLOB, VERSION, VOLUME_HEADER_LEN};
use crate::digest::{BundleId, Digest};
use crate::error::{Error, Result};
use crate::image::{is_index_type, is_manifest_type, Descriptor, Manifest};
use crate::limits;
use crate::source::{unlisted_manifest, Source};
use crate::store::{picked_from, ANNOTATION_INDEX_DIGEST};

/// What a delta bundle may leave out: blobs the other side already holds.
#[derive(Debug, Clone)]
pub struct BaseSet {
    pub base: Base,
    pub digests: BTreeSet<Digest>,
}

/// The blobs one image needs, with their role.
#[derive(Debug, Clone)]
pub struct ImageBlobs {
    pub image: IndexImage,
    /// Every blob the image reaches (manifests, configs, layers), each once.
    pub blobs: BTreeMap<Digest, Descriptor>,
}

#[derive(Debug)]
pub struct BundlePlan {
    pub images: Vec<ImageBlobs>,
    pub index: Index,
    pub bundle_id: BundleId,
    /// Total bytes of the logical stream (without volume headers).
    pub stream_len: u64,
    /// Payload bytes per volume, if split.
    pub volume_payload: Option<u64>,
}

/// Walks one image of `source`, collecting every blob it needs.
pub fn image_blobs(source: &dyn Source, name: &str, desc: &Descriptor) -> Result<BTreeMap<Digest, Descriptor>> {
    let missing = |d: &Digest| Error::Other(format!("{name}: blob {d} is missing from the {} (fetch it again, or run store fsck)", source.name()));
    let mut out = BTreeMap::new();
    if let Some(d) = picked_from(desc)? {
        // The index one platform was picked from travels along (not its other children).
        out.insert(d.clone(), unlisted_manifest(source, &d, name)?.ok_or_else(|| missing(&d))?);
    }
    crate::graph::walk(desc, |d| {
        if !source.has(&d.digest) || source.size_of(&d.digest).is_some_and(|n| n != d.size) {
            return Err(missing(&d.digest));
        }
        out.insert(d.digest.clone(), d.bare());
        crate::graph::is_node(d).then(|| Manifest::parse(source.read_small(d, limits::MANIFEST)?, Some(&d.media_type), name)).transpose()
    })?;
    Ok(out)
}

/// An image's descriptor as the bundle records it, whatever source it came from: what it
/// points at (media type, digest, size, platform) and the index its platform was picked from;
/// not the name annotations a store or layout keeps beside it (the reference says the name).
/// So the same images give the same bundle from a store, a layout or another bundle.
fn canonical(d: &Descriptor) -> Descriptor {
    let picked = d.annotations.as_ref().and_then(|a| a.get(ANNOTATION_INDEX_DIGEST)).map(|v| [(ANNOTATION_INDEX_DIGEST.to_string(), v.clone())].into_iter().collect());
    Descriptor { media_type: d.media_type.clone(), digest: d.digest.clone(), size: d.size, platform: d.platform.clone(), annotations: picked }
}

/// Order of blobs in a bundle: content (configs, layers), then manifests, then indexes; each
/// group by digest.
fn rank(d: &Descriptor) -> u8 {
    if is_index_type(&d.media_type) {
        2
    } else if is_manifest_type(&d.media_type) {
        1
    } else {
        0
    }
}

/// Plans a bundle of `refs` (full reference names in `source`). `split_size` is the size of
/// each volume file, if any.
pub fn plan(source: &dyn Source, refs: &[String], base: Option<&BaseSet>, split_size: Option<u64>) -> Result<BundlePlan> {
    let stored: BTreeMap<String, Descriptor> = source.refs()?.into_iter().collect();
    let missing: Vec<&String> = refs.iter().filter(|r| !stored.contains_key(*r)).collect();
    if !missing.is_empty() {
        let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        return Err(Error::Other(format!("not in the {}: {} (fetch them first, or pass --fetch)", source.name(), list.join(", "))));
    }
    let mut names: Vec<&String> = refs.iter().collect();
    names.sort();
    names.dedup();
    let mut images = Vec::new();
    let mut all: BTreeMap<Digest, Descriptor> = BTreeMap::new();
    for name in names {
        let desc = canonical(&stored[name]);
        let blobs = image_blobs(source, name, &desc)?;
        for (d, b) in &blobs {
            all.entry(d.clone()).or_insert_with(|| b.clone());
        }
        images.push(ImageBlobs { image: IndexImage { reference: name.clone(), descriptor: desc }, blobs });
    }
    let (carried, required): (Vec<Descriptor>, Vec<Descriptor>) = all.into_values().partition(|d| base.is_none_or(|b| !b.digests.contains(&d.digest)));
    let mut carried = carried;
    carried.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.digest.cmp(&b.digest)));

    // The id covers what the bundle means: images, carried blobs, base.
    let mut h = sha2::Sha256::new();
    let id_doc = serde_json::json!({
        "images": images.iter().map(|i| &i.image).collect::<Vec<_>>(),
        "carried": carried.iter().map(|d| d.digest.to_string()).collect::<Vec<_>>(),
        "base": base.map(|b| &b.base),
    });
    h.update(serde_json::to_vec(&id_doc).expect("json"));
    let bundle_id = BundleId(h.finalize().into());

    let mut offset = HEADER_LEN;
    let mut entries = Vec::new();
    for d in &carried {
        offset += ENTRY_HEADER_LEN;
        entries.push(IndexEntry { kind: KIND_BLOB, digest: d.digest.clone(), size: d.size, offset, media_type: d.media_type.clone(), pack: None, recipe: None });
        offset += d.size;
    }
    let volume_payload = split_size.map(|s| s - VOLUME_HEADER_LEN);
    let mut index = Index {
        format: "ocibundle".into(),
        version: VERSION,
        bundle_id,
        images: images.iter().map(|i| i.image.clone()).collect(),
        entries,
        requires: required.iter().map(|d| Required { digest: d.digest.clone(), size: d.size }).collect(),
        base: base.map(|b| b.base.clone()),
        volume_size: volume_payload.unwrap_or(0),
        volumes: 1,
        raw: Vec::new(),
        base_layers: Vec::new(),
    };
    let stream_len = index.settle_volumes(offset, volume_payload);
    Ok(BundlePlan { images, index, bundle_id, stream_len, volume_payload })
}

impl BundlePlan {
    /// The exact number of bytes the bundle will occupy (all volumes together).
    pub fn file_size(&self) -> u64 {
        match self.volume_payload {
            Some(_) => self.stream_len + self.index.volumes as u64 * VOLUME_HEADER_LEN,
            None => self.stream_len,
        }
    }

    /// Per-image and overall sharing figures.
    pub fn size_report(&self) -> SizeReport {
        let mut users: BTreeMap<&Digest, usize> = BTreeMap::new();
        for i in &self.images {
            for d in i.blobs.keys() {
                *users.entry(d).or_default() += 1;
            }
        }
        let carried: BTreeSet<&Digest> = self.index.entries.iter().map(|e| &e.digest).collect();
        let images = self
            .images
            .iter()
            .map(|i| {
                let total: u64 = i.blobs.values().map(|d| d.size).sum();
                let unique: u64 = i.blobs.values().filter(|d| users[&d.digest] == 1).map(|d| d.size).sum();
                let in_bundle: u64 = i.blobs.values().filter(|d| carried.contains(&d.digest)).map(|d| d.size).sum();
                ImageSize { reference: i.image.reference.clone(), total_bytes: total, unique_bytes: unique, shared_bytes: total - unique, carried_bytes: in_bundle }
            })
            .collect::<Vec<_>>();
        SizeReport {
            bundle_bytes: self.file_size(),
            volumes: self.index.volumes,
            sum_per_image_bytes: images.iter().map(|i| i.total_bytes).sum(),
            dedup_bytes: self.index.entries.iter().map(|e| e.size).sum::<u64>() + self.index.requires.iter().map(|r| r.size).sum::<u64>(),
            carried_bytes: self.index.entries.iter().map(|e| e.size).sum(),
            carried_blobs: self.index.entries.len() as u64,
            required_blobs: self.index.requires.len() as u64,
            images,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ImageSize {
    pub reference: String,
    /// Every blob the image needs.
    pub total_bytes: u64,
    /// Blobs no other image in the bundle needs.
    pub unique_bytes: u64,
    /// Blobs it shares with at least one other image.
    pub shared_bytes: u64,
    /// Its blobs that the bundle carries (less than total for a delta).
    pub carried_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct SizeReport {
    /// Exact size of the bundle file (all volumes together).
    pub bundle_bytes: u64,
    pub volumes: u32,
    /// What one archive per image would hold.
    pub sum_per_image_bytes: u64,
    /// Every needed blob once.
    pub dedup_bytes: u64,
    /// Blob bytes the bundle carries (dedup minus what a delta's base holds).
    pub carried_bytes: u64,
    pub carried_blobs: u64,
    pub required_blobs: u64,
    pub images: Vec<ImageSize>,
}

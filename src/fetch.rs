//! `fetch`: plan (resolve references, pick platforms, read the manifests, list the blobs) then
//! execute: one copy from the registry (as a `Source`) into the store (as a `Sink`).
use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{is_index_type, ConfigInfo, Descriptor, Manifest, ManifestKind};
use crate::limits;
use crate::media::MediaType;
use crate::copy::{self, CopyOptions};
use crate::reference::{Platform, Reference};
use crate::registry::source::RegistrySource;
use crate::registry::Registry;
use crate::store::{Store, ANNOTATION_INDEX_DIGEST};

/// Which images of an index to keep.
#[derive(Debug, Clone)]
pub enum PlatformChoice {
    One(Platform),
    All,
}

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub platform: PlatformChoice,
    pub jobs: usize,
    pub progress: bool,
    /// Which referrers (signatures, SBOMs, attestations) to fetch with each image.
    pub referrers: crate::referrers::Filter,
}

/// One image to fetch: what its reference resolved to.
#[derive(Debug)]
pub struct PlannedImage {
    pub reference: Reference,
    /// What `index.json` will point at (the index with --all-platforms, else one manifest).
    pub entry: Descriptor,
    /// The index the platform was picked from, if any (stored, not pointed at).
    pub picked_from: Option<Manifest>,
    /// Manifests to store: image manifests, then the index when it is the entry.
    pub manifests: Vec<Manifest>,
    /// What refers to it (and to its platforms and index), stored as references of their own.
    pub referrers: crate::referrers::Discovered,
}

#[derive(Debug)]
pub struct FetchPlan {
    pub images: Vec<PlannedImage>,
    /// Unique config and layer blobs, each with the reference to download it through.
    pub blobs: BTreeMap<Digest, (Descriptor, Reference)>,
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct Counts {
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    pub blobs_present: u64,
    pub bytes_present: u64,
}

#[derive(Debug, Serialize)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    pub media_type: MediaType,
}

#[derive(Debug, Serialize)]
pub struct ManifestReport {
    pub digest: Digest,
    pub media_type: MediaType,
    pub platform: String,
    pub config: BlobInfo,
    pub layers: Vec<BlobInfo>,
}

#[derive(Debug, Serialize)]
pub struct ImageReport {
    pub reference: String,
    pub digest: Digest,
    pub media_type: MediaType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    pub manifests: Vec<ManifestReport>,
    /// The referrers fetched with it: each with the reference that carries it.
    pub referrers: Vec<crate::referrers::Listed>,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Serialize)]
pub struct FetchReport {
    pub images: Vec<ImageReport>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Attempts retried in the run (any request: pings, manifests, blobs).
    pub retries: u64,
    /// Bytes not downloaded again because a download resumed with Range.
    pub bytes_resumed: u64,
}

fn info(d: &Descriptor) -> BlobInfo {
    BlobInfo { digest: d.digest.clone(), size: d.size, media_type: d.media_type.clone() }
}

/// A manifest by digest: from the store when it is there (it was verified on the way in),
/// else from the registry.
fn manifest_by_digest(reg: &Registry, store: &Store, r: &Reference, desc: &Descriptor) -> Result<Manifest> {
    let what = format!("{r}: manifest {}", desc.digest);
    let m = if store.has_blob(&desc.digest, Some(desc.size)) {
        Manifest::parse(store.read_blob_capped(&desc.digest, limits::MANIFEST)?, Some(&desc.media_type), &what)?
    } else {
        reg.manifest(r, &desc.digest.to_string())?
    };
    if m.bytes.len() as u64 != desc.size {
        return Err(Error::SizeMismatch { what: format!("{r}: manifest"), digest: desc.digest.clone(), expected: desc.size, found: m.bytes.len() as u64 });
    }
    Ok(m)
}

/// Resolves every reference and lists what must be in the store afterwards.
pub fn plan(reg: &Registry, store: &Store, refs: &[Reference], opts: &FetchOptions) -> Result<FetchPlan> {
    let mut images = Vec::new();
    let mut blobs = BTreeMap::new();
    for r in refs {
        let top = match &r.digest {
            Some(d) if store.has_blob(d, None) => {
                Manifest::parse(store.read_blob_capped(d, limits::MANIFEST)?, None, &r.to_string())?
            }
            _ => reg.manifest(r, &r.manifest_ref())?,
        };
        let planned = match &top.kind {
            ManifestKind::Image(_) => PlannedImage { reference: r.clone(), entry: top.descriptor(), picked_from: None, manifests: vec![top], referrers: Default::default() },
            ManifestKind::Index(children) => match &opts.platform {
                PlatformChoice::All => {
                    let mut manifests = Vec::new();
                    for c in children {
                        if is_index_type(&c.media_type) {
                            return Err(Error::UnsupportedMediaType { what: format!("{r}: nested index {}", c.digest), media_type: c.media_type.to_string() });
                        }
                        manifests.push(manifest_by_digest(reg, store, r, c)?);
                    }
                    let entry = top.descriptor();
                    manifests.push(top);
                    PlannedImage { reference: r.clone(), entry, picked_from: None, manifests, referrers: Default::default() }
                }
                PlatformChoice::One(want) => {
                    let Some(c) = crate::graph::pick_platform(children, want) else {
                        let have = crate::graph::platforms(children);
                        return Err(Error::Other(format!("{r}: no {want} image in its index (it has: {}); use --platform or --all-platforms", have.join(", "))));
                    };
                    let m = manifest_by_digest(reg, store, r, c)?;
                    let mut entry = c.clone();
                    entry.annotations.get_or_insert_with(Default::default).insert(ANNOTATION_INDEX_DIGEST.to_string(), top.digest.to_string());
                    PlannedImage { reference: r.clone(), entry, picked_from: Some(top), manifests: vec![m], referrers: Default::default() }
                }
            },
        };
        for m in &planned.manifests {
            if let ManifestKind::Image(im) = &m.kind {
                for d in std::iter::once(&im.config).chain(&im.layers) {
                    blobs.entry(d.digest.clone()).or_insert_with(|| (d.clone(), r.clone()));
                }
            }
        }
        images.push(planned);
    }
    // What refers to each image, each platform it keeps and the index it came from.
    if opts.referrers != crate::referrers::Filter::None {
        let asked: Vec<(Reference, Vec<Digest>)> = images.iter().map(|img| (img.reference.clone(), subjects(img))).collect();
        for (img, d) in images.iter_mut().zip(crate::referrers::discover_each(reg, &asked, &opts.referrers, opts.jobs)) {
            img.referrers = d?;
        }
        for img in &images {
            add_referrer_blobs(&mut blobs, img);
        }
    }
    Ok(FetchPlan { images, blobs })
}

/// The manifests whose referrers go with `img`: each it keeps, and the index it was picked from.
pub fn subjects(img: &PlannedImage) -> Vec<Digest> {
    img.manifests.iter().chain(img.picked_from.iter()).map(|m| m.digest.clone()).collect()
}

/// Lists the content blobs of `img`'s referrers in `blobs`, each to be downloaded through it.
pub fn add_referrer_blobs(blobs: &mut BTreeMap<Digest, (Descriptor, Reference)>, img: &PlannedImage) {
    for b in &img.referrers.blobs {
        blobs.entry(b.digest.clone()).or_insert_with(|| (b.clone(), img.reference.clone()));
    }
}

/// One copy from the registry into the store: what the store lacks is downloaded (largest
/// first, `jobs` at a time, resumed where a partial stands), then manifests and references.
/// A failed blob costs only the images that need it; the others are committed. Returns the
/// per-image report.
pub fn execute(reg: &Registry, store: &Store, plan: FetchPlan, opts: &FetchOptions) -> Result<FetchReport> {
    let mut manifests = BTreeMap::new();
    for img in &plan.images {
        for m in img.manifests.iter().chain(img.picked_from.iter()).chain(&img.referrers.manifests) {
            manifests.insert(m.digest.clone(), m.bytes.clone());
        }
    }
    let through = plan.blobs.iter().map(|(d, (_, r))| (d.clone(), r.clone())).collect();
    // Images first, then their referrers' references (subjects before what refers to them).
    let mut refs: Vec<(String, Descriptor)> = plan.images.iter().map(|i| (i.reference.to_string(), i.entry.clone())).collect();
    for img in &plan.images {
        for (r, d) in &img.referrers.refs {
            if !refs.iter().any(|(n, _)| *n == r.to_string()) {
                refs.push((r.to_string(), d.clone()));
            }
        }
    }
    let source = RegistrySource::new(reg, refs.clone(), manifests, through);
    let copy_plan = copy::plan(&source, &refs)?;
    let done = copy::execute(&source, store.sink()?, &copy_plan, &CopyOptions { jobs: opts.jobs, progress: opts.progress, label: "fetch", keep_going: true })?;

    let mut reports = Vec::new();
    let mut counted: HashSet<Digest> = HashSet::new();
    let mut totals = Counts::default();
    for img in &plan.images {
        if !done.committed(&img.reference.to_string()) {
            continue;
        }
        let carried: Vec<(String, Descriptor)> = img.referrers.refs.iter().filter(|(r, _)| done.committed(&r.to_string())).map(|(r, d)| (r.to_string(), d.clone())).collect();
        let referrers = crate::referrers::list(&source, &carried)?;
        let mut counts = Counts::default();
        let mut manifests = Vec::new();
        for m in &img.manifests {
            let ManifestKind::Image(im) = &m.kind else { continue };
            for d in std::iter::once(&im.config).chain(&im.layers) {
                if done.moved.contains(&d.digest) && counted.insert(d.digest.clone()) {
                    counts.blobs_fetched += 1;
                    counts.bytes_fetched += d.size;
                } else {
                    counts.blobs_present += 1;
                    counts.bytes_present += d.size;
                }
            }
            let platform = match platform_of(img, m) {
                Some(p) => p.to_string(),
                // An artifact's config is not an image's (any type, any size): never parsed.
                None if !im.config.media_type.is_config() => "unknown".to_string(),
                None => {
                    let cfg = store.read_blob_capped(&im.config.digest, limits::CONFIG)?;
                    let ci: ConfigInfo = serde_json::from_slice(&cfg).unwrap_or_default();
                    if ci.os.is_empty() { "unknown".to_string() } else { ci.platform().to_string() }
                }
            };
            manifests.push(ManifestReport {
                digest: m.digest.clone(),
                media_type: m.media_type.clone(),
                platform,
                config: info(&im.config),
                layers: im.layers.iter().map(info).collect(),
            });
        }
        totals.blobs_fetched += counts.blobs_fetched;
        totals.bytes_fetched += counts.bytes_fetched;
        totals.blobs_present += counts.blobs_present;
        totals.bytes_present += counts.bytes_present;
        reports.push(ImageReport {
            reference: img.reference.to_string(),
            digest: img.entry.digest.clone(),
            media_type: img.entry.media_type.clone(),
            index_digest: img.picked_from.as_ref().map(|m| m.digest.clone()),
            manifests,
            referrers,
            counts,
        });
    }
    let (retries, bytes_resumed) = (reg.retries(), reg.bytes_resumed());
    done.into_result(refs.len(), "stored", "run fetch again")?;
    Ok(FetchReport { images: reports, counts: totals, retries, bytes_resumed })
}

/// The platform an index gave a manifest, if it came from one.
fn platform_of(img: &PlannedImage, m: &Manifest) -> Option<Platform> {
    if img.picked_from.is_some() {
        return img.entry.platform.clone().filter(|p| !p.os.is_empty());
    }
    img.manifests.iter().find_map(|idx| match &idx.kind {
        ManifestKind::Index(children) => children.iter().find(|c| c.digest == m.digest).and_then(|c| c.platform.clone()),
        _ => None,
    })
}

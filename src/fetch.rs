//! `fetch`: plan (resolve references, pick platforms, list the blobs) then execute (download the
//! missing blobs in parallel, verified, then commit manifests and references to the store).
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{is_index_type, ConfigInfo, Descriptor, Manifest, ManifestKind};
use crate::limits;
use crate::progress::Progress;
use crate::reference::{Platform, Reference};
use crate::registry::Registry;
use crate::store::{PartialBlob, Store, ANNOTATION_INDEX_DIGEST};

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
    pub media_type: String,
}

#[derive(Debug, Serialize)]
pub struct ManifestReport {
    pub digest: Digest,
    pub media_type: String,
    pub platform: String,
    pub config: BlobInfo,
    pub layers: Vec<BlobInfo>,
}

#[derive(Debug, Serialize)]
pub struct ImageReport {
    pub reference: String,
    pub digest: Digest,
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    pub manifests: Vec<ManifestReport>,
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
            ManifestKind::Image(_) => PlannedImage { reference: r.clone(), entry: top.descriptor(), picked_from: None, manifests: vec![top] },
            ManifestKind::Index(children) => match &opts.platform {
                PlatformChoice::All => {
                    let mut manifests = Vec::new();
                    for c in children {
                        if is_index_type(&c.media_type) {
                            return Err(Error::UnsupportedMediaType { what: format!("{r}: nested index {}", c.digest), media_type: c.media_type.clone() });
                        }
                        manifests.push(manifest_by_digest(reg, store, r, c)?);
                    }
                    let entry = top.descriptor();
                    manifests.push(top);
                    PlannedImage { reference: r.clone(), entry, picked_from: None, manifests }
                }
                PlatformChoice::One(want) => {
                    let Some(c) = crate::graph::pick_platform(children, want) else {
                        let have = crate::graph::platforms(children);
                        return Err(Error::Other(format!("{r}: no {want} image in its index (it has: {}); use --platform or --all-platforms", have.join(", "))));
                    };
                    let m = manifest_by_digest(reg, store, r, c)?;
                    let mut entry = c.clone();
                    entry.annotations.get_or_insert_with(Default::default).insert(ANNOTATION_INDEX_DIGEST.to_string(), top.digest.to_string());
                    PlannedImage { reference: r.clone(), entry, picked_from: Some(top), manifests: vec![m] }
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
    Ok(FetchPlan { images, blobs })
}

/// Downloads what the store lacks (largest first, `jobs` at a time), then stores manifests and
/// points the references at them. Returns the per-image report.
pub fn execute(reg: &Registry, store: &Store, plan: FetchPlan, opts: &FetchOptions) -> Result<FetchReport> {
    let _guard = store.use_guard()?;
    let mut queue: Vec<&(Descriptor, Reference)> = plan.blobs.values().filter(|(d, _)| !store.has_blob(&d.digest, Some(d.size))).collect();
    queue.sort_by(|a, b| b.0.size.cmp(&a.0.size).then(a.0.digest.cmp(&b.0.digest)));
    let total: u64 = queue.iter().map(|(d, _)| d.size).sum();
    let progress = Progress::new(opts.progress, total, "fetch");
    let fetched: Mutex<HashSet<Digest>> = Mutex::new(HashSet::new());
    // A blob that fails does not stop the others: every image whose blobs all arrive is
    // committed below, whatever happened to the rest. Only Ctrl-C stops everything.
    let failed: Mutex<BTreeMap<Digest, Error>> = Mutex::new(BTreeMap::new());
    let abort = AtomicBool::new(false);
    let run = crate::pool::try_each_stopping(&queue, opts.jobs.max(1), &abort, |(desc, r), _| {
        match fetch_one(reg, store, r, desc, &progress, &abort) {
            Ok(true) => {
                fetched.lock().unwrap().insert(desc.digest.clone());
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(Error::Interrupted) => Err(Error::Interrupted),
            Err(e) => {
                failed.lock().unwrap().insert(desc.digest.clone(), e);
                Ok(())
            }
        }
    });
    progress.finish();
    run?;
    let fetched = fetched.into_inner().unwrap();
    let mut failed = failed.into_inner().unwrap();

    // Commit: manifests (children before their index), then the references.
    let mut updates = Vec::new();
    let mut reports = Vec::new();
    let mut counted: HashSet<Digest> = HashSet::new();
    let mut totals = Counts::default();
    // Per failed image, its first failed blob, in plan order.
    let mut failures: Vec<Digest> = Vec::new();
    for img in &plan.images {
        let blobs = img.manifests.iter().filter_map(|m| match &m.kind {
            ManifestKind::Image(im) => Some(std::iter::once(&im.config).chain(&im.layers)),
            ManifestKind::Index(_) => None,
        });
        if let Some(d) = blobs.flatten().find(|d| failed.contains_key(&d.digest)) {
            failures.push(d.digest.clone());
            continue;
        }
        for m in img.manifests.iter().chain(img.picked_from.iter()) {
            store.put_bytes(&m.digest, &m.bytes)?;
        }
        updates.push((img.reference.to_string(), img.entry.clone()));
        let mut counts = Counts::default();
        let mut manifests = Vec::new();
        for m in &img.manifests {
            let ManifestKind::Image(im) = &m.kind else { continue };
            for d in std::iter::once(&im.config).chain(&im.layers) {
                if fetched.contains(&d.digest) && counted.insert(d.digest.clone()) {
                    counts.blobs_fetched += 1;
                    counts.bytes_fetched += d.size;
                } else {
                    counts.blobs_present += 1;
                    counts.bytes_present += d.size;
                }
            }
            let platform = match platform_of(img, m) {
                Some(p) => p.to_string(),
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
            counts,
        });
    }
    if !updates.is_empty() {
        store.set_refs(&updates)?;
    }
    match failures.as_slice() {
        [] => Ok(FetchReport { images: reports, counts: totals, retries: reg.retries(), bytes_resumed: reg.bytes_resumed() }),
        // One failed image: its own error, as it was.
        [d] if reports.is_empty() => Err(failed.remove(d).expect("a failed blob")),
        _ => Err(Error::Other(format!(
            "{} of {} images failed{}: {}",
            failures.len(),
            plan.images.len(),
            if reports.is_empty() { String::new() } else { format!(" ({} stored; run fetch again for the rest)", reports.len()) },
            failures.iter().map(|d| failed[d].to_string()).collect::<Vec<_>>().join("; ")
        ))),
    }
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

/// Fetches one blob unless present; true if this process downloaded it.
fn fetch_one(reg: &Registry, store: &Store, r: &Reference, desc: &Descriptor, progress: &Progress, abort: &AtomicBool) -> Result<bool> {
    let what = format!("{r}: blob {}", desc.digest);
    for attempt in 0..2 {
        let Some(mut part) = PartialBlob::open(store, &desc.digest, Some(desc.size), &what)? else { return Ok(false) };
        let resumed = part.offset() > 0;
        let bar = progress.blob(&desc.digest.hex()[..12], desc.size);
        bar.skip(part.offset());
        let res = reg.download_blob(r, desc, &mut part, &|n| bar.inc(n), abort);
        bar.done();
        res?;
        match part.commit() {
            Ok(()) => return Ok(true),
            // A resumed download may have built on a prefix that was damaged (a crash before
            // the data reached the disk): start once more from byte zero.
            Err(Error::DigestMismatch { .. }) if resumed && attempt == 0 => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns on its second pass")
}

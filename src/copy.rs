//! The one copy between formats: `plan` lists what a set of images needs from a `Source` (every
//! blob once), and `execute` moves it into a `Sink` in the Sink's fixed order — content blobs,
//! then manifests (children before the index that lists them), then references and commit. A
//! Sink dropped before its commit leaves nothing a reader would take for a result. With
//! `keep_going` a failed blob costs only the images that need it: the others are committed.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::graph;
use crate::image::{Descriptor, Manifest};
use crate::limits;
use crate::source::{unlisted_manifest, Source};
use crate::store::picked_from;

/// One image of a plan: its name, the descriptor the name points at, and what it reaches.
#[derive(Debug, Clone, Serialize)]
pub struct PlanImage {
    pub reference: String,
    pub descriptor: Descriptor,
    /// Its manifests and indexes, root first (the walk's order).
    pub manifests: Vec<Descriptor>,
    /// Its configs and layers, in the walk's order.
    pub blobs: Vec<Descriptor>,
    /// The index its platform was picked from (a store reference's annotation), where the
    /// source holds it: context the store keeps beside the image, not part of it.
    pub picked_from: Option<Descriptor>,
}

/// What a copy moves (serialisable: it is what `--dry-run` and progress totals read).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub images: Vec<PlanImage>,
    /// Every config and layer once, largest first (so parallel copies end together).
    pub blobs: Vec<Descriptor>,
    /// Every manifest and index once, children before the index that lists them.
    pub manifests: Vec<Descriptor>,
}

impl Plan {
    /// Bytes of content blobs (what progress counts).
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|d| d.size).sum()
    }
    /// The references and the descriptors they point at.
    pub fn refs(&self) -> Vec<(String, Descriptor)> {
        self.images.iter().map(|i| (i.reference.clone(), i.descriptor.clone())).collect()
    }
}

/// Walks every image in `source` (the one graph walk) and lists what each needs. A blob the
/// source lacks is an error naming the image and the blob.
pub fn plan(source: &dyn Source, images: &[(String, Descriptor)]) -> Result<Plan> {
    let mut out = Vec::new();
    let mut seen_blobs = BTreeSet::new();
    let mut seen_nodes = BTreeSet::new();
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    for (name, desc) in images {
        let picked_from = match picked_from(desc).map_err(|e| e.context(name))? {
            Some(d) => unlisted_manifest(source, &d, name)?,
            None => None,
        };
        let mut img = PlanImage { reference: name.clone(), descriptor: desc.clone(), manifests: Vec::new(), blobs: Vec::new(), picked_from };
        graph::walk(desc, |d| {
            if !source.has(&d.digest) {
                return Err(Error::Other(format!("{name}: blob {} is missing from the {} (a delta bundle needs its base in the store)", d.digest, source.name())));
            }
            if !graph::is_node(d) {
                img.blobs.push(d.bare());
                return Ok(None);
            }
            img.manifests.push(d.bare());
            let bytes = source.read_small(d, limits::MANIFEST)?;
            Manifest::parse(bytes, Some(&d.media_type), name).map(Some)
        })?;
        for b in &img.blobs {
            if seen_blobs.insert(b.digest.clone()) {
                blobs.push(b.clone());
            }
        }
        // The walk goes root first: reversed, every child comes before what lists it.
        for m in img.manifests.iter().rev() {
            if seen_nodes.insert(m.digest.clone()) {
                manifests.push(m.clone());
            }
        }
        out.push(img);
    }
    blobs.sort_by(|a: &Descriptor, b: &Descriptor| b.size.cmp(&a.size).then(a.digest.cmp(&b.digest)));
    Ok(Plan { images: out, blobs, manifests })
}

/// Where a copy goes: the store, an OCI layout or archive, a registry. Blobs come first (from
/// several threads when `parallel`), then manifests in the plan's order, then one `commit`
/// with the references; dropped without a commit, a Sink removes whatever it wrote (or, where
/// that cannot be undone, as in a registry, names nothing: no tag moves before the commit).
pub trait Sink: Sync {
    /// Whether `put_blob` may be called from several threads at once (false for a sink that
    /// writes one stream in order, such as a tar).
    fn parallel(&self) -> bool;
    /// Stores one config or layer read from `from`, verified before it can be seen under its
    /// name; false when the sink held it already (nothing was read).
    fn put_blob(&self, desc: &Descriptor, from: &dyn Source, progress: &(dyn Fn(u64) + Sync)) -> Result<bool>;
    /// Stores one manifest or index (its bytes already checked against `desc`); false when the
    /// sink held it already.
    fn put_manifest(&self, desc: &Descriptor, bytes: &[u8]) -> Result<bool>;
    /// Whether the sink keeps the indexes single platforms were picked from (`Plan::picked_from`);
    /// only a store does, for its references' annotations.
    fn keeps_picked_from(&self) -> bool {
        false
    }
    /// Points the references at their descriptors and makes the result durable and visible.
    /// Returns the bytes the output holds, as the sink counts them.
    fn commit(self: Box<Self>, refs: &[(String, Descriptor)]) -> Result<u64>;
}

/// The blobs a copy moved, and those the sink held already.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Copied {
    pub blobs_imported: u64,
    pub bytes_imported: u64,
    pub blobs_present: u64,
    pub bytes_present: u64,
}

impl Copied {
    pub fn add(&mut self, present: bool, size: u64) {
        if present {
            self.blobs_present += 1;
            self.bytes_present += size;
        } else {
            self.blobs_imported += 1;
            self.bytes_imported += size;
        }
    }
}

#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Blobs in flight at once, for a parallel sink.
    pub jobs: usize,
    pub progress: bool,
    /// The progress bar's label (`import`, `export`).
    pub label: &'static str,
    /// Go on past a failed blob: every image whose blobs all arrived is committed, and the
    /// failures come back per image (fetch). Else the first failure ends the copy.
    pub keep_going: bool,
}

/// What `execute` did: the counts, and the bytes the sink's output holds.
#[derive(Debug, Default, Serialize)]
pub struct Executed {
    #[serde(flatten)]
    pub copied: Copied,
    pub output_bytes: u64,
    /// Content blobs this copy moved (the rest the sink held already).
    #[serde(skip)]
    pub moved: BTreeSet<Digest>,
    /// With `keep_going`: the images left out, each with its first failed blob, in plan order.
    #[serde(skip)]
    pub failed_images: Vec<(String, Digest)>,
    /// The error of each failed blob.
    #[serde(skip)]
    pub errors: BTreeMap<Digest, Error>,
}

impl Executed {
    /// Whether `reference` was committed.
    pub fn committed(&self, reference: &str) -> bool {
        !self.failed_images.iter().any(|(r, _)| r == reference)
    }

    /// The outcome of a `keep_going` copy of `planned` images as one result: Ok when every
    /// image was committed; a lone failure as its own error when nothing was committed; else
    /// one line: how many failed, how many were kept (`verb`: stored, pushed), and each reason.
    pub fn into_result(mut self, planned: usize, verb: &str, again: &str) -> Result<Executed> {
        let failed: Vec<Digest> = self.failed_images.iter().map(|(_, d)| d.clone()).collect();
        let kept = planned - failed.len();
        match failed.as_slice() {
            [] => Ok(self),
            [d] if kept == 0 => Err(self.errors.remove(d).expect("a failed blob")),
            _ => {
                // One reason per failed blob, naming every image it cost (a shared layer fails
                // many); the first few only, so the line stays one readable line.
                let mut groups: Vec<(&Digest, Vec<&str>)> = Vec::new();
                for (r, d) in &self.failed_images {
                    match groups.iter_mut().find(|(g, _)| *g == d) {
                        Some((_, refs)) => refs.push(r),
                        None => groups.push((d, vec![r])),
                    }
                }
                const SHOWN: usize = 3;
                let mut reasons: Vec<String> = groups.iter().take(SHOWN).map(|(d, refs)| {
                    let e = crate::error::one_line(&self.errors[*d].to_string(), 300);
                    let names = refs.join(", ");
                    if refs.len() == 1 && e.contains(refs[0]) { e } else { format!("{names}: {e}") }
                }).collect();
                if groups.len() > SHOWN {
                    reasons.push(format!("and {} more", groups.len() - SHOWN));
                }
                Err(Error::Other(format!(
                    "{} of {planned} images failed{}: {}",
                    failed.len(),
                    if kept == 0 { String::new() } else { format!(" ({kept} {verb}; {again} for the rest)") },
                    crate::error::one_line(&reasons.join("; "), 900)
                )))
            }
        }
    }
}

/// Runs `plan` from `source` into `sink`: every blob, then every manifest, then the commit.
/// The first failure stops the copy and drops the sink uncommitted, unless `keep_going`: then
/// only the images a failed blob belongs to are left out (nothing is committed when that is
/// every image), and `Executed` says which and why. Ctrl-C always stops everything.
pub fn execute(source: &dyn Source, sink: Box<dyn Sink + '_>, plan: &Plan, opts: &CopyOptions) -> Result<Executed> {
    let progress = crate::progress::Progress::new(opts.progress, plan.blob_bytes(), opts.label);
    let bar = progress.blob("", 0);
    let copied = Mutex::new(Copied::default());
    let moved = Mutex::new(BTreeSet::new());
    let errors: Mutex<BTreeMap<Digest, Error>> = Mutex::new(BTreeMap::new());
    let one = |d: &Descriptor| -> Result<()> {
        if crate::cancel::requested() {
            return Err(Error::Interrupted);
        }
        match sink.put_blob(d, source, &|n| bar.inc(n)) {
            Ok(fresh) => {
                if fresh {
                    moved.lock().unwrap().insert(d.digest.clone());
                } else {
                    bar.inc(d.size);
                }
                copied.lock().unwrap().add(!fresh, d.size);
                Ok(())
            }
            Err(e) if opts.keep_going && !matches!(e, Error::Interrupted) => {
                errors.lock().unwrap().insert(d.digest.clone(), e);
                Ok(())
            }
            Err(e) => Err(e),
        }
    };
    let ran = if sink.parallel() {
        crate::pool::try_each_on(&plan.blobs, opts.jobs.max(1), |d, _| one(d))
    } else {
        plan.blobs.iter().try_for_each(one)
    };
    progress.finish();
    ran?;
    let errors = errors.into_inner().unwrap();
    let mut done = Executed { copied: copied.into_inner().unwrap(), moved: moved.into_inner().unwrap(), ..Default::default() };
    // The images every blob of which arrived, and what they need of the manifests.
    let mut keep: Vec<&PlanImage> = Vec::new();
    for img in &plan.images {
        match img.blobs.iter().find(|b| errors.contains_key(&b.digest)) {
            Some(b) => done.failed_images.push((img.reference.clone(), b.digest.clone())),
            None => keep.push(img),
        }
    }
    done.errors = errors;
    if keep.is_empty() {
        return Ok(done);
    }
    let needed: BTreeSet<&Digest> = keep.iter().flat_map(|i| i.manifests.iter().map(|m| &m.digest)).collect();
    let mut context: Vec<&Descriptor> = Vec::new();
    if sink.keeps_picked_from() {
        for p in keep.iter().filter_map(|i| i.picked_from.as_ref()) {
            if !context.iter().any(|c| c.digest == p.digest) && !needed.contains(&p.digest) {
                context.push(p);
            }
        }
    }
    for m in plan.manifests.iter().filter(|m| needed.contains(&m.digest)).chain(context) {
        // Checked here, once for every sink (a Source's stream checks it too; a Sink need not).
        let bytes = source.read_small(m, limits::MANIFEST)?;
        check_bytes("manifest", m, &bytes)?;
        done.copied.add(!sink.put_manifest(m, &bytes)?, m.size);
    }
    let refs: Vec<(String, Descriptor)> = keep.iter().map(|i| (i.reference.clone(), i.descriptor.clone())).collect();
    done.output_bytes = sink.commit(&refs)?;
    Ok(done)
}

/// Checks a manifest's bytes against its descriptor.
fn check_bytes(what: &str, desc: &Descriptor, bytes: &[u8]) -> Result<()> {
    let found = Digest::of(bytes);
    if found != desc.digest {
        return Err(Error::DigestMismatch { what: what.to_string(), expected: desc.digest.clone(), found });
    }
    if bytes.len() as u64 != desc.size {
        return Err(Error::SizeMismatch { what: what.to_string(), digest: desc.digest.clone(), expected: desc.size, found: bytes.len() as u64 });
    }
    Ok(())
}

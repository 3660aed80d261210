//! Store upkeep: `fsck` (re-hash every blob, walk every reference) and `gc` (drop unreachable
//! blobs, and referrers whose subject is gone).
use std::collections::BTreeSet;
use std::fs;

use serde::Serialize;

use super::{RefEntry, Store, ANNOTATION_INDEX_DIGEST};
use crate::digest::{hash_reader, Digest};
use crate::error::{IoContext, Result};
use crate::image::{Descriptor, Manifest};
use crate::limits;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    /// `bad` (content does not match its name/descriptor), `missing`, or `stray` (not a blob name).
    pub kind: String,
    pub digest: String,
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind.as_str() {
            "missing" => write!(f, "missing blob {} ({})", self.digest, self.detail),
            "stray" => write!(f, "stray file {} ({})", self.digest, self.detail),
            _ => write!(f, "bad blob {}: {}", self.digest, self.detail),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub refs_checked: u64,
    pub problems: Vec<Problem>,
    /// Referrer references (`REPO:sha256-<hex>[.sig]`) whose subject is gone from the store: not
    /// damage (everything they reach is there), but nothing uses them; `gc` drops them.
    pub orphaned_referrers: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Referrer references (`REPO:sha256-<hex>[.sig]`) whose subject is gone from the store.
    pub removed_referrers: Vec<String>,
    pub removed_blobs: u64,
    pub removed_bytes: u64,
    pub removed_partials: u64,
    /// Bytes of the caches bundle writes keep: analyses of layers no longer kept, and every
    /// compressed chunk pack (the next bundle write compresses its packs again).
    pub removed_cache_bytes: u64,
}

impl Store {
    /// Every blob a reference reaches, following manifests and indexes. Missing or unreadable
    /// manifests are reported through `problems` (and their children are not followed).
    pub fn reachable(&self, refs: &[RefEntry], problems: &mut Vec<Problem>) -> BTreeSet<Digest> {
        let mut seen = BTreeSet::new();
        for r in refs {
            if let Some(idx) = r.descriptor.annotations.as_ref().and_then(|a| a.get(ANNOTATION_INDEX_DIGEST))
                && let Ok(d) = idx.parse::<Digest>() {
                if !self.has_blob(&d, None) {
                    problems.push(Problem { kind: "missing".into(), digest: d.to_string(), detail: format!("index of {}", r.name) });
                }
                seen.insert(d);
            }
            self.walk(&r.descriptor, &r.name, &mut seen, problems);
        }
        seen
    }

    /// Walks one reference (through `graph::walk`), recording what is missing or bad instead of
    /// stopping at it; `seen` spans every reference, so a shared blob is checked once.
    fn walk(&self, root: &Descriptor, name: &str, seen: &mut BTreeSet<Digest>, problems: &mut Vec<Problem>) {
        let walked = crate::graph::walk::<std::convert::Infallible>(root, |desc| {
            if !seen.insert(desc.digest.clone()) {
                return Ok(None);
            }
            let problem = |kind: &str, detail: String| Problem { kind: kind.into(), digest: desc.digest.to_string(), detail };
            let Ok(meta) = fs::symlink_metadata(self.blob_path(&desc.digest)) else {
                problems.push(problem("missing", format!("needed by {name}")));
                return Ok(None);
            };
            if meta.len() != desc.size {
                problems.push(problem("bad", format!("size {} but {name} says {}", meta.len(), desc.size)));
                return Ok(None);
            }
            if !crate::graph::is_node(desc) {
                return Ok(None);
            }
            let parsed = self
                .read_blob_capped(&desc.digest, limits::MANIFEST)
                .and_then(|b| Manifest::parse(b, Some(&desc.media_type), &format!("manifest {}", desc.digest)));
            Ok(parsed.map_err(|e| problems.push(problem("bad", format!("manifest of {name}: {e}")))).ok())
        });
        let Ok(()) = walked;
    }

    /// Re-hashes every blob (on all cores) and checks that every reference is complete.
    pub fn fsck(&self) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let mut files = Vec::new();
        for entry in fs::read_dir(self.blobs_dir()).at(self.blobs_dir())? {
            let entry = entry.at(self.blobs_dir())?;
            let name = entry.file_name().to_string_lossy().to_string();
            match format!("sha256:{name}").parse::<Digest>() {
                Ok(d) => files.push(d),
                Err(_) => report.problems.push(Problem { kind: "stray".into(), digest: name, detail: "not named by a sha256 digest".into() }),
            }
        }
        files.sort();
        let results = crate::pool::map_all(&files, |d, _| self.open_blob(d).map_err(|e| e.to_string()).and_then(|f| hash_reader(f).map_err(|e| e.to_string())));
        for (d, r) in files.iter().zip(results) {
            report.blobs_checked += 1;
            match r {
                Ok((found, len)) => {
                    report.bytes_checked += len;
                    if found != *d {
                        report.problems.push(Problem { kind: "bad".into(), digest: d.to_string(), detail: format!("content hashes to {found}") });
                    }
                }
                Err(e) => report.problems.push(Problem { kind: "bad".into(), digest: d.to_string(), detail: format!("unreadable: {e}") }),
            }
        }
        let refs = self.refs()?;
        report.refs_checked = refs.len() as u64;
        self.reachable(&refs, &mut report.problems);
        // The same walk gc makes (its problems are those just reported).
        report.orphaned_referrers = self.kept(refs, &mut Vec::new())?.1;
        Ok(report)
    }

    /// Adds to `keep` the referrers of what it holds (signatures, SBOMs, attestations: stored
    /// manifests whose `subject` is kept, and their referrers in turn) and all they reach. The
    /// referrer edge points up, so the candidates are the stored blobs no reference reaches
    /// that are small enough to be manifests and parse as one with a subject.
    fn keep_referrers(&self, keep: &mut BTreeSet<Digest>, problems: &mut Vec<Problem>) -> Result<()> {
        let mut candidates = Vec::new();
        for entry in fs::read_dir(self.blobs_dir()).at(self.blobs_dir())? {
            let entry = entry.at(self.blobs_dir())?;
            let Ok(d) = format!("sha256:{}", entry.file_name().to_string_lossy()).parse::<Digest>() else { continue };
            if keep.contains(&d) || entry.metadata().map_or(true, |m| !m.is_file() || m.len() > limits::MANIFEST) {
                continue;
            }
            let Ok(bytes) = self.read_blob_capped(&d, limits::MANIFEST) else { continue };
            if bytes.first() != Some(&b'{') {
                continue;
            }
            if let Ok(m) = Manifest::parse(bytes, None, &format!("blob {d}"))
                && m.subject.is_some() && m.digest == d {
                candidates.push(m);
            }
        }
        for m in crate::graph::referrers(&candidates, keep) {
            let name = format!("referrer of {}", m.subject.as_ref().map_or(String::new(), |s| s.digest.to_string()));
            self.walk(&m.descriptor(), &name, keep, problems);
        }
        Ok(())
    }

    /// What gc keeps: every blob an image's reference reaches; then, in turn, each referrer
    /// reference (`REPO:sha256-<hex>[.sig]`) whose subject is kept and what it reaches, and each
    /// stored manifest whose `subject` is kept. Also returns the referrer references whose
    /// subject is not kept (the image they hang off is gone): gc drops them.
    fn kept(&self, refs: Vec<RefEntry>, problems: &mut Vec<Problem>) -> Result<(BTreeSet<Digest>, Vec<String>)> {
        let (mut pending, images): (Vec<RefEntry>, Vec<RefEntry>) = refs.into_iter().partition(|r| crate::referrers::is_referrer_ref(&r.name));
        let mut keep = self.reachable(&images, problems);
        loop {
            loop {
                let subject = |r: &RefEntry| crate::referrers::parse_ref(&r.name).map(|(_, s, _)| s);
                let (now, rest): (Vec<RefEntry>, Vec<RefEntry>) = pending.into_iter().partition(|r| subject(r).is_some_and(|s| keep.contains(&s)));
                pending = rest;
                if now.is_empty() {
                    break;
                }
                keep.extend(self.reachable(&now, problems));
            }
            let before = keep.len();
            self.keep_referrers(&mut keep, problems)?;
            if keep.len() == before || pending.is_empty() {
                return Ok((keep, pending.into_iter().map(|r| r.name).collect()));
            }
        }
    }

    /// Empties the pack cache (`.ocibundle/packs`) and drops analyses (`.ocibundle/recipes/v1/<layer
    /// hex>`) of layers not in `keep`: the bytes freed. Best effort: what cannot be removed stays.
    fn trim_caches(&self, keep: &BTreeSet<Digest>) -> u64 {
        let mut freed = 0;
        let mut remove = |path: &std::path::Path| {
            let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(path).is_ok() {
                freed += len;
            }
        };
        if let Ok(rd) = fs::read_dir(self.private_dir().join("packs/v1")) {
            rd.flatten().for_each(|e| remove(&e.path()));
        }
        if let Ok(rd) = fs::read_dir(self.private_dir().join("recipes/v1")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !format!("sha256:{name}").parse::<Digest>().is_ok_and(|d| keep.contains(&d)) {
                    remove(&e.path());
                }
            }
        }
        freed
    }

    /// Removes the referrer references whose subject is gone, then blobs that no kept reference
    /// reaches and every partial download. Waits for running fetches to finish first (they may
    /// hold blobs not yet referenced).
    pub fn gc(&self) -> Result<GcReport> {
        let _exclusive = self.lock_file("gc.lock", true)?;
        let mut problems = Vec::new();
        let refs = self.refs()?;
        let (keep, orphans) = self.kept(refs, &mut problems)?;
        let mut report = GcReport::default();
        // The references go first (the commit): a gc cut short after it leaves only blobs that
        // the next one removes, never a reference to a removed blob.
        if !orphans.is_empty() {
            self.remove_refs(&orphans)?;
            report.removed_referrers = orphans;
        }
        for entry in fs::read_dir(self.blobs_dir()).at(self.blobs_dir())? {
            let entry = entry.at(self.blobs_dir())?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Ok(d) = format!("sha256:{name}").parse::<Digest>() else { continue };
            if keep.contains(&d) {
                continue;
            }
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(entry.path()).at(entry.path())?;
            report.removed_blobs += 1;
            report.removed_bytes += len;
        }
        if let Ok(rd) = fs::read_dir(self.tmp_dir()) {
            for entry in rd.flatten() {
                if fs::remove_file(entry.path()).is_ok() {
                    report.removed_partials += 1;
                }
            }
        }
        report.removed_cache_bytes = self.trim_caches(&keep);
        Ok(report)
    }
}

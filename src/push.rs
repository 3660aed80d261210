//! `push`: plan (name each image in the target registry, list what each target repository
//! needs) then execute (blobs: skip, mount or upload, in parallel; then manifests children
//! first, tags last; then read every tag back).
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Mutex;

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::export::reachable;
use crate::image::{is_index_type, is_manifest_type, Descriptor};
use crate::limits;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::{BlobOutcome, Registry, UploadState};
use crate::source::Source;

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// `REGISTRY[/PREFIX]`: the repository path is kept below it.
    pub to: Option<String>,
    /// `FROM=TO` prefix rewrites on the full reference, tried first, in order.
    pub rewrites: Vec<(String, String)>,
    pub jobs: usize,
    pub dry_run: bool,
    pub progress: bool,
    pub uploads: Option<UploadState>,
}

#[derive(Debug, Serialize, Clone)]
pub struct MappingRule {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct PushCounts {
    pub pushed_blobs: u64,
    pub pushed_bytes: u64,
    pub mounted_blobs: u64,
    pub mounted_bytes: u64,
    pub present_blobs: u64,
    pub present_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct PushedImage {
    pub source: String,
    pub target: String,
    pub digest: Digest,
    #[serde(flatten)]
    pub counts: PushCounts,
}

#[derive(Debug, Serialize)]
pub struct PushReport {
    pub dry_run: bool,
    pub mapping: Vec<MappingRule>,
    pub images: Vec<PushedImage>,
    #[serde(flatten)]
    pub counts: PushCounts,
    /// Attempts retried in the run (any request: checks, mounts, uploads, manifests).
    pub retries: u64,
    /// Bytes not uploaded again because an upload resumed where the registry stood.
    pub bytes_resumed: u64,
}

/// One image to push.
pub struct PlannedPush {
    pub source: String,
    pub target: Reference,
    pub entry: Descriptor,
    /// Configs and layers.
    pub content: Vec<Descriptor>,
    /// Manifests and indexes, children before the index that lists them.
    pub manifests: Vec<(Descriptor, Vec<u8>)>,
}

fn looks_like_registry(host: &str) -> bool {
    host.contains('.') || host.contains(':') || host == "localhost" || host.starts_with('[')
}

/// The target reference of `name`, and the rule that made it.
pub fn target_for(name: &str, opts: &PushOptions) -> Result<(Reference, MappingRule)> {
    let invalid = |rule: &str, cand: &str, e: Error| Error::Other(format!("{rule} turns {name} into {cand:?}, which is not a valid reference: {e}"));
    for (from, to) in &opts.rewrites {
        if let Some(rest) = name.strip_prefix(from.as_str()) {
            let cand = format!("{to}{rest}");
            let r: Reference = cand.parse().map_err(|e| invalid(&format!("--rewrite {from}={to}"), &cand, e))?;
            if !looks_like_registry(cand.split('/').next().unwrap_or("")) {
                return Err(Error::Other(format!("--rewrite {from}={to} turns {name} into {cand:?}, which names no registry host")));
            }
            return Ok((r, MappingRule { from: from.clone(), to: to.clone() }));
        }
    }
    let Some(to) = &opts.to else {
        return Err(Error::Other(format!("{name}: no --rewrite rule matches it and no --to was given")));
    };
    let to = to.trim_end_matches('/');
    if !looks_like_registry(to.split('/').next().unwrap_or("")) {
        return Err(Error::Other(format!("--to {to}: the first part must be a registry host (with a dot or a port, or localhost)")));
    }
    let src: Reference = name.parse()?;
    let mut cand = format!("{to}/{}", src.repository);
    if let Some(t) = &src.tag {
        cand.push_str(&format!(":{t}"));
    }
    if let Some(d) = &src.digest {
        cand.push_str(&format!("@{d}"));
    }
    let r: Reference = cand.parse().map_err(|e| invalid(&format!("--to {to}"), &cand, e))?;
    Ok((r, MappingRule { from: format!("{}/", src.registry), to: format!("{to}/") }))
}

/// Names every image in the target registry and lists its blobs and manifests.
pub fn plan(source: &dyn Source, images: &[(String, Descriptor)], opts: &PushOptions) -> Result<(Vec<PlannedPush>, Vec<MappingRule>)> {
    let mut out = Vec::new();
    let mut rules: Vec<MappingRule> = Vec::new();
    for (name, entry) in images {
        let (target, rule) = target_for(name, opts)?;
        if !rules.iter().any(|r| r.from == rule.from && r.to == rule.to) {
            rules.push(rule);
        }
        let blobs = reachable(source, name, entry)?;
        let mut content = Vec::new();
        let mut manifests = Vec::new();
        for b in blobs {
            if is_manifest_type(&b.media_type) || is_index_type(&b.media_type) {
                let bytes = source.read_small(&b, limits::MANIFEST)?;
                manifests.push((b, bytes));
            } else {
                content.push(b);
            }
        }
        // Discovery goes parent first: push in reverse, children before their index.
        manifests.reverse();
        out.push(PlannedPush { source: name.clone(), target, entry: entry.clone(), content, manifests });
    }
    Ok((out, rules))
}

/// Pushes the plan. With `dry_run`, only asks the registry what it has.
pub fn execute(reg: &Registry, source: &dyn Source, plan: &[PlannedPush], rules: Vec<MappingRule>, opts: &PushOptions) -> Result<PushReport> {
    // Each digest with the repositories that need it, in plan order.
    let mut by_digest: BTreeMap<Digest, (Descriptor, Vec<Reference>)> = BTreeMap::new();
    for p in plan {
        for d in &p.content {
            let e = by_digest.entry(d.digest.clone()).or_insert_with(|| (d.clone(), Vec::new()));
            if !e.1.iter().any(|r| r.registry == p.target.registry && r.repository == p.target.repository) {
                e.1.push(p.target.clone());
            }
        }
    }
    let mut work: Vec<&(Descriptor, Vec<Reference>)> = by_digest.values().collect();
    work.sort_by_key(|w| std::cmp::Reverse(w.0.size));
    let total: u64 = work.iter().map(|(d, repos)| d.size * repos.len() as u64).sum();
    let progress = Progress::new(opts.progress && !opts.dry_run, total, "push");
    let bar = progress.blob("", 0);
    let outcomes: Mutex<HashMap<(String, Digest), BlobOutcome>> = Mutex::new(HashMap::new());
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let queue = Mutex::new(work.into_iter());
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|| loop {
                if failure.lock().unwrap().is_some() || crate::cancel::requested() {
                    break;
                }
                let Some((desc, repos)) = queue.lock().unwrap().next() else { break };
                let mut holder: Option<&Reference> = None;
                for repo in repos {
                    let r = (|| -> Result<BlobOutcome> {
                        if reg.blob_exists(repo, &desc.digest)? {
                            return Ok(BlobOutcome::Present);
                        }
                        if let Some(h) = holder
                            && (opts.dry_run || reg.mount_blob(repo, &desc.digest, &h.repository)?) {
                            return Ok(BlobOutcome::Mounted);
                        }
                        if !opts.dry_run {
                            let open = |off: u64| -> Result<Box<dyn Read + Send + '_>> {
                                let mut r = source.blob(desc)?;
                                std::io::copy(&mut (&mut r).take(off), &mut std::io::sink()).map_err(|e| Error::Other(format!("{}: blob {}: {e}", source.name(), desc.digest)))?;
                                Ok(r)
                            };
                            reg.upload_blob(repo, desc, &open, opts.uploads.as_ref(), &|n| bar.inc(n))?;
                        }
                        Ok(BlobOutcome::Uploaded)
                    })();
                    match r {
                        Ok(o) => {
                            holder.get_or_insert(repo);
                            outcomes.lock().unwrap().insert((repo_key(repo), desc.digest.clone()), o);
                        }
                        Err(e) => {
                            failure.lock().unwrap().get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    progress.finish();
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    if crate::cancel::requested() {
        return Err(Error::Interrupted);
    }
    let outcomes = outcomes.into_inner().unwrap();

    let mut images = Vec::new();
    let mut totals = PushCounts::default();
    let mut counted: std::collections::HashSet<(String, Digest)> = Default::default();
    for p in plan {
        if !opts.dry_run {
            for (desc, bytes) in &p.manifests {
                if reg.head_manifest(&p.target, &desc.digest.to_string())?.as_ref() != Some(&desc.digest) {
                    reg.put_manifest(&p.target, &desc.digest.to_string(), &desc.media_type, bytes)?;
                }
            }
            if let Some(tag) = &p.target.tag {
                let entry_bytes = &p.manifests.iter().find(|(d, _)| d.digest == p.entry.digest).expect("entry manifest planned").1;
                if reg.head_manifest(&p.target, tag)?.as_ref() != Some(&p.entry.digest) {
                    reg.put_manifest(&p.target, tag, &p.entry.media_type, entry_bytes)?;
                }
                // Read back what the tag now names.
                let got = reg.head_manifest(&p.target, tag)?;
                if got.as_ref() != Some(&p.entry.digest) {
                    return Err(Error::Other(format!(
                        "{}: after the push the registry serves {} for it, not {}",
                        p.target,
                        got.map(|d| d.to_string()).unwrap_or_else(|| "nothing".into()),
                        p.entry.digest
                    )));
                }
            }
        }
        let mut c = PushCounts::default();
        for d in &p.content {
            let key = (repo_key(&p.target), d.digest.clone());
            let first = counted.insert(key.clone());
            match (first, outcomes.get(&key)) {
                (true, Some(BlobOutcome::Uploaded)) => {
                    c.pushed_blobs += 1;
                    c.pushed_bytes += d.size;
                }
                (true, Some(BlobOutcome::Mounted)) => {
                    c.mounted_blobs += 1;
                    c.mounted_bytes += d.size;
                }
                _ => {
                    c.present_blobs += 1;
                    c.present_bytes += d.size;
                }
            }
        }
        add(&mut totals, &c);
        images.push(PushedImage { source: p.source.clone(), target: p.target.to_string(), digest: p.entry.digest.clone(), counts: c });
    }
    Ok(PushReport { dry_run: opts.dry_run, mapping: rules, images, counts: totals, retries: reg.retries(), bytes_resumed: reg.bytes_resumed() })
}

fn repo_key(r: &Reference) -> String {
    format!("{}/{}", r.registry, r.repository)
}

fn add(t: &mut PushCounts, c: &PushCounts) {
    t.pushed_blobs += c.pushed_blobs;
    t.pushed_bytes += c.pushed_bytes;
    t.mounted_blobs += c.mounted_blobs;
    t.mounted_bytes += c.mounted_bytes;
    t.present_blobs += c.present_blobs;
    t.present_bytes += c.present_bytes;
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn naming() {
        let o = PushOptions { to: Some("registry.lan:5000/mirror".into()), ..Default::default() };
        assert_eq!(target_for("docker.io/library/redis:7", &o).unwrap().0.to_string(), "registry.lan:5000/mirror/library/redis:7");
        let o = PushOptions { rewrites: vec![("docker.io/".into(), "registry.lan/hub/".into())], ..Default::default() };
        assert_eq!(target_for("docker.io/library/redis:7", &o).unwrap().0.to_string(), "registry.lan/hub/library/redis:7");
        assert!(target_for("ghcr.io/a/b:1", &o).is_err());
        let bad = PushOptions { rewrites: vec![("docker.io/".into(), "registry.lan/HUB/".into())], ..Default::default() };
        assert!(target_for("docker.io/library/redis:7", &bad).unwrap_err().to_string().contains("not a valid reference"));
        let nohost = PushOptions { to: Some("mirror".into()), ..Default::default() };
        assert!(target_for("docker.io/library/redis:7", &nohost).is_err());
    }
}

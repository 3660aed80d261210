//! `push`: plan (name each image in the target registry, list what each target repository
//! needs) then execute (blobs: skip, mount or upload, in parallel; then manifests children
//! first, tags last; then read every tag back).
use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::copy::{self, CopyOptions, Plan};
use crate::image::Descriptor;
use crate::reference::Reference;
use crate::registry::sink::{repo_key, Outcomes, RegistrySink};
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
/// What a push does: the one copy's plan, and each image's name in the target registry.
pub struct PushPlan {
    pub copy: Plan,
    pub targets: BTreeMap<String, Reference>,
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
pub fn plan(source: &dyn Source, images: &[(String, Descriptor)], opts: &PushOptions) -> Result<(PushPlan, Vec<MappingRule>)> {
    let mut targets = BTreeMap::new();
    let mut rules: Vec<MappingRule> = Vec::new();
    for (name, _) in images {
        let (target, rule) = target_for(name, opts)?;
        if !rules.iter().any(|r| r.from == rule.from && r.to == rule.to) {
            rules.push(rule);
        }
        targets.insert(name.clone(), target);
    }
    Ok((PushPlan { copy: copy::plan(source, images)?, targets }, rules))
}

/// Copies the plan into the registry (`dry_run`: asks what it would send, sends nothing) and
/// reports per image what was pushed, mounted or found present.
pub fn execute(reg: &Registry, source: &dyn Source, plan: &PushPlan, rules: Vec<MappingRule>, opts: &PushOptions) -> Result<PushReport> {
    let outcomes = Mutex::new(Outcomes::new());
    let sink = RegistrySink::new(reg, &plan.copy, plan.targets.clone(), opts.uploads.as_ref(), opts.dry_run, &outcomes);
    // Every image whose blobs all arrived is tagged, whatever happens to the others.
    let copy_opts = CopyOptions { jobs: opts.jobs, progress: opts.progress && !opts.dry_run, label: "push", keep_going: true };
    copy::execute(source, Box::new(sink), &plan.copy, &copy_opts)?.into_result(plan.copy.images.len(), "pushed", "run push again")?;
    let outcomes = outcomes.into_inner().unwrap();

    let mut images = Vec::new();
    let mut totals = PushCounts::default();
    let mut counted: std::collections::HashSet<(String, Digest)> = Default::default();
    for p in &plan.copy.images {
        let target = &plan.targets[&p.reference];
        let mut c = PushCounts::default();
        for d in &p.blobs {
            let key = (repo_key(target), d.digest.clone());
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
        images.push(PushedImage { source: p.reference.clone(), target: target.to_string(), digest: p.descriptor.digest.clone(), counts: c });
    }
    Ok(PushReport { dry_run: opts.dry_run, mapping: rules, images, counts: totals, retries: reg.retries(), bytes_resumed: reg.bytes_resumed() })
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

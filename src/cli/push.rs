//! `ocibundle push`: images from a bundle or the store into a registry.
use std::path::Path;

use anyhow::bail;
use clap::Args;
use ocibundle::push::{self, PushOptions};
use ocibundle::registry::{Registry, UploadState};

use super::fetch::RegistryArgs;

#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    source: super::SourceArgs,
    /// Target registry and optional prefix: the repository path is kept below it
    #[arg(long, value_name = "REGISTRY[/PREFIX]")]
    to: Option<String>,
    /// Map references by prefix, FROM=TO (repeatable; tried in order, before --to)
    #[arg(long, value_name = "FROM=TO")]
    rewrite: Vec<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Blobs uploaded in parallel
    #[arg(long, default_value_t = 4, value_name = "N")]
    jobs: usize,
    /// Show what would be uploaded, mounted and skipped; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sign: super::SignArgs,
}

pub fn run(root: &Path, a: PushArgs) -> anyhow::Result<i32> {
    let mut rewrites = Vec::new();
    for r in &a.rewrite {
        match r.split_once('=') {
            Some((f, t)) if !f.is_empty() && !t.is_empty() => rewrites.push((f.to_string(), t.to_string())),
            _ => bail!("--rewrite {r:?}: expected FROM=TO"),
        }
    }
    if a.to.is_none() && rewrites.is_empty() {
        bail!("say where to push: --to REGISTRY[/PREFIX] or --rewrite FROM=TO");
    }
    if a.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let sources = super::Sources::open(root, a.source.from.as_deref())?;
    let uploads = sources.store.as_ref().map(|s| UploadState { dir: s.root().join(".ocibundle/uploads") });
    let opts = PushOptions { to: a.to.clone(), rewrites, jobs: a.jobs, dry_run: a.dry_run, progress: !a.json, uploads };
    let reg = Registry::new(a.registry.options()?);
    let report = sources.with(|source| -> anyhow::Result<_> {
        let (names, leave) = super::selected_names(source, &a.source)?;
        let mut images = ocibundle::export::select(source, &names)?;
        // A lock's unpinned referrers stay behind.
        images.retain(|(n, _)| !leave.contains(n));
        // The gate, before anything is sent: signatures name the images as the source does,
        // whatever --rewrite makes of them.
        a.sign.gate(source, &images, &|n| n.to_string(), false)?;
        let (plan, rules) = push::plan(source, &images, &opts)?;
        Ok(push::execute(&reg, source, &plan, rules, &opts)?)
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for m in &report.mapping {
            eprintln!("mapping: {} -> {}", m.from, m.to);
        }
        for i in &report.images {
            let c = &i.counts;
            if report.dry_run {
                println!("{} -> {} {} would push {} mount {} skip {}", i.source, i.target, i.digest, c.pushed_bytes, c.mounted_bytes, c.present_bytes);
            } else {
                println!("{} -> {} {} pushed {} mounted {} present {}", i.source, i.target, i.digest, c.pushed_bytes, c.mounted_bytes, c.present_bytes);
            }
        }
        if let Some(note) = super::fetch::retry_note(report.retries, report.bytes_resumed) {
            let n = report.images.len();
            eprintln!("pushed {n} image{} {note}", if n == 1 { "" } else { "s" });
        }
    }
    Ok(0)
}

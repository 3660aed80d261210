//! `ocibundle lock`: an image list resolved at the registries (digests, platforms, referrers)
//! into a lock file.
use std::io::Write;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use ocibundle::registry::Registry;
use ocibundle::Reference;

use super::fetch::{PlatformArgs, RegistryArgs};

#[derive(Args)]
pub struct LockArgs {
    /// Image references to lock (beside or instead of --images)
    #[arg(value_name = "REF")]
    refs: Vec<String>,
    /// The image list, one reference a line (`?` marks an optional one; # comments)
    #[arg(long, value_name = "FILE")]
    images: Option<PathBuf>,
    /// Where to write the lock (default: stdout)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    platforms: PlatformArgs,
    /// Referrers to pin with each image (signatures, SBOMs, attestations): all, none, or
    /// artifact types separated by commas (sig, att, sbom name cosign's tags)
    #[arg(long, value_name = "all|none|TYPE,...", default_value = "all")]
    referrers: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(a: LockArgs) -> anyhow::Result<i32> {
    let mut list: Vec<(bool, String)> = a.refs.iter().map(|r| (false, r.clone())).collect();
    if let Some(f) = &a.images {
        list.extend(super::read_marked_list(f)?);
    }
    if list.is_empty() {
        bail!("no image references given (pass REF... or --images FILE)");
    }
    let mut refs: Vec<(bool, Reference)> = Vec::new();
    for (optional, r) in list {
        let r: Reference = r.parse()?;
        if !refs.iter().any(|(_, o)| *o == r) {
            refs.push((optional, r));
        }
    }
    let filter: ocibundle::referrers::Filter = a.referrers.parse()?;
    let reg = Registry::new(a.registry.options()?);
    let resolved = ocibundle::lock::resolve(&reg, &refs, &a.platforms.choice()?, &filter, 4)?;
    for (r, why) in &resolved.skipped {
        eprintln!("warning: optional image {r} left out of the lock: {why}");
    }
    let text = resolved.lock.render();
    match &a.output {
        None => print!("{text}"),
        Some(p) if p.as_os_str() == "-" => print!("{text}"),
        Some(p) => {
            // temp + fsync + rename: an interrupted lock never leaves half a file.
            let tmp = ocibundle::litter::claim_temp(p);
            let res = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all())).and_then(|()| std::fs::rename(&tmp, p));
            if let Err(e) = res {
                let _ = std::fs::remove_file(&tmp);
                bail!("{}: {e}", p.display());
            }
            let pinned: usize = resolved.lock.entries.iter().map(|e| e.referrers.len()).sum();
            eprintln!("{}: {} images locked, with {pinned} referrers", p.display(), resolved.lock.entries.len());
        }
    }
    Ok(0)
}

//! `ocibundle store ls|fsck|gc`.
use std::path::Path;

use clap::Subcommand;
use ocibundle::Store;

use super::human;

#[derive(Subcommand)]
pub enum StoreCmd {
    /// List stored references
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every blob and check every reference is complete
    Fsck {
        #[arg(long)]
        json: bool,
    },
    /// Write the list of blobs the store holds (for `bundle --since` on the connected side)
    Inventory {
        /// Output file (`-` for stdout)
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: std::path::PathBuf,
    },
    /// Remove blobs no reference reaches, and partial downloads
    Gc {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(root: &Path, cmd: StoreCmd) -> anyhow::Result<i32> {
    let store = Store::open_existing(root)?;
    match cmd {
        StoreCmd::Ls { json } => {
            let mut rows = Vec::new();
            for r in store.refs()? {
                let mut problems = Vec::new();
                let reach = store.reachable(std::slice::from_ref(&r), &mut problems);
                let size: u64 = reach.iter().filter_map(|d| std::fs::metadata(store.blob_path(d)).ok()).map(|m| m.len()).sum();
                rows.push(serde_json::json!({
                    "reference": r.name, "digest": r.descriptor.digest, "media_type": r.descriptor.media_type, "size": size,
                }));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "images": rows }))?);
            } else {
                for r in &rows {
                    println!("{} {} {}", r["reference"].as_str().unwrap_or(""), r["digest"].as_str().unwrap_or(""), r["size"].as_u64().unwrap_or(0));
                }
            }
            Ok(0)
        }
        StoreCmd::Fsck { json } => {
            let report = store.fsck()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for p in &report.problems {
                    println!("{p}");
                }
            }
            if report.problems.is_empty() {
                if !json {
                    println!("ok: {} blobs ({}) and {} references checked", report.blobs_checked, human(report.bytes_checked), report.refs_checked);
                }
                Ok(0)
            } else {
                let first = &report.problems[0];
                anyhow::bail!("store {}: {} problem(s), first: {first}", store.root().display(), report.problems.len())
            }
        }
        StoreCmd::Inventory { output } => {
            let text = ocibundle::bundle::inventory::render(&store)?;
            if output.as_os_str() == "-" {
                print!("{text}");
            } else {
                std::fs::write(&output, &text).map_err(|e| anyhow::anyhow!("{}: {e}", output.display()))?;
                eprintln!("{}: {} blobs", output.display(), text.lines().count() - 1);
            }
            Ok(0)
        }
        StoreCmd::Gc { json } => {
            let r = store.gc()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("removed {} blobs ({} bytes)", r.removed_blobs, r.removed_bytes);
            }
            Ok(0)
        }
    }
}

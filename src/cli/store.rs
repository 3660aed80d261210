//! `ocibundle store ls|fsck|gc|inventory|add`.
use std::path::Path;

use clap::Subcommand;
use ocibundle::Store;

use super::human;

#[derive(Subcommand)]
pub enum StoreCmd {
    /// Pack local files or directories (model weights, a Hugging Face cache, Helm charts, a
    /// database dump) into an OCI artifact in the store: one uncompressed layer per file
    Add {
        /// The artifact's name (e.g. registry.lan/models/llama:q4)
        #[arg(value_name = "REF")]
        reference: String,
        /// Files, or directories taken whole (titles are paths below the directory)
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<std::path::PathBuf>,
        /// The manifest's artifactType (default application/vnd.ocibundle.files.v1;
        /// application/vnd.cncf.model.manifest.v1+json makes a ModelPack model)
        #[arg(long, value_name = "TYPE")]
        artifact_type: Option<String>,
        /// An annotation on the manifest (repeatable)
        #[arg(long = "annotation", value_name = "KEY=VALUE")]
        annotations: Vec<String>,
        #[arg(long)]
        json: bool,
    },
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
    /// Remove blobs no reference reaches, referrers whose image is gone, and partial downloads
    Gc {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(root: &Path, cmd: StoreCmd) -> anyhow::Result<i32> {
    if let StoreCmd::Add { reference, paths, artifact_type, annotations, json } = cmd {
        return add(root, &reference, &paths, artifact_type, &annotations, json);
    }
    let store = Store::open_existing(root)?;
    match cmd {
        StoreCmd::Add { .. } => unreachable!("handled above"),
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
            if !json && !report.orphaned_referrers.is_empty() {
                eprintln!("note: {} referrer reference(s) whose image is gone (store gc drops them), first: {}", report.orphaned_referrers.len(), report.orphaned_referrers[0]);
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
                for name in &r.removed_referrers {
                    println!("removed referrer {name} (its subject is gone)");
                }
                println!("removed {} blobs ({} bytes)", r.removed_blobs, r.removed_bytes);
                if r.removed_cache_bytes > 0 {
                    println!("removed {} bytes of cached analyses and chunk packs", r.removed_cache_bytes);
                }
            }
            Ok(0)
        }
    }
}

fn add(root: &Path, reference: &str, paths: &[std::path::PathBuf], artifact_type: Option<String>, annotations: &[String], json: bool) -> anyhow::Result<i32> {
    let reference: ocibundle::Reference = reference.parse()?;
    let mut ann = std::collections::BTreeMap::new();
    for a in annotations {
        let Some((k, v)) = a.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            anyhow::bail!("--annotation {a:?}: expected KEY=VALUE");
        };
        ann.insert(k.to_string(), v.to_string());
    }
    if let Some(t) = &artifact_type
        && (t.is_empty() || !t.contains('/') || t.chars().any(|c| c.is_whitespace() || c.is_control())) {
        anyhow::bail!("--artifact-type {t:?}: expected a media type such as application/vnd.example.model.v1");
    }
    let store = Store::open(root)?;
    let added = ocibundle::store::add(&store, &reference, paths, &ocibundle::store::AddOptions { artifact_type, annotations: ann })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&added)?);
    } else {
        for f in &added.files {
            println!("{} {} {}", f.digest, f.size, f.title);
        }
        println!("{} {} ({} files, {})", added.reference, added.digest, added.files.len(), human(added.bytes));
    }
    Ok(0)
}

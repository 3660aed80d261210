//! `ocibundle bundle` and `ocibundle size`: plan a bundle from the store (or any source given
//! with `--from`), then write it or report its exact size.
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use ocibundle::bundle::{self, format::parse_size, Bundle, Target};
use ocibundle::source::Source;
use ocibundle::Store;

use super::fetch::{collect_refs, ImageArgs, PullArgs};

#[derive(Args)]
pub struct Selection {
    #[command(flatten)]
    images: ImageArgs,
    /// Every reference in the store (or in the --from source)
    #[arg(long, conflicts_with_all = ["refs", "images"])]
    all: bool,
    /// Read images from SOURCE instead of the store: docker-archive:FILE (e.g. a directory of
    /// `docker save` tars, one --from at a time), oci:DIR[:REF], oci-archive:FILE[:REF], or a bundle
    #[arg(long, value_name = "SOURCE")]
    from: Option<PathBuf>,
    /// Volumes of at most SIZE bytes each (4G = 4e9, 4.7G, 25G, 4Gi = 2^32)
    #[arg(long, value_name = "SIZE")]
    split_size: Option<String>,
    /// Delta: leave out blobs that BASE (an older bundle, or a `store inventory` file) holds;
    /// with `--dedup chunks`, also every chunk of the base's layers
    #[arg(long, value_name = "BASE")]
    since: Option<PathBuf>,
    /// What is stored once: `chunks` (format 2: files and parts of files below the layer, each
    /// layer rebuilt byte for byte on the other side) or `blobs` (format 1: whole blobs; fast,
    /// no decompression, readable by ocibundle releases before format 2)
    #[arg(long, value_enum, default_value = "chunks")]
    dedup: Dedup,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dedup {
    Chunks,
    Blobs,
}

#[derive(Args)]
pub struct BundleArgs {
    /// Output file (`-` for stdout); with --split-size, FILE.001, FILE.002, ...
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    #[command(flatten)]
    sel: Selection,
    /// Fetch images missing from the store first
    #[arg(long)]
    fetch: bool,
    #[command(flatten)]
    pull: PullArgs,
    /// Replace an existing output
    #[arg(long)]
    force: bool,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SizeArgs {
    #[command(flatten)]
    sel: Selection,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// The references a selection names (normalised), or every one in the source with `--all`.
/// From a lock file: each image must be the one it pins (an optional one may be missing).
fn selected(source: &dyn Source, sel: &Selection) -> anyhow::Result<Vec<String>> {
    if let Some(lock) = sel.images.images.as_deref().map(super::read_lock).transpose()?.flatten() {
        if !sel.images.refs.is_empty() {
            bail!("--images names a lock file, which pins every image: pass no REF beside it");
        }
        let mut names = with_referrers(source, super::locked_names(source, &lock)?)?;
        let leave = super::unpinned_referrers(source, &lock)?;
        names.retain(|n| !leave.contains(n));
        return Ok(names);
    }
    let names = super::names_in(source, sel.all, &sel.images)?;
    if names.is_empty() {
        bail!("the {} holds no images", source.name());
    }
    with_referrers(source, names)
}

/// `names` and the referrers (signatures, SBOMs, attestations) the source holds for them.
fn with_referrers(source: &dyn Source, names: Vec<String>) -> anyhow::Result<Vec<String>> {
    // With the referrers (signatures, SBOMs, attestations) of the images named; a name the
    // source lacks is left for the plan to report with the others.
    let all = source.refs()?;
    let present: Vec<_> = names.iter().filter_map(|n| all.iter().find(|(r, _)| r == n).cloned()).collect();
    let mut out = names;
    for (n, _) in ocibundle::referrers::attach(source, &all, present)? {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}


fn plan(source: &dyn Source, sel: &Selection, names: &[String]) -> anyhow::Result<bundle::BundlePlan> {
    let base = sel.since.as_deref().map(bundle::load_base).transpose()?;
    let split = sel.split_size.as_deref().map(parse_size).transpose()?;
    Ok(bundle::plan(source, names, base.as_ref(), split)?)
}

/// The store, or the `--from` source over it.
fn sources(root: &Path, sel: &Selection) -> anyhow::Result<super::Sources> {
    if sel.from.is_none() {
        // Without --from the store must be there (a missing one is named as such).
        Store::open_existing(root)?;
    }
    super::Sources::open(root, sel.from.as_deref())
}

fn exists_any(target: &Target) -> Option<PathBuf> {
    match target {
        Target::Stdout | Target::Discard { .. } => None,
        Target::File(p) => p.exists().then(|| p.clone()),
        Target::Split { base, .. } => {
            let first = bundle::volumes::volume_path(base, 1);
            first.exists().then_some(first)
        }
    }
}

pub fn run_bundle(root: &Path, a: BundleArgs) -> anyhow::Result<i32> {
    if a.fetch && !a.sel.all {
        if a.sel.from.is_some() {
            bail!("--fetch fills the store from registries; it does not go with --from");
        }
        let store = Store::open(root)?;
        let have: Vec<String> = store.refs()?.into_iter().map(|e| e.name).collect();
        // From a lock: the pinned digests of the images the store lacks.
        if let Some(mut lock) = a.sel.images.images.as_deref().map(super::read_lock).transpose()?.flatten() {
            lock.entries.retain(|e| !have.contains(&e.reference.to_string()));
            if !lock.entries.is_empty() {
                a.pull.fetch_locked(root, &lock, false, !a.json)?;
            }
            return sources(root, &a.sel)?.with(|source| write_bundle(root, source, &a));
        }
        let names = collect_refs(&a.sel.images.refs, a.sel.images.images.as_deref())?;
        let missing: Vec<ocibundle::Reference> = names.into_iter().filter(|n| !have.contains(&n.to_string())).collect();
        if !missing.is_empty() {
            a.pull.fetch(root, &missing, !a.json)?;
        }
    }
    sources(root, &a.sel)?.with(|source| write_bundle(root, source, &a))
}

fn write_bundle(root: &Path, source: &dyn Source, a: &BundleArgs) -> anyhow::Result<i32> {
    let names = selected(source, &a.sel)?;
    let plan = plan(source, &a.sel, &names)?;
    let stdout = a.output.as_os_str() == "-";
    let target = match (&a.sel.split_size, stdout) {
        (Some(_), true) => bail!("--split-size needs a file name, not -"),
        (None, true) => Target::Stdout,
        (None, false) => Target::File(a.output.clone()),
        (Some(s), false) => Target::Split { base: a.output.clone(), size: parse_size(s)? },
    };
    if let Some(p) = exists_any(&target)
        && !a.force {
        bail!("{} exists (use --force to replace it)", p.display());
    }
    let (report, chunks) = write_any(root, source, &a.sel, &plan, target, !a.json && !stdout)?;
    let mut size = serde_json::to_value(plan.size_report())?;
    if let Some(c) = &chunks {
        add_chunk_figures(&mut size, c, report.bytes);
    }
    if a.json {
        let files: Vec<serde_json::Value> = report.files.iter().map(|(p, n)| serde_json::json!({"path": p, "bytes": n})).collect();
        let doc = serde_json::json!({
            "bundle_id": report.bundle_id, "bytes": report.bytes, "files": files,
            "images": names, "blobs": plan.index.entries.len(), "requires": plan.index.requires.len(),
            "base": plan.index.base, "size": size,
            "format_version": if chunks.is_some() { 2 } else { 1 },
        });
        let out = serde_json::to_string_pretty(&doc)?;
        if stdout { eprintln!("{out}") } else { println!("{out}") }
    } else if !stdout {
        for (p, n) in &report.files {
            println!("{} {n}", p.display());
        }
        println!(
            "{} images{}, {} blobs, {} bytes (sum per image {}, {} saved by dedup{})",
            names.iter().filter(|n| !ocibundle::referrers::is_referrer_ref(n)).count(),
            match names.iter().filter(|n| ocibundle::referrers::is_referrer_ref(n)).count() {
                0 => String::new(),
                k => format!(" (+{k} referrer references)"),
            },
            plan.index.entries.len(),
            report.bytes,
            size["sum_per_image_bytes"].as_u64().unwrap_or(0),
            size["sum_per_image_bytes"].as_u64().unwrap_or(0).saturating_sub(report.bytes),
            if plan.index.requires.is_empty() { String::new() } else { format!("; {} blobs left to the base", plan.index.requires.len()) }
        );
    }
    Ok(0)
}

pub fn run_size(root: &Path, a: SizeArgs) -> anyhow::Result<i32> {
    // `size FILE` describes an existing bundle.
    if let [one] = a.sel.images.refs.as_slice() {
        let p = Path::new(one);
        if a.sel.images.images.is_none() && (p.is_file() || bundle::volumes::volume_path(p, 1).is_file()) {
            let b = Bundle::open(p)?;
            return print_size(&existing_report(&b), a.json);
        }
    }
    sources(root, &a.sel)?.with(|source| {
        let names = selected(source, &a.sel)?;
        let plan = plan(source, &a.sel, &names)?;
        let mut v = serde_json::to_value(plan.size_report())?;
        if a.sel.dedup == Dedup::Chunks {
            // Exact only by doing it: the analysis (cached in the store) and the packing, into nothing.
            let split = a.sel.split_size.as_deref().map(parse_size).transpose()?;
            let (report, c) = write_any(root, source, &a.sel, &plan, Target::Discard { split }, false)?;
            add_chunk_figures(&mut v, &c.expect("chunks"), report.bytes);
        }
        print_size(&v, a.json)
    })
}

/// Writes the planned bundle in the chosen format; the chunk figures for format 2.
fn write_any(root: &Path, source: &dyn Source, sel: &Selection, plan: &bundle::BundlePlan, target: Target, progress: bool) -> anyhow::Result<(bundle::writer::WriteReport, Option<bundle::chunked::ChunkStats>)> {
    if sel.dedup == Dedup::Blobs {
        return Ok((bundle::writer::write(source, plan, target, progress)?, None));
    }
    let store = root.join("oci-layout").exists().then(|| Store::open_existing(root).ok()).flatten();
    let base = match &sel.since {
        Some(p) => Some(bundle::chunked::chunk_base(p, source, store.as_ref())?),
        None => None,
    };
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let opts = bundle::chunked::Options { jobs, cache: store.as_ref(), base: base.as_ref(), progress };
    let (r, c) = bundle::chunked::write(source, plan, target, &opts)?;
    Ok((r, Some(c)))
}

/// Format 2's figures beside the blob-level ones: the bundle's real size, what went below the
/// layer and what went whole (per producer, and why).
fn add_chunk_figures(v: &mut serde_json::Value, c: &bundle::chunked::ChunkStats, bytes: u64) {
    v["bundle_bytes"] = bytes.into();
    v["chunks"] = serde_json::to_value(c).unwrap_or_default();
}

/// The size figures of a bundle already written, from its index.
fn existing_report(b: &Bundle) -> serde_json::Value {
    let walk = b.walk_images(None);
    let mut users = std::collections::BTreeMap::new();
    for (_, blobs, _) in &walk {
        for d in blobs.keys() {
            *users.entry(d.clone()).or_insert(0usize) += 1;
        }
    }
    let images: Vec<serde_json::Value> = walk
        .iter()
        .map(|(name, blobs, _)| {
            let total: u64 = blobs.values().map(|d| d.size).sum();
            let unique: u64 = blobs.values().filter(|d| users[&d.digest] == 1).map(|d| d.size).sum();
            serde_json::json!({"reference": name, "total_bytes": total, "unique_bytes": unique, "shared_bytes": total - unique, "carried_bytes": blobs.values().filter(|d| b.entry(&d.digest).is_some()).map(|d| d.size).sum::<u64>()})
        })
        .collect();
    let carried: u64 = b.index.entries.iter().map(|e| e.size).sum();
    let vol_headers = if b.index.volumes > 1 || b.index.volume_size > 0 { b.index.volumes as u64 * bundle::format::VOLUME_HEADER_LEN } else { 0 };
    let mut v = serde_json::json!({
        "bundle_bytes": b.vols.len + vol_headers,
        "volumes": b.index.volumes,
        "sum_per_image_bytes": images.iter().map(|i| i["total_bytes"].as_u64().unwrap_or(0)).sum::<u64>(),
        "dedup_bytes": carried + b.index.requires.iter().map(|r| r.size).sum::<u64>(),
        "carried_bytes": carried,
        "carried_blobs": b.index.entries.len(),
        "required_blobs": b.index.requires.len(),
        "images": images,
    });
    if b.index.version == bundle::format::VERSION_CHUNKED {
        // Format 2: what went below the layer and what went whole, as `bundle --json` reports it
        // (chunks left to a delta's base are not counted here: the index does not list them).
        let recipes = || b.index.entries.iter().filter_map(|e| e.recipe.as_ref().map(|r| (e, r)));
        let packs = || b.index.entries.iter().filter_map(|e| e.pack.as_ref().map(|p| (e, p)));
        v["chunks"] = serde_json::json!({
            "layers_rebuilt": recipes().count(),
            "layer_bytes_rebuilt": recipes().map(|(_, r)| r.layer_size).sum::<u64>(),
            "layers_raw": b.index.raw.len(),
            "raw_bytes": b.index.raw.iter().map(|r| r.size).sum::<u64>(),
            "chunks": packs().map(|(_, p)| p.chunks.len() as u64).sum::<u64>(),
            "chunk_bytes": packs().map(|(_, p)| p.chunks.iter().map(|c| c.1 as u64).sum::<u64>()).sum::<u64>(),
            "packed_bytes": packs().map(|(e, _)| e.size).sum::<u64>(),
            "recipe_bytes": recipes().map(|(e, _)| e.size).sum::<u64>(),
        });
        v["raw"] = serde_json::to_value(&b.index.raw).unwrap_or_default();
    }
    v
}

fn print_size(v: &serde_json::Value, json: bool) -> anyhow::Result<i32> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(0);
    }
    println!("{:<60} {:>14} {:>14} {:>14}", "IMAGE", "TOTAL", "UNIQUE", "SHARED");
    for i in v["images"].as_array().into_iter().flatten() {
        println!(
            "{:<60} {:>14} {:>14} {:>14}",
            i["reference"].as_str().unwrap_or(""),
            i["total_bytes"].as_u64().unwrap_or(0),
            i["unique_bytes"].as_u64().unwrap_or(0),
            i["shared_bytes"].as_u64().unwrap_or(0)
        );
    }
    println!("sum per image: {} bytes", v["sum_per_image_bytes"]);
    println!("deduplicated:  {} bytes", v["dedup_bytes"]);
    println!("bundle:        {} bytes in {} file(s)", v["bundle_bytes"], v["volumes"]);
    Ok(0)
}

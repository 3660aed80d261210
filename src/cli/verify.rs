//! `ocibundle verify`: re-hash every blob of a bundle (or of a docker-archive or OCI layout),
//! check that every image is complete and well formed, and that the required images are there.
use std::path::{Path, PathBuf};

use clap::Args;
use ocibundle::bundle::Bundle;
use ocibundle::{Reference, Store};

#[derive(Args)]
pub struct VerifyArgs {
    /// The bundle (or any of its volumes, or - for stdin); or docker-archive:FILE,
    /// oci:DIR[:REF], oci-archive:FILE[:REF]: every image checked (digests, sizes, diff_ids)
    #[arg(value_name = "SOURCE")]
    file: PathBuf,
    /// Also inflate every compressed layer and check it against its config's diff_id
    #[arg(long)]
    deep: bool,
    /// References that must be in the bundle, one a line; a leading `?` marks an optional one.
    /// A lock file (`ocibundle lock`) also pins the digest each must have
    #[arg(long, value_name = "LIST")]
    images: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sign: super::SignArgs,
}

pub fn run(root: &Path, a: VerifyArgs) -> anyhow::Result<i32> {
    // The list first: a bad line is named before a long check, not after it.
    let list = a.images.as_deref().map(super::read_marked_list).transpose()?;
    let lock = a.images.as_deref().map(super::read_lock).transpose()?.flatten();
    let archive = a.file.to_str().filter(|s| ocibundle::transport::is_archive(s));
    // The names and descriptors the source holds (none for a stream), for a lock's pins.
    let mut held: Option<Vec<(String, ocibundle::image::Descriptor)>> = None;
    // Signatures are checked against each image's own name, with no network.
    let gate = |source: &dyn ocibundle::source::Source| -> anyhow::Result<Option<Vec<ocibundle::signature::ImageVerdict>>> {
        let images = source.refs()?;
        a.sign.gate(source, &images, &|n| n.to_string(), true)
    };
    // A version 2 lock's referrer pins: those the source lacks (a failure, a warning for an
    // optional image) and those it carries that the lock does not pin (a warning).
    let mut missing_pins: Vec<String> = Vec::new();
    let pins = |source: &dyn ocibundle::source::Source, missing: &mut Vec<String>| -> anyhow::Result<()> {
        let Some(lock) = lock.as_ref().filter(|l| l.pins_referrers) else { return Ok(()) };
        let holder = format!("{} does not carry it", source.name());
        for (e, name, c) in ocibundle::referrers::pins::held_against(source, lock)? {
            for p in &c.missing {
                let err = ocibundle::referrers::pins::missing_error(&e.reference, p, &holder);
                if e.optional { eprintln!("warning: optional image: {err}") } else { missing.push(err.to_string()) }
            }
            if let Some(first) = c.extra.first() {
                eprintln!("warning: {name}: {} carries {} referrer(s) the lock does not pin (first: {first})", source.name(), c.extra.len());
            }
        }
        Ok(())
    };
    let (mut report, name, bundle_id, verdicts) = match super::stream_input(&a.file)? {
        _ if archive.is_some() => {
            let opened = ocibundle::transport::open(&a.file)?;
            let source = opened.source(None);
            let images = source.refs()?;
            let r = ocibundle::validate::check(&*source, &images, ocibundle::validate::Options { deep: a.deep });
            let v = if r.problems.is_empty() { gate(&*source)? } else { None };
            if r.problems.is_empty() {
                pins(&*source, &mut missing_pins)?;
            }
            held = Some(images);
            (r, source.name(), String::new(), v)
        }
        Some((reader, name)) => {
            if !a.sign.keys.is_empty() || a.sign.require_signed {
                anyhow::bail!("{name}: signatures are checked in a bundle file, not a stream (verify the file itself with --key)");
            }
            match ocibundle::bundle::stream::open(reader, &name, &std::env::temp_dir())? {
                ocibundle::bundle::stream::Opened::Walk(r) => (ocibundle::bundle::stream::verify(r, &name)?, name, String::new(), None),
                ocibundle::bundle::stream::Opened::Spooled(f) => {
                    let mut b = Bundle::open(f.path())?;
                    b.name = name.clone();
                    (b.verify(None), name, b.index.bundle_id.to_string(), None)
                }
            }
        }
        None => {
            let b = Bundle::open(&a.file)?;
            held = Some(b.index.images.iter().map(|i| (i.reference.clone(), i.descriptor.clone())).collect());
            // A delta's base blobs must be in the store it will be imported into.
            // A format 2 delta's chunks left to its base are cut from that store's layers.
            let store = if b.index.requires.is_empty() && b.index.base_layers.is_empty() { None } else { Store::open_existing(root).ok() };
            let mut r = b.verify(store.as_ref());
            if let Some(s) = &store
                && r.problems.is_empty()
                && !b.index.base_layers.is_empty() {
                ocibundle::bundle::base::attach(&b, s)?;
            }
            let source = ocibundle::source::BundleOverStore { bundle: &b, store: store.as_ref() };
            if a.deep && r.problems.is_empty() {
                // Every image as any source's are checked: diff_ids, every layer inflated.
                let images = ocibundle::source::Source::refs(&source)?;
                r.problems = ocibundle::validate::check(&source, &images, ocibundle::validate::Options { deep: true }).problems;
            }
            // Signatures only over blobs that checked out (the gate reads them again, verified).
            let v = if r.problems.is_empty() { gate(&source)? } else { None };
            if r.problems.is_empty() {
                pins(&source, &mut missing_pins)?;
            }
            (r, b.name.clone(), b.index.bundle_id.to_string(), v)
        }
    };
    let unsigned: Vec<String> = verdicts.iter().flatten().filter(|v| v.verdict != ocibundle::signature::Verdict::Signed).map(|v| v.line()).collect();
    let mut missing_required = Vec::new();
    let mut missing_optional = Vec::new();
    if let Some(list) = list {
        for (optional, r) in list {
            let name = r.parse::<Reference>()?.to_string();
            if !report.images.contains(&name) {
                if optional { missing_optional.push(name) } else { missing_required.push(name) }
            }
        }
        // A lock also pins what each name must be.
        if let Some(lock) = &lock {
            match &held {
                Some(held) => {
                    for e in &lock.entries {
                        if let Some((_, d)) = held.iter().find(|(n, _)| *n == e.reference.to_string()) {
                            ocibundle::lock::check(e, d, &name)?;
                        }
                    }
                }
                None => eprintln!("note: {name}: read as a stream, so only the names of the lock are checked, not their digests"),
            }
        }
    }
    for m in &missing_optional {
        eprintln!("warning: optional image {m} is not in {}", name);
    }
    if a.json {
        let doc = serde_json::json!({
            "bundle": name, "source": name, "bundle_id": bundle_id, "ok": report.problems.is_empty() && missing_required.is_empty() && missing_pins.is_empty(),
            "blobs_checked": report.blobs_checked, "bytes_checked": report.bytes_checked, "images": report.images,
            "problems": report.problems, "missing_required": missing_required, "missing_optional": missing_optional, "missing_referrers": missing_pins,
            "signatures": verdicts,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for p in &report.problems {
            println!("bad: {p}");
        }
        for m in &missing_required {
            println!("missing: required image {m}");
        }
        for m in &missing_pins {
            println!("missing: {m}");
        }
        for v in verdicts.iter().flatten() {
            println!("{}", v.line());
        }
    }
    if let Some(first) = report.problems.first() {
        anyhow::bail!("{}: {} problem(s); first: {first}", name, report.problems.len());
    }
    if a.sign.require_signed && !unsigned.is_empty() {
        ocibundle::signature::require_signed(verdicts.as_deref().unwrap_or_default())?;
    }
    if !missing_required.is_empty() {
        anyhow::bail!("{}: required image(s) missing: {}", name, missing_required.join(", "));
    }
    if let Some(first) = missing_pins.first() {
        anyhow::bail!("{}: {} pinned referrer(s) missing; first: {first}", name, missing_pins.len());
    }
    if !a.json {
        report.images.sort();
        println!("ok: {} blobs ({} bytes) verified; {} images complete", report.blobs_checked, report.bytes_checked, report.images.len());
    }
    Ok(0)
}

//! `ocibundle inspect`: what a bundle holds (images, platforms, layers, sharing) from its index
//! and manifests, without reading layer data.
use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use ocibundle::bundle::Bundle;
use ocibundle::image::{ConfigInfo, Manifest, ManifestKind};
use ocibundle::limits;
use ocibundle::referrers;

#[derive(Args)]
pub struct InspectArgs {
    /// The bundle (or any of its volumes)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: InspectArgs) -> anyhow::Result<i32> {
    let b = Bundle::open(&a.file)?;
    let walk = b.walk_images(None);
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut images = Vec::new();
    let all = ocibundle::source::Source::refs(&b)?;
    for (name, blobs, _) in &walk {
        for (d, desc) in blobs {
            users.entry(d.to_string()).or_default().push(name.clone());
            sizes.insert(d.to_string(), desc.size);
        }
        // Referrers are listed under their image, not as images.
        if referrers::is_referrer_ref(name) {
            continue;
        }
        let img = b.index.images.iter().find(|i| &i.reference == name).expect("walked image");
        let carried = referrers::attach(&b, &all, vec![(name.clone(), img.descriptor.clone())])?;
        let listed = referrers::list(&b, &carried[1..])?;
        let mut manifests = Vec::new();
        for desc in blobs.values() {
            let Some(_) = b.entry(&desc.digest) else { continue };
            if !(ocibundle::image::is_manifest_type(&desc.media_type)) {
                continue;
            }
            let m = Manifest::parse(b.read_small(&desc.digest, limits::MANIFEST)?, Some(&desc.media_type), name)?;
            let ManifestKind::Image(im) = m.kind else { continue };
            let platform = b
                .read_small(&im.config.digest, limits::CONFIG)
                .ok()
                .and_then(|c| serde_json::from_slice::<ConfigInfo>(&c).ok())
                .map(|c| c.platform().to_string())
                .unwrap_or_else(|| "unknown".into());
            manifests.push(serde_json::json!({
                "digest": desc.digest, "media_type": desc.media_type, "platform": platform,
                "config": im.config.digest,
                "layers": im.layers.iter().map(|l| serde_json::json!({"digest": l.digest, "size": l.size, "media_type": l.media_type})).collect::<Vec<_>>(),
            }));
        }
        images.push(serde_json::json!({
            "reference": name, "digest": img.descriptor.digest, "media_type": img.descriptor.media_type,
            "bytes": blobs.values().map(|d| d.size).sum::<u64>(), "manifests": manifests,
            "referrers": listed,
        }));
    }
    let shared: Vec<serde_json::Value> = users
        .iter()
        .filter(|(_, u)| u.len() > 1)
        .map(|(d, u)| serde_json::json!({"digest": d, "size": sizes[d], "images": u}))
        .collect();
    if a.json {
        let doc = serde_json::json!({
            "bundle": b.name, "bundle_id": b.index.bundle_id, "format_version": b.index.version,
            "volumes": b.index.volumes, "blobs": b.index.entries.len(), "blob_bytes": b.index.entries.iter().map(|e| e.size).sum::<u64>(),
            "base": b.index.base, "requires": b.index.requires, "images": images, "shared": shared,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(0);
    }
    println!("bundle {} (format {}, id {}), {} blobs", b.name, b.index.version, b.index.bundle_id.short(), b.index.entries.len());
    if let Some(base) = &b.index.base {
        println!("delta against {} {} ({} blobs left to it)", base.kind, &base.id[..16.min(base.id.len())], b.index.requires.len());
    }
    for i in &images {
        println!("{} {} ({} bytes)", i["reference"].as_str().unwrap_or(""), i["digest"].as_str().unwrap_or(""), i["bytes"]);
        for m in i["manifests"].as_array().into_iter().flatten() {
            println!("  {} {}", m["platform"].as_str().unwrap_or(""), m["digest"].as_str().unwrap_or(""));
            for l in m["layers"].as_array().into_iter().flatten() {
                let d = l["digest"].as_str().unwrap_or("");
                let n = users.get(d).map(|u| u.len()).unwrap_or(1);
                let tag = if n > 1 { format!(" (shared by {n} images)") } else { String::new() };
                println!("    {} {:>12}{tag}", d, l["size"]);
            }
        }
        for r in i["referrers"].as_array().into_iter().flatten() {
            let short = |k: &str| r[k].as_str().unwrap_or("").chars().take(19).collect::<String>();
            println!("  referrer {} {} {:>12} (of {})", r["artifact_type"].as_str().unwrap_or(""), r["digest"].as_str().unwrap_or(""), r["size"], short("subject"));
        }
    }
    Ok(0)
}

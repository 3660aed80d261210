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
    let below = below_the_layer(&b, &walk)?;
    if let Some(per) = below.as_ref().map(|v| v["images"].clone()) {
        for i in &mut images {
            let n = i["reference"].as_str().unwrap_or("").to_string();
            if let Some(f) = per.get(&n) {
                i["below_the_layer"] = f.clone();
            }
        }
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
            "below_the_layer": below.as_ref().map(|v| v["bundle"].clone()),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(0);
    }
    println!("bundle {} (format {}, id {}), {} blobs", b.name, b.index.version, b.index.bundle_id.short(), b.index.entries.len());
    if let Some(base) = &b.index.base {
        println!("delta against {} {} ({} blobs left to it)", base.kind, &base.id[..16.min(base.id.len())], b.index.requires.len());
    }
    if let Some(v) = &below {
        let t = &v["bundle"];
        println!(
            "below the layer: {} chunks ({} bytes) in {} bytes of packs, {} bytes of recipes; {} layer(s) rebuilt, {} carried whole ({} bytes); {} bytes saved against whole-blob dedup",
            t["chunks"], t["chunk_bytes"], t["packed_bytes"], t["recipe_bytes"], t["layers_rebuilt"], t["layers_raw"], t["raw_bytes"], t["saved_bytes"]
        );
        for r in t["raw"].as_array().into_iter().flatten() {
            // The reason names the producer first.
            println!("  carried whole: {} {} ({})", r["digest"].as_str().unwrap_or(""), r["size"], r["why"].as_str().unwrap_or(""));
        }
    }
    for i in &images {
        println!("{} {} ({} bytes)", i["reference"].as_str().unwrap_or(""), i["digest"].as_str().unwrap_or(""), i["bytes"]);
        if let Some(f) = i.get("below_the_layer") {
            println!("  below the layer: {} chunk bytes, {} unique to it, {} shared, {} bytes of layers carried whole", f["chunk_bytes"], f["unique_chunk_bytes"], f["shared_chunk_bytes"], f["raw_bytes"]);
        }
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

/// Format 2's figures: for the bundle, what went into chunk packs, recipes and whole layers,
/// and what that saved against whole-blob dedup; for each image, the chunk bytes its layers
/// use, how many of them no other image uses, and its layers carried whole. None for format 1.
fn below_the_layer(b: &Bundle, walk: &[ocibundle::bundle::reader::ImageWalk]) -> anyhow::Result<Option<serde_json::Value>> {
    use std::collections::{BTreeSet, HashMap};
    if b.chunks.is_none() {
        return Ok(None);
    }
    // Every chunk's users (images) and length.
    let mut chunk_users: HashMap<[u8; 32], (u32, BTreeSet<&str>)> = HashMap::new();
    let mut per_layer: BTreeMap<ocibundle::Digest, Vec<[u8; 32]>> = BTreeMap::new();
    for (name, blobs, _) in walk {
        for d in blobs.keys() {
            if !per_layer.contains_key(d) {
                let Some(r) = b.recipe(d)? else { continue };
                per_layer.insert(d.clone(), r.chunks().map(|(s, n)| {
                    chunk_users.entry(*s).or_insert((n, BTreeSet::new()));
                    *s
                }).collect());
            }
            for s in per_layer.get(d).into_iter().flatten() {
                chunk_users.get_mut(s).expect("listed").1.insert(name.as_str());
            }
        }
    }
    let raw: BTreeMap<&ocibundle::Digest, &ocibundle::bundle::format::RawLayer> = b.index.raw.iter().map(|r| (&r.digest, r)).collect();
    let mut images = serde_json::Map::new();
    for (name, blobs, _) in walk {
        let mut seen = BTreeSet::new();
        let (mut all, mut unique) = (0u64, 0u64);
        for d in blobs.keys() {
            for s in per_layer.get(d).into_iter().flatten() {
                if seen.insert(*s) {
                    let (n, users) = &chunk_users[s];
                    all += *n as u64;
                    if users.len() == 1 {
                        unique += *n as u64;
                    }
                }
            }
        }
        let raw_bytes: u64 = blobs.keys().filter_map(|d| raw.get(d)).map(|r| r.size).sum();
        images.insert(name.clone(), serde_json::json!({"chunk_bytes": all, "unique_chunk_bytes": unique, "shared_chunk_bytes": all - unique, "raw_bytes": raw_bytes}));
    }
    let of_kind = |k: u8| b.index.entries.iter().filter(|e| e.kind == k).map(|e| e.size).sum::<u64>();
    let (packed, recipes) = (of_kind(ocibundle::bundle::format::KIND_PACK), of_kind(ocibundle::bundle::format::KIND_RECIPE));
    let rebuilt: Vec<&ocibundle::bundle::format::RecipeInfo> = b.index.entries.iter().filter_map(|e| e.recipe.as_ref()).collect();
    let rebuilt_bytes: u64 = rebuilt.iter().map(|r| r.layer_size).sum();
    let chunk_bytes: u64 = b.index.entries.iter().filter_map(|e| e.pack.as_ref()).map(|p| p.raw_size).sum();
    let chunks: usize = b.index.entries.iter().filter_map(|e| e.pack.as_ref()).map(|p| p.chunks.len()).sum();
    Ok(Some(serde_json::json!({
        "bundle": {
            "chunks": chunks, "chunk_bytes": chunk_bytes, "packed_bytes": packed, "recipe_bytes": recipes,
            "layers_rebuilt": rebuilt.len(), "layer_bytes_rebuilt": rebuilt_bytes,
            "layers_raw": b.index.raw.len(), "raw_bytes": b.index.raw.iter().map(|r| r.size).sum::<u64>(),
            "saved_bytes": rebuilt_bytes.saturating_sub(packed + recipes),
            "raw": b.index.raw,
        },
        "images": images,
    })))
}

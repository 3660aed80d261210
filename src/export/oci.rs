//! OCI image layout export (a directory, or one tar of it): blobs and manifests byte-identical
//! to the registry's, indexes kept, `index.json` naming every reference.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::Path;

use super::tarw::TarWriter;
use super::{reachable, refuse_existing, ExportOptions, ExportReport, ExportedImage, Format, Sink};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::{media, ConfigInfo, Descriptor, ManifestKind};
use crate::limits;
use crate::reference::Reference;
use crate::source::Source;
use crate::store::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_INDEX_DIGEST, ANNOTATION_REF_NAME};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The `index.json` of an export: one entry per reference, sorted, with both name annotations.
fn index_json(images: &[(String, Descriptor)]) -> Vec<u8> {
    let mut entries: Vec<Descriptor> = Vec::new();
    let mut sorted: Vec<&(String, Descriptor)> = images.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, desc) in sorted {
        let mut d = desc.clone();
        let ann = d.annotations.get_or_insert_with(BTreeMap::new);
        ann.remove(ANNOTATION_INDEX_DIGEST);
        ann.insert(ANNOTATION_REF_NAME.into(), name.clone());
        ann.insert(ANNOTATION_CONTAINERD_NAME.into(), name.clone());
        entries.push(d);
    }
    let doc = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": entries});
    let mut v = serde_json::to_vec_pretty(&doc).expect("json");
    v.push(b'\n');
    v
}

fn describe(source: &dyn Source, name: &str, desc: &Descriptor, blobs: &[Descriptor]) -> Result<ExportedImage> {
    // The first image manifest's config stands for the image (an index's first child).
    let mut image_id = None;
    let mut layers = 0;
    let mut platform = String::from("multi");
    for b in blobs {
        if crate::image::is_manifest_type(&b.media_type)
            && let ManifestKind::Image(im) = super::manifest(source, b, name)?.kind
            && image_id.is_none() {
            image_id = Some(im.config.digest.clone());
            layers = im.layers.len();
            if crate::image::is_manifest_type(&desc.media_type) {
                let cfg: ConfigInfo = serde_json::from_slice(&source.read_small(&im.config, limits::CONFIG)?).unwrap_or_default();
                platform = cfg.platform().to_string();
            }
        }
    }
    let r: Reference = name.parse()?;
    Ok(ExportedImage {
        reference: name.to_string(),
        image_id: image_id.ok_or_else(|| Error::Other(format!("{name}: no image manifest")))?,
        repo_tags: r.tag.iter().map(|t| format!("{}/{}:{t}", r.registry, r.repository)).collect(),
        platform,
        manifest_digest: desc.digest.clone(),
        layers,
    })
}

pub fn write(source: &dyn Source, images: &[(String, Descriptor)], opts: &ExportOptions) -> Result<ExportReport> {
    // Plan: every blob once, in a fixed order (images by name, blobs depth-first).
    let mut order: Vec<Descriptor> = Vec::new();
    let mut seen: BTreeSet<Digest> = BTreeSet::new();
    let mut reports = Vec::new();
    let mut sorted: Vec<&(String, Descriptor)> = images.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, desc) in sorted {
        let blobs = reachable(source, name, desc)?;
        reports.push(describe(source, name, desc, &blobs)?);
        for b in blobs {
            if seen.insert(b.digest.clone()) {
                order.push(b);
            }
        }
    }
    let index = index_json(images);
    let bytes = match (opts.format, &opts.output) {
        (Format::OciLayout, Some(dir)) => write_dir(source, &order, &index, dir, opts.force)?,
        (Format::OciLayout, None) => return Err(Error::Other("--oci-layout needs a directory".into())),
        _ => write_tar(source, &order, &index, opts)?,
    };
    let output = opts.output.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "-".into());
    Ok(ExportReport { output, format: if opts.format == Format::OciLayout { "oci-layout" } else { "oci-archive" }.into(), bytes, images: reports, notes: vec![] })
}

fn write_tar(source: &dyn Source, order: &[Descriptor], index: &[u8], opts: &ExportOptions) -> Result<u64> {
    let sink = Sink::create(&opts.output, opts.force)?;
    let mut tw = TarWriter::new(sink);
    let res = (|| -> Result<()> {
        tw.add_bytes("oci-layout", OCI_LAYOUT).map_err(|e| Error::Other(format!("writing the archive: {e}")))?;
        for b in order {
            let mut r = source.blob(b)?;
            tw.add_reader(&format!("blobs/sha256/{}", b.digest.hex()), b.size, &mut r)
                .map_err(|e| Error::Other(format!("blob {}: {e}", b.digest)))?;
        }
        tw.add_bytes("index.json", index).map_err(|e| Error::Other(format!("writing the archive: {e}")))?;
        Ok(())
    })();
    let res = res.and_then(|_| tw.end().map_err(|e| Error::Other(format!("writing the archive: {e}"))));
    let written = tw.written;
    match res {
        Ok(()) => {
            tw.into_inner().commit()?;
            Ok(written)
        }
        Err(e) => {
            tw.into_inner().abort();
            Err(e)
        }
    }
}

fn write_dir(source: &dyn Source, order: &[Descriptor], index: &[u8], dir: &Path, force: bool) -> Result<u64> {
    refuse_existing(dir, force)?;
    let tmp = crate::litter::claim_temp(dir);
    let _ = fs::remove_dir_all(&tmp);
    let res = (|| -> Result<u64> {
        let blobs = tmp.join("blobs/sha256");
        fs::create_dir_all(&blobs).at(dir)?;
        // Blobs are copied (and verified) on every core, largest first.
        let mut queue: Vec<&Descriptor> = order.iter().collect();
        queue.sort_by_key(|d| std::cmp::Reverse(d.size));
        // Errors name the final path: the temp one is gone by the time the user reads them.
        let shown = dir.join("blobs/sha256");
        crate::pool::try_each(&queue, |b, _| copy_blob(source, b, &blobs, &shown))?;
        let total: u64 = order.iter().map(|b| b.size).sum();
        fs::write(tmp.join("oci-layout"), OCI_LAYOUT).at(dir.join("oci-layout"))?;
        let mut f = fs::File::create(tmp.join("index.json")).at(dir.join("index.json"))?;
        f.write_all(index).at(dir.join("index.json"))?;
        f.sync_all().at(dir.join("index.json"))?;
        fs::File::open(&blobs).and_then(|d| d.sync_all()).at(&shown)?;
        Ok(total + index.len() as u64)
    })();
    match res {
        Ok(total) => {
            if dir.exists() {
                let old = dir.with_extension(format!("old-{}", std::process::id()));
                fs::rename(dir, &old).at(dir)?;
                fs::rename(&tmp, dir).at(dir)?;
                let _ = fs::remove_dir_all(&old);
            } else {
                fs::rename(&tmp, dir).at(dir)?;
            }
            Ok(total)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Copies one blob into `dir/<hex>`, verified on the way, durable when this returns; errors name
/// `shown/<hex>` (where it will be once the layout is renamed into place).
fn copy_blob(source: &dyn Source, b: &Descriptor, dir: &Path, shown: &Path) -> Result<()> {
    let path = dir.join(b.digest.hex());
    let shown = shown.join(b.digest.hex());
    let mut f = fs::File::create(&path).at(&shown)?;
    crate::source::copy_verified(source, b, &mut f, &shown, &|_| {})?;
    f.sync_data().at(&shown)?;
    crate::writeback::drop_synced(&f);
    Ok(())
}

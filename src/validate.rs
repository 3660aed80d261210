//! The one correctness check of images in any `Source`: every blob an image reaches is there,
//! has its descriptor's size and hashes to its digest; every manifest parses; every image's
//! config lists one diff_id per layer, an uncompressed layer's digest is its diff_id, and (deep)
//! every compressed layer inflates to its diff_id. `verify` runs it on archives and layouts,
//! the bundle check and the tests use it, so they agree on what a good image is.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use crate::codec::{self, Compression};
use crate::digest::{DiffId, Digest};
use crate::error::{Error, Result};
use crate::graph;
use crate::image::{is_config_type, is_layer_type, Descriptor, Manifest, ManifestKind};
use crate::limits;
use crate::source::Source;

/// One thing wrong with one blob, and the images that need it.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Problem {
    pub digest: String,
    pub images: Vec<String>,
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blob {}: {}", self.digest, self.detail)?;
        if !self.images.is_empty() {
            write!(f, " (used by {})", self.images.join(", "))?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Default)]
pub struct Report {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub images: Vec<String>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Inflate every compressed layer and check it against its diff_id (reads and decompresses
    /// everything; without it only uncompressed layers, whose digest is their diff_id, are).
    pub deep: bool,
}

/// A layer and the diff_id its config gives it.
struct LayerCheck {
    desc: Descriptor,
    diff_id: DiffId,
}

/// Checks every image of `images` in `source`. Content blobs are hashed on every core, each
/// once however many images share it; problems name the blob and every image that needs it.
pub fn check(source: &dyn Source, images: &[(String, Descriptor)], opts: Options) -> Report {
    let mut report = Report { images: images.iter().map(|(n, _)| n.clone()).collect(), ..Default::default() };
    let mut users: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    let mut problems: BTreeMap<Digest, String> = BTreeMap::new();
    let mut content: BTreeMap<Digest, Descriptor> = BTreeMap::new();
    let mut layers: BTreeMap<Digest, LayerCheck> = BTreeMap::new();
    for (name, root) in images {
        let _ = graph::walk::<std::convert::Infallible>(root, |d| {
            users.entry(d.digest.clone()).or_default().push(name.clone());
            if problems.contains_key(&d.digest) {
                return Ok(None);
            }
            if !source.has(&d.digest) {
                problems.insert(d.digest.clone(), format!("missing from the {}", source.name()));
                return Ok(None);
            }
            if !graph::is_node(d) {
                content.entry(d.digest.clone()).or_insert_with(|| d.bare());
                return Ok(None);
            }
            match node(source, d, name, &mut layers) {
                Ok(m) => {
                    report.blobs_checked += 1;
                    report.bytes_checked += d.size;
                    Ok(Some(m))
                }
                Err(e) => {
                    problems.insert(d.digest.clone(), e.to_string());
                    Ok(None)
                }
            }
        });
    }
    // Every content blob once, largest first, hashed (and inflated where asked) in parallel.
    let mut todo: Vec<&Descriptor> = content.values().filter(|d| !problems.contains_key(&d.digest)).collect();
    todo.sort_by_key(|d| std::cmp::Reverse(d.size));
    let results = crate::pool::map_all(&todo, |d, _| blob(source, d, layers.get(&d.digest), opts));
    for (d, r) in todo.iter().zip(results) {
        report.blobs_checked += 1;
        report.bytes_checked += d.size;
        if let Err(e) = r {
            problems.insert(d.digest.clone(), e.to_string());
        }
    }
    for (d, detail) in problems {
        let mut images = users.remove(&d).unwrap_or_default();
        images.dedup();
        report.problems.push(Problem { digest: d.to_string(), images, detail });
    }
    report
}

/// Reads and checks one manifest or index; for an image manifest, checks its config's diff_ids
/// against its layers and notes which diff_id each layer must have.
fn node(source: &dyn Source, d: &Descriptor, name: &str, layers: &mut BTreeMap<Digest, LayerCheck>) -> Result<Manifest> {
    let what = format!("{name}: manifest {}", d.digest);
    let m = Manifest::parse(source.read_small(d, limits::MANIFEST)?, Some(&d.media_type), &what)?;
    if let ManifestKind::Image(im) = &m.kind
        && is_config_type(&im.config.media_type) {
        if !source.has(&im.config.digest) {
            // The walk reports the config itself as missing.
            return Ok(m);
        }
        let config = source.read_small(&im.config, limits::CONFIG)?;
        let diff_ids = crate::image::diff_ids(&config, &format!("{name}: config {}", im.config.digest))?;
        if diff_ids.len() != im.layers.len() {
            return Err(Error::Other(format!("{name}: {} layers but its config lists {} diff_ids", im.layers.len(), diff_ids.len())));
        }
        for (l, diff_id) in im.layers.iter().zip(diff_ids) {
            if is_layer_type(&l.media_type) {
                layers.entry(l.digest.clone()).or_insert(LayerCheck { desc: l.bare(), diff_id });
            }
        }
    }
    Ok(m)
}

/// Hashes one content blob through the source's verified stream (digest and size), and checks
/// a layer against its diff_id: an uncompressed one by its digest, and (`deep`) any one by
/// inflating it, as export does (`codec::inflate_checked`).
fn blob(source: &dyn Source, d: &Descriptor, layer: Option<&LayerCheck>, opts: Options) -> Result<()> {
    let what = source.what_blob(d);
    let mut src = BufReader::with_capacity(1 << 20, source.blob(d)?);
    match layer {
        Some(l) if opts.deep => {
            codec::inflate_checked(&mut src, &l.diff_id, &what, &AtomicBool::new(false), &mut std::io::sink())?;
        }
        Some(l) => {
            let plain = Compression::sniff(src.fill_buf().map_err(|e| Error::from_read(&what, e))?) == Compression::Plain;
            drain(src).map_err(|e| Error::from_read(&what, e))?;
            if plain && l.desc.digest != *l.diff_id.as_digest() {
                return Err(Error::DiffIdMismatch { what: format!("{what} (uncompressed)"), expected: l.diff_id.clone(), found: DiffId(l.desc.digest.clone()) });
            }
        }
        None => {
            drain(src).map_err(|e| Error::from_read(&what, e))?;
        }
    }
    Ok(())
}

/// Reads to the end (a verifying stream checks digest and size there).
fn drain(mut r: impl Read) -> std::io::Result<u64> {
    std::io::copy(&mut r, &mut std::io::sink())
}

//! docker-archive as a source: the archives `docker save`, `podman save -m` and `skopeo copy
//! docker-archive:` write (classic `manifest.json` with `<id>/layer.tar` members, and the
//! Docker >= 25 form with `blobs/sha256/` members), many images per file, imported into the
//! store. Image IDs (config digests) and diff_ids are kept; layers stay as the archive holds
//! them (uncompressed: their digest is their diff_id). A docker-archive carries no registry
//! manifest, so each image gets a new OCI manifest, and the report says so.
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use super::{Copied, Members};
use crate::codec::{self, Compression};
use crate::digest::{hash_reader, DiffId, Digest, Hasher};
use crate::error::{Error, Result};
use crate::image::{media, Descriptor};
use crate::limits;
use crate::reference::Reference;
use crate::store::Store;

/// A docker-archive's `manifest.json`: one entry per image.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// What an archive import did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ArchiveImport {
    /// One per stored reference.
    pub images: Vec<ArchiveImage>,
    #[serde(flatten)]
    pub copied: Copied,
    pub notes: Vec<String>,
}

/// One image stored from an archive.
#[derive(Debug, serde::Serialize)]
pub struct ArchiveImage {
    pub reference: String,
    /// The new OCI manifest's digest.
    pub manifest: Digest,
    /// The config digest (`docker images` shows its first 12 hex digits).
    pub image_id: Digest,
}

/// The name an untagged image gets: its manifest digest under a fixed repository.
pub const UNTAGGED_REPOSITORY: &str = "localhost/docker-archive";

/// Imports every image of the docker-archive at `path` into `store`: every layer hashed against
/// its diff_id and every config against its name before it is stored, then manifests, then refs.
pub fn import(path: &Path, store: &Store) -> Result<ArchiveImport> {
    let _guard = store.use_guard()?;
    let ar = Members::open(path)?;
    let shown = path.display().to_string();
    let entries: Vec<Entry> = limits::parse_json(&ar.read_small("manifest.json", limits::MANIFEST)?, &format!("{shown}: manifest.json"))?;
    if entries.is_empty() {
        return Err(Error::Other(format!("{shown}: manifest.json lists no images")));
    }
    let mut report = ArchiveImport::default();
    let mut refs: Vec<(String, Descriptor)> = Vec::new();
    let mut untagged = 0;
    for (i, e) in entries.iter().enumerate() {
        let what = format!("{shown}: image {} ({})", i + 1, crate::error::one_line(e.repo_tags.as_ref().and_then(|t| t.first()).map_or(e.config.as_str(), String::as_str), 200));
        let (manifest, config) = import_image(&ar, store, e, &what, &mut report)?;
        let mdigest = Digest::of(&manifest);
        store.put_bytes(&mdigest, &manifest)?;
        let desc = Descriptor { media_type: media::OCI_MANIFEST.into(), digest: mdigest.clone(), size: manifest.len() as u64, platform: None, annotations: None };
        let tags = e.repo_tags.clone().unwrap_or_default();
        if tags.is_empty() {
            untagged += 1;
        }
        let names: Vec<String> = if tags.is_empty() {
            vec![format!("{UNTAGGED_REPOSITORY}@{mdigest}")]
        } else {
            tags.iter().map(|t| t.parse::<Reference>().map(|r| r.to_string()).map_err(|err| err.context(&what))).collect::<Result<_>>()?
        };
        for n in names {
            report.images.push(ArchiveImage { reference: n.clone(), manifest: mdigest.clone(), image_id: config.clone() });
            refs.push((n, desc.clone()));
        }
    }
    store.set_refs(&refs)?;
    report.notes.push("a docker-archive holds no registry manifests: each image got a new OCI manifest (its image ID and diff_ids are kept)".into());
    if untagged > 0 {
        report.notes.push(format!("{untagged} image(s) had no tag: stored as {UNTAGGED_REPOSITORY}@<manifest digest>"));
    }
    Ok(report)
}

/// Stores one image's config and layers; returns its new manifest's bytes and its image ID.
fn import_image(ar: &Members, store: &Store, e: &Entry, what: &str, report: &mut ArchiveImport) -> Result<(Vec<u8>, Digest)> {
    let config = ar.read_small(&e.config, limits::CONFIG)?;
    let id = Digest::of(&config);
    // The config's member name is its digest (`<hex>.json` or `blobs/sha256/<hex>`): check it.
    let stem = e.config.rsplit('/').next().unwrap_or("").trim_end_matches(".json");
    if stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()) && stem != id.hex() {
        return Err(Error::DigestMismatch { what: format!("{what}: config {}", e.config), expected: format!("sha256:{stem}").parse()?, found: id });
    }
    let diff_ids = crate::image::diff_ids(&config, &format!("{what}: config {}", e.config))?;
    if diff_ids.len() != e.layers.len() {
        return Err(Error::Other(format!("{what}: manifest.json lists {} layers but its config lists {} diff_ids", e.layers.len(), diff_ids.len())));
    }
    let mut layers = Vec::new();
    for (member, diff_id) in e.layers.iter().zip(&diff_ids) {
        layers.push(import_layer(ar, store, member, diff_id, &format!("{what}: layer {member}"), report)?);
    }
    super::store_blob(store, &id, config.len() as u64, &format!("{what}: config"), &mut report.copied, || Ok(Box::new(&config[..])))?;
    let cfg = Descriptor { media_type: media::OCI_CONFIG.into(), digest: id.clone(), size: config.len() as u64, platform: None, annotations: None };
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "config": cfg, "layers": layers});
    Ok((serde_json::to_vec(&manifest).expect("JSON"), id))
}

/// Checks one layer member against its diff_id and stores it as it is.
fn import_layer(ar: &Members, store: &Store, member: &str, diff_id: &DiffId, what: &str, report: &mut ArchiveImport) -> Result<Descriptor> {
    let (_, size) = ar.find(member)?;
    let mut head = [0u8; 4];
    let n = ar.open_member(member)?.read(&mut head).map_err(|e| Error::io(ar.path(), e))?;
    let compression = Compression::sniff(&head[..n]);
    let (digest, media_type) = match compression {
        Compression::Plain => (diff_id.as_digest().clone(), media::OCI_LAYER),
        // Compressed members (some tools write them): the blob's digest is its own, and what it
        // inflates to must still be the diff_id. One read for both hashes.
        c => {
            let mut outer = Hasher::new();
            let tee = Tee { inner: ar.open_member(member)?, hasher: &mut outer };
            let dec = codec::decoder(c, std::io::BufReader::new(tee)).map_err(|e| Error::Other(format!("{what}: {e}")))?;
            let found = DiffId(hash_reader(dec).map_err(|e| Error::Other(format!("{what}: {e}")))?.0);
            if &found != diff_id {
                return Err(Error::DiffIdMismatch { what: what.into(), expected: diff_id.clone(), found });
            }
            (outer.finish(), if c == Compression::Gzip { media::OCI_LAYER_GZIP } else { media::OCI_LAYER_ZSTD })
        }
    };
    super::store_blob(store, &digest, size, what, &mut report.copied, || Ok(Box::new(ar.open_member(member)?))).map_err(|e| match e {
        // An uncompressed layer's digest is its diff_id: say so.
        Error::DigestMismatch { expected, found, .. } if compression == Compression::Plain => Error::DiffIdMismatch { what: what.into(), expected: DiffId(expected), found: DiffId(found) },
        e => e,
    })?;
    Ok(Descriptor { media_type: media_type.into(), digest, size, platform: None, annotations: None })
}

/// A reader that hashes what passes through it.
struct Tee<'a, R> {
    inner: R,
    hasher: &'a mut Hasher,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

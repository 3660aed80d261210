//! docker-archive as a `Source`: the archives `docker save`, `podman save -m` and `skopeo copy
//! docker-archive:` write (classic `manifest.json` with `<id>/layer.tar` members, and the
//! Docker >= 25 form with `blobs/sha256/` members), many images per file. Image IDs (config
//! digests) and diff_ids are kept; layers stay as the archive holds them (uncompressed: their
//! digest is their diff_id). A docker-archive carries no registry manifest, so each image gets
//! a new OCI manifest (held in memory), and the notes say so.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use super::{Copied, Members};
use crate::codec::{self, Compression};
use crate::digest::{hash_reader, DiffId, Digest, Hasher, VerifyingReader};
use crate::error::{Error, Result};
use crate::image::{media, Descriptor};
use crate::limits;
use crate::reference::Reference;
use crate::source::{LocalBlobs, Source};
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

/// A config or layer of the archive: the member holding it, and how to name it in errors.
struct Member {
    name: String,
    what: String,
}

/// An opened docker-archive: its images named, their new manifests made, every config checked
/// against its name and every compressed layer against its diff_id; uncompressed layers (whose
/// digest is their diff_id) are checked as they are read.
pub struct DockerArchive {
    ar: Members,
    refs: Vec<(String, Descriptor)>,
    members: BTreeMap<Digest, Member>,
    manifests: BTreeMap<Digest, Vec<u8>>,
    /// One per reference.
    pub images: Vec<ArchiveImage>,
    pub notes: Vec<String>,
}

impl DockerArchive {
    pub fn open(path: &Path) -> Result<DockerArchive> {
        let ar = Members::open(path)?;
        let shown = path.display().to_string();
        let entries: Vec<Entry> = limits::parse_json(&ar.read_small("manifest.json", limits::MANIFEST)?, &format!("{shown}: manifest.json"))?;
        if entries.is_empty() {
            return Err(Error::Other(format!("{shown}: manifest.json lists no images")));
        }
        let mut this = DockerArchive { ar, refs: Vec::new(), members: BTreeMap::new(), manifests: BTreeMap::new(), images: Vec::new(), notes: Vec::new() };
        let mut untagged = 0;
        for (i, e) in entries.iter().enumerate() {
            let what = format!("{shown}: image {} ({})", i + 1, crate::error::one_line(e.repo_tags.as_ref().and_then(|t| t.first()).map_or(e.config.as_str(), String::as_str), 200));
            let (manifest, config) = this.image(e, &what)?;
            let mdigest = Digest::of(&manifest);
            let desc = Descriptor { media_type: media::OCI_MANIFEST.into(), digest: mdigest.clone(), size: manifest.len() as u64, platform: None, annotations: None };
            this.manifests.insert(mdigest.clone(), manifest);
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
                this.images.push(ArchiveImage { reference: n.clone(), manifest: mdigest.clone(), image_id: config.clone() });
                this.refs.push((n, desc.clone()));
            }
        }
        this.notes.push("a docker-archive holds no registry manifests: each image got a new OCI manifest (its image ID and diff_ids are kept)".into());
        if untagged > 0 {
            this.notes.push(format!("{untagged} image(s) had no tag: stored as {UNTAGGED_REPOSITORY}@<manifest digest>"));
        }
        Ok(this)
    }

    /// Checks one image's config and lists its layers; returns its new manifest and image ID.
    fn image(&mut self, e: &Entry, what: &str) -> Result<(Vec<u8>, Digest)> {
        let config = self.ar.read_small(&e.config, limits::CONFIG)?;
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
            layers.push(self.layer(member, diff_id, &format!("{what}: layer {member}"))?);
        }
        self.members.insert(id.clone(), Member { name: e.config.clone(), what: format!("{what}: config {}", e.config) });
        let cfg = Descriptor { media_type: media::OCI_CONFIG.into(), digest: id.clone(), size: config.len() as u64, platform: None, annotations: None };
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "config": cfg, "layers": layers});
        Ok((serde_json::to_vec(&manifest).expect("JSON"), id))
    }

    /// One layer member: as it is, named by its diff_id when uncompressed (checked as it is
    /// read); a compressed one is inflated and checked against its diff_id here.
    fn layer(&mut self, member: &str, diff_id: &DiffId, what: &str) -> Result<Descriptor> {
        let (_, size) = self.ar.find(member)?;
        let mut head = [0u8; 4];
        let n = self.ar.open_member(member)?.read(&mut head).map_err(|e| Error::io(self.ar.path(), e))?;
        let compression = Compression::sniff(&head[..n]);
        let (digest, media_type, what) = match compression {
            Compression::Plain => (diff_id.as_digest().clone(), media::OCI_LAYER, format!("{what}, checked against its diff_id")),
            // Compressed members (some tools write them): the blob's digest is its own, and what
            // it inflates to must still be the diff_id. One read for both hashes.
            c => {
                let mut outer = Hasher::new();
                let tee = Tee { inner: self.ar.open_member(member)?, hasher: &mut outer };
                let dec = codec::decoder(c, std::io::BufReader::new(tee)).map_err(|e| Error::Other(format!("{what}: {e}")))?;
                let found = DiffId(hash_reader(dec).map_err(|e| Error::Other(format!("{what}: {e}")))?.0);
                if &found != diff_id {
                    return Err(Error::DiffIdMismatch { what: what.into(), expected: diff_id.clone(), found });
                }
                (outer.finish(), if c == Compression::Gzip { media::OCI_LAYER_GZIP } else { media::OCI_LAYER_ZSTD }, what.to_string())
            }
        };
        self.members.insert(digest.clone(), Member { name: member.to_string(), what });
        Ok(Descriptor { media_type: media_type.into(), digest, size, platform: None, annotations: None })
    }

    fn member(&self, d: &Digest) -> Result<&Member> {
        self.members.get(d).ok_or_else(|| Error::Other(format!("{}: no blob {d}", self.ar.path().display())))
    }
}

impl Source for DockerArchive {
    fn name(&self) -> String {
        self.ar.path().display().to_string()
    }
    fn refs(&self) -> Result<Vec<(String, Descriptor)>> {
        Ok(self.refs.clone())
    }
    fn has(&self, d: &Digest) -> bool {
        self.manifests.contains_key(d) || self.members.contains_key(d)
    }
    fn what_blob(&self, desc: &Descriptor) -> String {
        match self.members.get(&desc.digest) {
            Some(m) => m.what.clone(),
            None => format!("{}: blob {}", self.name(), desc.digest),
        }
    }
    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        if let Some(m) = self.manifests.get(&desc.digest) {
            return Ok(Box::new(VerifyingReader::new(std::io::Cursor::new(m.clone()), desc.digest.clone(), desc.size, "generated manifest")));
        }
        let m = self.member(&desc.digest)?;
        let (_, size) = self.ar.find(&m.name)?;
        if size != desc.size {
            return Err(Error::SizeMismatch { what: m.what.clone(), digest: desc.digest.clone(), expected: desc.size, found: size });
        }
        Ok(Box::new(VerifyingReader::new(self.ar.open_member(&m.name)?, desc.digest.clone(), desc.size, m.what.clone())))
    }
    fn local(&self) -> Option<&dyn LocalBlobs> {
        Some(self)
    }
}

impl LocalBlobs for DockerArchive {
    fn read_from(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>> {
        if let Some(m) = self.manifests.get(&desc.digest) {
            return Ok(Box::new(std::io::Cursor::new(m[(offset as usize).min(m.len())..].to_vec())));
        }
        Ok(Box::new(self.ar.open_member_from(&self.member(&desc.digest)?.name, offset)?))
    }
}

/// Imports every image of the docker-archive at `path` into `store`: one copy from the archive
/// into the store (layers and configs verified, then manifests, then references).
pub fn import(ar: DockerArchive, store: &Store) -> Result<ArchiveImport> {
    let copied = store.import_from(&ar, &ar.refs()?, 4, false)?;
    Ok(ArchiveImport { images: ar.images, copied, notes: ar.notes })
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

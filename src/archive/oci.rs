//! OCI image layouts as a source: `oci:DIR` (what skopeo, crane, buildah and umoci write) and
//! `oci-archive:FILE` (the same layout in one tar, as skopeo and Docker >= 25 write it), imported
//! into the store byte for byte: manifests, configs and layers keep their digests. The layout is
//! untrusted: its oci-layout version, index.json (capped) and every blob (a regular file, hashed
//! against its descriptor as it is copied) are checked before anything is stored.
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Copied, Members};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::{Descriptor, Manifest};
use crate::limits;
use crate::reference::Reference;
use crate::store::{Store, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};

/// Where a layout's files are: a directory or the members of a tar.
enum Files {
    Dir(PathBuf),
    Tar(Members),
}

impl Files {
    fn shown(&self) -> String {
        match self {
            Files::Dir(d) => d.display().to_string(),
            Files::Tar(m) => m.path().display().to_string(),
        }
    }

    fn read_small(&self, rel: &str, limit: u64) -> Result<Vec<u8>> {
        match self {
            Files::Dir(d) => {
                let p = d.join(rel);
                regular(&p)?;
                limits::read_file_capped(&p, limit)
            }
            Files::Tar(m) => m.read_small(rel, limit),
        }
    }

    /// A reader of the file and its length.
    fn open(&self, rel: &str) -> Result<(Box<dyn Read + '_>, u64)> {
        match self {
            Files::Dir(d) => {
                let p = d.join(rel);
                let len = regular(&p)?;
                Ok((Box::new(File::open(&p).at(&p)?), len))
            }
            Files::Tar(m) => {
                let (_, len) = m.find(rel)?;
                Ok((Box::new(m.open_member(rel)?), len))
            }
        }
    }
}

/// Refuses what is not a regular file (a symlink may point anywhere); returns its length.
fn regular(p: &Path) -> Result<u64> {
    let md = std::fs::symlink_metadata(p).at(p)?;
    if !md.file_type().is_file() {
        return Err(Error::Other(format!("{}: not a regular file", p.display())));
    }
    Ok(md.len())
}

#[derive(serde::Deserialize)]
struct IndexJson {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// One image stored from a layout.
#[derive(Debug, serde::Serialize)]
pub struct LayoutImage {
    pub reference: String,
    pub digest: Digest,
}

/// What a layout import did.
#[derive(Debug, Default, serde::Serialize)]
pub struct LayoutImport {
    pub images: Vec<LayoutImage>,
    #[serde(flatten)]
    pub copied: Copied,
    pub notes: Vec<String>,
}

/// Imports `oci:DIR[:REF]` (`archive` false) or `oci-archive:FILE[:REF]` into `store`. With
/// `only`, just the index entry whose ref name is that.
pub fn import(path: &Path, archive: bool, only: Option<&str>, store: &Store) -> Result<LayoutImport> {
    let _guard = store.use_guard()?;
    let files = if archive { Files::Tar(Members::open(path)?) } else { Files::Dir(path.to_path_buf()) };
    let shown = files.shown();
    crate::store::check_layout_bytes(&files.read_small("oci-layout", limits::OCI_LAYOUT_FILE)?, &Path::new(&shown).join("oci-layout"))?;
    let index: IndexJson = limits::parse_json(&files.read_small("index.json", limits::INDEX_JSON)?, &format!("{shown}/index.json"))?;
    // Names: a ref name that is a full reference keeps it (ours, crane's, Docker 25's
    // containerd annotation); a bare tag (skopeo's `oci:DIR:TAG`) goes under localhost/NAME.
    let stem = path.file_name().map(|n| n.to_string_lossy().trim_end_matches(".tar").to_string()).unwrap_or_else(|| "layout".into());
    let stem: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c.to_ascii_lowercase() } else { '-' }).collect();
    let mut wanted: Vec<(String, Descriptor)> = Vec::new();
    let mut local = 0;
    for d in &index.manifests {
        let ann = d.annotations.as_ref();
        let refname = ann.and_then(|a| a.get(ANNOTATION_REF_NAME));
        if only.is_some_and(|o| refname.map(String::as_str) != Some(o)) {
            continue;
        }
        let full = ann.and_then(|a| a.get(ANNOTATION_CONTAINERD_NAME)).or(refname.filter(|r| r.contains('/')));
        let name = match (full, refname) {
            (Some(f), _) => f.parse::<Reference>().map_err(|e| e.context(&format!("{shown}/index.json")))?.to_string(),
            (None, Some(tag)) => {
                local += 1;
                format!("localhost/{stem}:{tag}").parse::<Reference>().map_err(|e| e.context(&format!("{shown}/index.json")))?.to_string()
            }
            (None, None) => {
                local += 1;
                format!("localhost/{stem}@{}", d.digest)
            }
        };
        let mut desc = d.clone();
        desc.annotations = None;
        wanted.push((name, desc));
    }
    if wanted.is_empty() {
        return Err(Error::Other(match only {
            Some(o) => format!("{shown}: no image named {o:?} in index.json"),
            None => format!("{shown}: index.json lists no images"),
        }));
    }
    let mut report = LayoutImport::default();
    // Blobs already handled by an earlier image of this import (the walk dedups within one).
    let mut done: BTreeSet<Digest> = BTreeSet::new();
    for (name, desc) in &wanted {
        crate::graph::walk(desc, |d| {
            let what = format!("{shown}: {name}: blob {}", d.digest);
            let rel = format!("blobs/sha256/{}", d.digest.hex());
            if crate::graph::is_node(d) {
                let bytes = files.read_small(&rel, limits::MANIFEST)?;
                let m = Manifest::parse(bytes, Some(&d.media_type), &what)?;
                if m.digest != d.digest {
                    return Err(Error::DigestMismatch { what, expected: d.digest.clone(), found: m.digest });
                }
                if m.bytes.len() as u64 != d.size {
                    return Err(Error::SizeMismatch { what, digest: d.digest.clone(), expected: d.size, found: m.bytes.len() as u64 });
                }
                if done.insert(d.digest.clone()) {
                    report.copied.add(store.has_blob(&d.digest, Some(d.size)), d.size);
                    store.put_bytes(&d.digest, &m.bytes)?;
                }
                return Ok(Some(m));
            }
            if done.insert(d.digest.clone()) {
                super::store_blob(store, &d.digest, d.size, &what, &mut report.copied, || {
                    let (r, len) = files.open(&rel)?;
                    if len != d.size {
                        return Err(Error::SizeMismatch { what: what.clone(), digest: d.digest.clone(), expected: d.size, found: len });
                    }
                    Ok(Box::new(r.take(d.size)))
                })?;
            }
            Ok(None)
        })?;
        report.images.push(LayoutImage { reference: name.clone(), digest: desc.digest.clone() });
    }
    store.set_refs(&wanted)?;
    if local > 0 {
        report.notes.push(format!("{local} image(s) had only a tag in the layout: stored as localhost/{stem}:TAG"));
    }
    Ok(report)
}

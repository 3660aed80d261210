//! OCI image layouts as a `Source`: `oci:DIR` (what skopeo, crane, buildah and umoci write) and
//! `oci-archive:FILE` (the same layout in one tar, as skopeo and Docker >= 25 write it), read
//! byte for byte: manifests, configs and layers keep their digests. The layout is untrusted: its
//! oci-layout version and index.json (capped) are checked when it is opened, and every blob (a
//! regular file, its length that of its descriptor) is hashed against its digest as it is read.
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Copied, Members};
use crate::digest::{Digest, VerifyingReader};
use crate::error::{Error, IoContext, Result};
use crate::image::Descriptor;
use crate::limits;
use crate::reference::Reference;
use crate::source::{LocalBlobs, Source};
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

    /// A reader of the file from `skip` on, and the file's length.
    fn open(&self, rel: &str, skip: u64) -> Result<(Box<dyn Read + Send + '_>, u64)> {
        match self {
            Files::Dir(d) => {
                use std::io::{Seek, SeekFrom};
                use std::os::unix::fs::OpenOptionsExt;
                let p = d.join(rel);
                let len = regular(&p)?;
                let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&p).at(&p)?;
                f.seek(SeekFrom::Start(skip)).at(&p)?;
                Ok((Box::new(std::io::BufReader::with_capacity(1 << 20, f)), len))
            }
            Files::Tar(m) => {
                let (_, len) = m.find(rel)?;
                Ok((Box::new(m.open_member_from(rel, skip)?), len))
            }
        }
    }

    /// The length of the regular file `rel`, if it is one.
    fn len(&self, rel: &str) -> Option<u64> {
        match self {
            Files::Dir(d) => regular(&d.join(rel)).ok(),
            Files::Tar(m) => m.find(rel).ok().map(|(_, n)| n),
        }
    }

    /// Whether anything is there under `rel` (what it is, `open` checks).
    fn exists(&self, rel: &str) -> bool {
        match self {
            Files::Dir(d) => std::fs::symlink_metadata(d.join(rel)).is_ok(),
            Files::Tar(m) => m.find(rel).is_ok() || m.contains(rel),
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

/// An opened OCI layout (a directory or a tar of one): its images named, its blobs read on
/// demand.
pub struct Layout {
    files: Files,
    shown: String,
    refs: Vec<(String, Descriptor)>,
    /// What the user should know about how the images were named.
    pub notes: Vec<String>,
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

impl Layout {
    /// Opens `oci:DIR[:REF]` (`archive` false) or `oci-archive:FILE[:REF]`; with `only`, just
    /// the index entry whose ref name is that. Checks oci-layout and index.json, names images.
    pub fn open(path: &Path, archive: bool, only: Option<&str>) -> Result<Layout> {
        let files = if archive { Files::Tar(Members::open(path)?) } else { Files::Dir(path.to_path_buf()) };
        let shown = files.shown();
        crate::store::check_layout_bytes(&files.read_small("oci-layout", limits::OCI_LAYOUT_FILE)?, &Path::new(&shown).join("oci-layout"))?;
        let index: IndexJson = limits::parse_json(&files.read_small("index.json", limits::INDEX_JSON)?, &format!("{shown}/index.json"))?;
        // Names: a ref name that is a full reference keeps it (ours, crane's, Docker 25's
        // containerd annotation); a bare tag (skopeo's `oci:DIR:TAG`) goes under localhost/NAME.
        let stem = path.file_name().map(|n| n.to_string_lossy().trim_end_matches(".tar").to_string()).unwrap_or_else(|| "layout".into());
        let stem: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c.to_ascii_lowercase() } else { '-' }).collect();
        let mut refs: Vec<(String, Descriptor)> = Vec::new();
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
            refs.push((name, desc));
        }
        if refs.is_empty() {
            return Err(Error::Other(match only {
                Some(o) => format!("{shown}: no image named {o:?} in index.json"),
                None => format!("{shown}: index.json lists no images"),
            }));
        }
        let mut notes = Vec::new();
        if local > 0 {
            notes.push(format!("{local} image(s) had only a tag in the layout: stored as localhost/{stem}:TAG"));
        }
        Ok(Layout { files, shown, refs, notes })
    }

    /// A reader of `desc`'s file from `skip`, after checking it is a regular file of the
    /// descriptor's length.
    fn open_blob(&self, desc: &Descriptor, skip: u64) -> Result<Box<dyn Read + Send + '_>> {
        let (r, len) = self.files.open(&blob_name(&desc.digest), skip)?;
        if len != desc.size {
            return Err(Error::SizeMismatch { what: format!("{}: blob", self.shown), digest: desc.digest.clone(), expected: desc.size, found: len });
        }
        Ok(r)
    }
}

impl Source for Layout {
    fn name(&self) -> String {
        self.shown.clone()
    }
    fn refs(&self) -> Result<Vec<(String, Descriptor)>> {
        Ok(self.refs.clone())
    }
    fn has(&self, d: &Digest) -> bool {
        self.files.exists(&blob_name(d))
    }
    fn size_of(&self, d: &Digest) -> Option<u64> {
        self.files.len(&blob_name(d))
    }
    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        let r = self.open_blob(desc, 0)?;
        Ok(Box::new(VerifyingReader::new(r, desc.digest.clone(), desc.size, format!("{}: blob", self.shown))))
    }
    fn local(&self) -> Option<&dyn LocalBlobs> {
        Some(self)
    }
}

impl LocalBlobs for Layout {
    fn read_from(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>> {
        self.open_blob(desc, offset)
    }
}

/// Imports `oci:DIR[:REF]` (`archive` false) or `oci-archive:FILE[:REF]` into `store`: one copy
/// from the layout into the store.
pub fn import(layout: Layout, store: &Store) -> Result<LayoutImport> {
    let refs = layout.refs()?;
    let copied = store.import_from(&layout, &refs, 4, false)?;
    let images = refs.iter().map(|(n, d)| LayoutImage { reference: n.clone(), digest: d.digest.clone() }).collect();
    Ok(LayoutImport { images, copied, notes: layout.notes })
}

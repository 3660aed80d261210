//! `store add`: local files and directories packed into an OCI artifact in the store, with no
//! registry: one uncompressed layer per file, titled with its path, each streamed into the store
//! (hashed as it is copied, renamed to its digest), then an empty (or ModelPack) config, the
//! manifest and the reference. The same files give the same manifest digest: paths are sorted,
//! and nothing of a file but its path and bytes (no mtime, owner or mode) goes in.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::Store;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{media, Descriptor};
use crate::reference::Reference;

/// Where a file's path goes (oras, the OCI annotation spec): what `export --files` writes it as.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// ModelPack's own copy of the path, on ModelPack layers.
const ANNOTATION_MODELPACK_PATH: &str = "org.cncf.model.filepath";
/// The artifact type when none is given: "files packed by ocibundle".
pub const DEFAULT_ARTIFACT_TYPE: &str = "application/vnd.ocibundle.files.v1";
/// A CNCF ModelPack model: its layers and config follow ModelPack's media types.
pub const MODELPACK_ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
const MODELPACK_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";
/// A file's bytes as they are, for any artifact but a ModelPack one.
const RAW_FILE: &str = "application/octet-stream";

#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    /// The manifest's `artifactType` (default `DEFAULT_ARTIFACT_TYPE`).
    pub artifact_type: Option<String>,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// What `add` stored.
#[derive(Debug, Serialize)]
pub struct Added {
    pub reference: String,
    pub digest: Digest,
    pub artifact_type: String,
    pub files: Vec<AddedFile>,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct AddedFile {
    pub title: String,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    artifact_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

/// Packs `paths` (files, or directories walked whole) into an artifact named `reference`.
/// A file's title is its name; a file under a directory's is its path below that directory.
/// Refused, before anything is stored: a symlink that leads out of its directory or to a
/// directory, anything that is not a regular file, a path that is not UTF-8, two files with
/// one title.
pub fn add(store: &Store, reference: &Reference, paths: &[PathBuf], opts: &AddOptions) -> Result<Added> {
    if reference.digest.is_some() {
        return Err(Error::Other(format!("{reference}: name the artifact with a tag, not a digest (its digest is what the files make)")));
    }
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        return Err(Error::Other(format!("{reference}: no files to add (the directories given are empty)")));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = files.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::Other(format!("{} and {} would both be stored as {:?}: add them under different directories", w[0].1.display(), w[1].1.display(), w[0].0)));
    }
    let artifact_type = opts.artifact_type.clone().unwrap_or_else(|| DEFAULT_ARTIFACT_TYPE.to_string());
    let modelpack = artifact_type == MODELPACK_ARTIFACT_TYPE;

    let _guard = store.use_guard()?;
    // The references are rewritten at the end: a store whose index.json cannot be read is
    // refused now, before any file is copied into it.
    store.refs()?;
    let mut layers = Vec::new();
    let mut added = Vec::new();
    for (title, path) in &files {
        let (digest, size) = store.put_file(path, &path.display().to_string())?;
        let media_type = if modelpack { modelpack_type(title) } else { RAW_FILE };
        let mut ann = BTreeMap::from([(ANNOTATION_TITLE.to_string(), title.clone())]);
        if modelpack {
            ann.insert(ANNOTATION_MODELPACK_PATH.to_string(), title.clone());
        }
        layers.push(Descriptor { media_type: media_type.into(), digest: digest.clone(), size, platform: None, annotations: Some(ann) });
        added.push(AddedFile { title: title.clone(), digest, size, media_type: media_type.to_string() });
    }
    let config_bytes = if modelpack { modelpack_config(&layers) } else { b"{}".to_vec() };
    let config = Descriptor {
        media_type: (if modelpack { MODELPACK_CONFIG } else { media::OCI_EMPTY }).into(),
        digest: Digest::of(&config_bytes),
        size: config_bytes.len() as u64,
        platform: None,
        annotations: None,
    };
    let manifest = ArtifactManifest { schema_version: 2, media_type: media::OCI_MANIFEST, artifact_type: &artifact_type, config: config.clone(), layers, annotations: &opts.annotations };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Other(e.to_string()))?;
    let digest = Digest::of(&bytes);
    store.put_bytes(&config.digest, &config_bytes)?;
    store.put_bytes(&digest, &bytes)?;
    let desc = Descriptor { media_type: media::OCI_MANIFEST.into(), digest: digest.clone(), size: bytes.len() as u64, platform: None, annotations: None };
    store.set_refs(&[(reference.to_string(), desc)])?;
    let total = added.iter().map(|f| f.size).sum();
    Ok(Added { reference: reference.to_string(), digest, artifact_type, files: added, bytes: total })
}

/// The files `path` names, with their titles: a file by its name, a directory's regular files
/// by their paths below it.
fn collect(path: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| Error::Other(format!("{}: not a file name ocibundle can store (not UTF-8)", path.display())))?;
        out.push((name.to_string(), path.to_path_buf()));
        return Ok(());
    }
    if !meta.is_dir() {
        return Err(not_regular(path, &meta));
    }
    let root = fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    walk(&root, &root, path, out)
}

/// `dir` (canonical, under `root`); `shown` is how the user named it, for messages.
fn walk(root: &Path, dir: &Path, shown: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.collect::<std::io::Result<_>>().map_err(|e| Error::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p.strip_prefix(root).expect("walked below the root");
        let user = shown.join(rel);
        let title = title_of(rel).ok_or_else(|| Error::Other(format!("{}: not a file name ocibundle can store (not UTF-8)", user.display())))?;
        let lmeta = fs::symlink_metadata(&p).map_err(|e| Error::io(&user, e))?;
        if lmeta.is_dir() {
            walk(root, &p, shown, out)?;
        } else if lmeta.is_file() {
            out.push((title, p));
        } else if lmeta.file_type().is_symlink() {
            let target = fs::canonicalize(&p).map_err(|e| Error::Other(format!("{}: a symlink that leads nowhere ({e})", user.display())))?;
            if !target.starts_with(root) {
                return Err(Error::Other(format!("{}: a symlink that leads out of {} (to {}): refused", user.display(), shown.display(), target.display())));
            }
            let tmeta = fs::metadata(&target).map_err(|e| Error::io(&target, e))?;
            if tmeta.is_dir() {
                return Err(Error::Other(format!("{}: a symlink to a directory: refused (name the directory itself)", user.display())));
            }
            if !tmeta.is_file() {
                return Err(not_regular(&user, &tmeta));
            }
            // Stored under the link's name, with the bytes it points at (a Hugging Face
            // cache's snapshot links into its blobs).
            out.push((title, target));
        } else {
            return Err(not_regular(&user, &lmeta));
        }
    }
    Ok(())
}

fn not_regular(path: &Path, meta: &fs::Metadata) -> Error {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    Error::Other(format!("{}: {kind}, not a regular file: refused", path.display()))
}

/// `a/b/c` for a relative path of normal components, as UTF-8.
fn title_of(rel: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = rel.components().map(|c| if let Component::Normal(n) = c { n.to_str() } else { None }).collect();
    parts.map(|p| p.join("/"))
}

/// ModelPack's layer type for a file, by its name: weights, their configs (tokenizer, model
/// config), documentation, else code.
fn modelpack_type(title: &str) -> &'static str {
    let name = title.rsplit('/').next().unwrap_or(title).to_ascii_lowercase();
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    if ["readme", "license", "licence", "notice", "copying"].iter().any(|p| name.starts_with(p)) || matches!(ext, "md" | "pdf" | "rst") {
        "application/vnd.cncf.model.doc.v1.raw"
    } else if matches!(ext, "gguf" | "safetensors" | "bin" | "pt" | "pth" | "ckpt" | "onnx" | "h5" | "msgpack" | "tflite" | "pb" | "npz" | "ggml") {
        "application/vnd.cncf.model.weight.v1.raw"
    } else if matches!(ext, "json" | "txt" | "model" | "tiktoken" | "jinja" | "yaml" | "yml" | "vocab") {
        "application/vnd.cncf.model.weight.config.v1.raw"
    } else {
        "application/vnd.cncf.model.code.v1.raw"
    }
}

/// A ModelPack config: the layers' digests as its `modelfs` (raw layers: the digest of the
/// file is its diff_id); descriptor and config left for the user's annotations to describe.
fn modelpack_config(layers: &[Descriptor]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ModelFs<'a> {
        r#type: &'a str,
        diff_ids: Vec<&'a Digest>,
    }
    #[derive(Serialize)]
    struct Config<'a> {
        descriptor: BTreeMap<String, String>,
        config: BTreeMap<String, String>,
        modelfs: ModelFs<'a>,
    }
    let c = Config { descriptor: BTreeMap::new(), config: BTreeMap::new(), modelfs: ModelFs { r#type: "layers", diff_ids: layers.iter().map(|l| &l.digest).collect() } };
    serde_json::to_vec(&c).expect("plain data serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_modelpack_roles() {
        assert_eq!(title_of(Path::new("a/b.gguf")).as_deref(), Some("a/b.gguf"));
        assert_eq!(title_of(Path::new("../x")), None);
        assert_eq!(modelpack_type("m/model-00001.safetensors"), "application/vnd.cncf.model.weight.v1.raw");
        assert_eq!(modelpack_type("tokenizer.json"), "application/vnd.cncf.model.weight.config.v1.raw");
        assert_eq!(modelpack_type("README.md"), "application/vnd.cncf.model.doc.v1.raw");
        assert_eq!(modelpack_type("LICENSE"), "application/vnd.cncf.model.doc.v1.raw");
        assert_eq!(modelpack_type("serve.py"), "application/vnd.cncf.model.code.v1.raw");
    }

    #[test]
    fn the_same_files_give_the_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("b.bin"), b"weights").unwrap();
        fs::write(src.join("sub/a.txt"), b"tok").unwrap();
        let r: Reference = "127.0.0.1:5000/m/x:1".parse().unwrap();
        let a = add(&Store::open(dir.path().join("s1")).unwrap(), &r, std::slice::from_ref(&src), &AddOptions::default()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(src.join("b.bin"), b"weights").unwrap(); // a new mtime
        let b = add(&Store::open(dir.path().join("s2")).unwrap(), &r, &[src], &AddOptions::default()).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.files.iter().map(|f| f.title.as_str()).collect::<Vec<_>>(), ["b.bin", "sub/a.txt"]);
    }
}

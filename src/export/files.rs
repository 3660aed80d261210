//! Artifacts written back out as plain files: `export --files DIR` (each titled layer as the
//! file its title names, below DIR and nowhere else) and `export --ollama DIR` (an Ollama models
//! directory: `blobs/sha256-<hex>` and `manifests/<host>/<namespace>/<model>/<tag>`). Every
//! byte comes through the source's verified stream, so a file is only named once its layer's
//! digest and size matched.
use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::{manifest, refuse_existing};
use crate::error::{Error, IoContext, Result};
use crate::image::{Descriptor, ImageManifest, ManifestKind};
use crate::reference::Reference;
use crate::source::{copy_verified, Source};
use crate::store::ANNOTATION_TITLE;

/// What an export of files wrote.
#[derive(Debug, Serialize)]
pub struct FilesReport {
    pub output: String,
    pub reference: String,
    pub files: Vec<WrittenFile>,
    pub bytes: u64,
    /// Layers left out (no title), by digest.
    pub skipped: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct WrittenFile {
    pub path: String,
    pub digest: String,
    pub size: u64,
}

/// The image manifest `name` points at; an index is refused (an artifact is one manifest).
fn artifact(source: &dyn Source, name: &str, desc: &Descriptor) -> Result<ImageManifest> {
    match manifest(source, desc, name)?.kind {
        ManifestKind::Image(im) => Ok(im),
        ManifestKind::Index(_) => Err(Error::Other(format!("{name}: an index, not one artifact: name the manifest you want by its digest"))),
    }
}

/// A layer's title as a path below the output directory: relative, made of plain names only.
fn safe_title(name: &str, layer: &Descriptor, title: &str) -> Result<PathBuf> {
    let bad = |why: &str| Error::Other(format!("{name}: layer {}: title {:?} {why}: refused, nothing written", layer.digest, crate::error::one_line(title, 120)));
    if title.is_empty() {
        return Err(bad("is empty"));
    }
    if title.contains('\0') || title.chars().any(|c| c.is_control()) {
        return Err(bad("holds control characters"));
    }
    let p = Path::new(title);
    if p.is_absolute() {
        return Err(bad("is an absolute path"));
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(bad("leads out of the output directory (`..`)")),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(bad("names no file"));
    }
    Ok(out)
}

/// `export --files DIR REF`: the artifact's titled layers as files under DIR, built in a temp
/// directory beside it and renamed into place; every title is checked before a byte is written.
pub fn write_files(source: &dyn Source, name: &str, desc: &Descriptor, dir: &Path, force: bool) -> Result<FilesReport> {
    let im = artifact(source, name, desc)?;
    let mut plan: Vec<(PathBuf, &Descriptor)> = Vec::new();
    let mut skipped = Vec::new();
    for l in &im.layers {
        match l.annotations.as_ref().and_then(|a| a.get(ANNOTATION_TITLE)) {
            Some(t) => plan.push((safe_title(name, l, t)?, l)),
            None => skipped.push(l.digest.to_string()),
        }
    }
    if plan.is_empty() {
        return Err(Error::Other(format!("{name}: no layer has a title ({ANNOTATION_TITLE}): not an artifact of files")));
    }
    // A file and a directory of one name, or one name twice: refused before writing.
    let files: BTreeSet<&Path> = plan.iter().map(|(p, _)| p.as_path()).collect();
    if files.len() != plan.len() {
        let mut seen = BTreeSet::new();
        let dup = plan.iter().find(|(p, _)| !seen.insert(p)).expect("a duplicate");
        return Err(Error::Other(format!("{name}: two layers are titled {:?}: refused, nothing written", dup.0.display().to_string())));
    }
    for (p, l) in &plan {
        if let Some(parent) = p.ancestors().skip(1).find(|a| files.contains(a)) {
            return Err(Error::Other(format!("{name}: layer {}: {:?} would be below the file {:?}: refused, nothing written", l.digest, p.display().to_string(), parent.display().to_string())));
        }
    }
    refuse_existing(dir, force)?;
    let tmp = crate::litter::claim_temp(dir);
    let _ = fs::remove_dir_all(&tmp);
    let res = (|| -> Result<(Vec<WrittenFile>, u64)> {
        fs::create_dir_all(&tmp).at(dir)?;
        let mut written = Vec::new();
        let mut bytes = 0;
        for (rel, l) in &plan {
            let shown = dir.join(rel);
            let path = tmp.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).at(shown.parent().unwrap_or(dir))?;
            }
            // A new file in a directory this export made: no link can be in the way.
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&path).at(&shown)?;
            let n = copy_verified(source, l, &mut f, &shown, &|_| {}).map_err(|e| e.context(&format!("{name}: layer {} ({})", l.digest, rel.display())))?;
            f.sync_data().at(&shown)?;
            written.push(WrittenFile { path: rel.display().to_string(), digest: l.digest.to_string(), size: n });
            bytes += n;
        }
        Ok((written, bytes))
    })();
    let (files, bytes) = match res {
        Ok(x) => x,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if dir.exists() {
        let old = crate::litter::claim_temp(&dir.with_extension("old"));
        fs::rename(dir, &old).at(dir)?;
        fs::rename(&tmp, dir).at(dir)?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(&tmp, dir).at(dir)?;
    }
    Ok(FilesReport { output: dir.display().to_string(), reference: name.to_string(), files, bytes, skipped })
}

/// What an Ollama export wrote, per model.
#[derive(Debug, Serialize)]
pub struct OllamaModel {
    pub reference: String,
    /// As `ollama list` shows it (`HOST/NAMESPACE/MODEL:TAG`).
    pub ollama_name: String,
    pub manifest: String,
    pub blobs_written: usize,
    pub blobs_present: usize,
    pub bytes: u64,
}

/// Ollama's manifest path below `manifests/` for a reference: it names every model
/// HOST/NAMESPACE/MODEL:TAG, so the repository must be NAMESPACE/MODEL and there must be a tag.
fn ollama_path(name: &str) -> Result<(PathBuf, String)> {
    let r: Reference = name.parse()?;
    let parts: Vec<&str> = r.repository.split('/').collect();
    let (Some(tag), [ns, model]) = (&r.tag, parts.as_slice()) else {
        return Err(Error::Other(format!("{name}: Ollama names models HOST/NAMESPACE/MODEL:TAG; this reference does not fit (a tag and a two-part repository are needed)")));
    };
    Ok((Path::new(&r.registry).join(ns).join(model).join(tag), format!("{}/{ns}/{model}:{tag}", r.registry)))
}

/// `export --ollama DIR REF...`: an Ollama models directory (new, or one Ollama already uses):
/// the config and every layer as `blobs/sha256-<hex>` (each through a temp file, renamed once
/// verified; one already there with its size is kept), then the manifest's exact bytes as
/// `manifests/HOST/NAMESPACE/MODEL/TAG` (temp + rename), last, so Ollama never sees a model
/// whose blobs are not all there.
pub fn write_ollama(source: &dyn Source, images: &[(String, Descriptor)], dir: &Path) -> Result<Vec<OllamaModel>> {
    let mut out = Vec::new();
    let mut planned = Vec::new();
    for (name, desc) in images {
        if !desc.media_type.is_manifest() {
            return Err(Error::Other(format!("{name}: an index, not an Ollama model (its manifest is {})", desc.media_type)));
        }
        let im = artifact(source, name, desc)?;
        if !im.layers.iter().any(|l| l.media_type.starts_with("application/vnd.ollama.image.")) {
            return Err(Error::Other(format!("{name}: not an Ollama model (no layer of type application/vnd.ollama.image.*)")));
        }
        let (rel, ollama_name) = ollama_path(name)?;
        planned.push((name, desc, im, rel, ollama_name));
    }
    let blobs = dir.join("blobs");
    fs::create_dir_all(&blobs).at(&blobs)?;
    for (name, desc, im, rel, ollama_name) in planned {
        let mut m = OllamaModel { reference: name.clone(), ollama_name, manifest: String::new(), blobs_written: 0, blobs_present: 0, bytes: 0 };
        for d in std::iter::once(&im.config).chain(&im.layers) {
            let fin = blobs.join(format!("sha256-{}", d.digest.hex()));
            if fs::symlink_metadata(&fin).is_ok_and(|md| md.is_file() && md.len() == d.size) {
                m.blobs_present += 1;
                continue;
            }
            let tmp = crate::litter::claim_temp(&fin);
            let res = (|| -> Result<u64> {
                let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).at(&fin)?;
                let n = copy_verified(source, d, &mut f, &fin, &|_| {}).map_err(|e| e.context(name))?;
                f.sync_data().at(&fin)?;
                fs::rename(&tmp, &fin).at(&fin)?;
                Ok(n)
            })();
            match res {
                Ok(n) => {
                    m.blobs_written += 1;
                    m.bytes += n;
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        }
        let bytes = source.read_small(desc, crate::limits::MANIFEST)?;
        let fin = dir.join("manifests").join(&rel);
        let parent = fin.parent().expect("manifests/HOST/NS/MODEL");
        fs::create_dir_all(parent).at(parent)?;
        let tmp = crate::litter::claim_temp(&fin);
        let res = fs::write(&tmp, &bytes).and_then(|()| fs::File::open(&tmp)?.sync_all()).and_then(|()| fs::rename(&tmp, &fin));
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(&fin, e));
        }
        m.manifest = fin.display().to_string();
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_stay_below_the_directory() {
        let l = Descriptor { media_type: "x".into(), digest: crate::digest::Digest::of(b""), size: 0, platform: None, annotations: None };
        assert_eq!(safe_title("a", &l, "m/w.gguf").unwrap(), PathBuf::from("m/w.gguf"));
        assert_eq!(safe_title("a", &l, "./x").unwrap(), PathBuf::from("x"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a/..", ".", "x\ny"] {
            let e = safe_title("a", &l, bad).unwrap_err().to_string();
            assert!(e.contains("refused") && e.contains("layer sha256:"), "{bad}: {e}");
        }
        assert_eq!(ollama_path("127.0.0.1:5000/library/tiny:1b").unwrap().0, PathBuf::from("127.0.0.1:5000/library/tiny/1b"));
        assert!(ollama_path("127.0.0.1:5000/tiny:1b").is_err());
    }
}

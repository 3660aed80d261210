//! OCI image layout export (a directory, or one tar of it) as two `copy::Sink`s: blobs and
//! manifests byte-identical to the registry's, indexes kept, `index.json` naming every
//! reference. The one copy (`copy::execute`) moves the bytes; these files only place them.
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::tarw::TarWriter;
use super::{refuse_existing, ExportOptions, ExportReport, ExportedImage, Format, Output};
use crate::copy::{self, CopyOptions, Sink};
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

fn describe(source: &dyn Source, name: &str, desc: &Descriptor, manifests: &[Descriptor]) -> Result<ExportedImage> {
    // The first image manifest's config stands for the image (an index's first child).
    let mut image_id = None;
    let mut layers = 0;
    let mut platform = String::from("multi");
    for b in manifests {
        if crate::image::is_manifest_type(&b.media_type)
            && let ManifestKind::Image(im) = super::manifest(source, b, name)?.kind
            && image_id.is_none() {
            image_id = Some(im.config.digest.clone());
            layers = im.layers.len();
            // An artifact's config is not an image's (any type, any size): never parsed.
            if crate::image::is_manifest_type(&desc.media_type) {
                platform = if im.config.media_type.is_config() {
                    let cfg: ConfigInfo = serde_json::from_slice(&source.read_small(&im.config, limits::CONFIG)?).unwrap_or_default();
                    cfg.platform().to_string()
                } else {
                    "unknown".to_string()
                };
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
    // Images by name: the plan's order, and so the output's, does not depend on the caller's.
    let mut sorted = images.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let plan = copy::plan(source, &sorted)?;
    let reports = plan.images.iter().map(|i| describe(source, &i.reference, &i.descriptor, &i.manifests)).collect::<Result<Vec<_>>>()?;
    let sink: Box<dyn Sink> = match (opts.format, &opts.output) {
        (Format::OciLayout, Some(dir)) => Box::new(DirSink::create(dir, opts.force)?),
        (Format::OciLayout, None) => return Err(Error::Other("--oci-layout needs a directory".into())),
        _ => Box::new(TarSink::create(&opts.output, opts.force)?),
    };
    let done = copy::execute(source, sink, &plan, &CopyOptions { jobs: opts.jobs, progress: opts.progress, label: "export", keep_going: false })?;
    let output = opts.output.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "-".into());
    Ok(ExportReport { output, format: if opts.format == Format::OciLayout { "oci-layout" } else { "oci-archive" }.into(), bytes: done.output_bytes, images: reports, notes: vec![] })
}

fn blob_name(d: &Descriptor) -> String {
    format!("blobs/sha256/{}", d.digest.hex())
}

/// An OCI archive: one tar written in order (oci-layout, blobs, manifests, index.json) to a
/// temp file renamed at the commit, or to stdout; dropped uncommitted, the temp file goes.
struct TarSink {
    tw: Mutex<Option<TarWriter<Output>>>,
}

impl TarSink {
    fn create(output: &Option<PathBuf>, force: bool) -> Result<TarSink> {
        let mut tw = TarWriter::new(Output::create(output, force)?);
        if let Err(e) = tw.add_bytes("oci-layout", OCI_LAYOUT) {
            tw.into_inner().abort();
            return Err(Error::Other(format!("writing the archive: {e}")));
        }
        Ok(TarSink { tw: Mutex::new(Some(tw)) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut TarWriter<Output>) -> std::io::Result<T>, what: &str) -> Result<T> {
        let mut g = self.tw.lock().unwrap();
        f(g.as_mut().expect("open until commit")).map_err(|e| Error::Other(format!("{what}: {e}")))
    }
}

impl Sink for TarSink {
    fn parallel(&self) -> bool {
        false
    }
    fn put_blob(&self, desc: &Descriptor, from: &dyn Source, progress: &(dyn Fn(u64) + Sync)) -> Result<bool> {
        let mut r = from.blob(desc)?;
        self.with(|tw| tw.add_reader(&blob_name(desc), desc.size, &mut r), &format!("blob {}", desc.digest))?;
        progress(desc.size);
        Ok(true)
    }
    fn put_manifest(&self, desc: &Descriptor, bytes: &[u8]) -> Result<bool> {
        self.with(|tw| tw.add_bytes(&blob_name(desc), bytes), "writing the archive")?;
        Ok(true)
    }
    fn commit(self: Box<Self>, refs: &[(String, Descriptor)]) -> Result<u64> {
        self.with(|tw| tw.add_bytes("index.json", &index_json(refs)).and_then(|()| tw.end()), "writing the archive")?;
        let tw = self.tw.lock().unwrap().take().expect("committed once");
        let written = tw.written;
        tw.into_inner().commit()?;
        Ok(written)
    }
}

impl Drop for TarSink {
    fn drop(&mut self) {
        if let Some(tw) = self.tw.get_mut().unwrap().take() {
            tw.into_inner().abort();
        }
    }
}

/// An OCI layout directory, built under a temp name beside the final one (blobs copied on every
/// core, each durable as it completes) and renamed into place at the commit; dropped
/// uncommitted, the temp directory goes.
struct DirSink {
    dir: PathBuf,
    tmp: PathBuf,
    /// Where blobs will be once the layout is renamed into place: errors name that.
    shown: PathBuf,
    bytes: std::sync::atomic::AtomicU64,
    done: bool,
}

impl DirSink {
    fn create(dir: &Path, force: bool) -> Result<DirSink> {
        refuse_existing(dir, force)?;
        let tmp = crate::litter::claim_temp(dir);
        let _ = fs::remove_dir_all(&tmp);
        let sink = DirSink { dir: dir.to_path_buf(), shown: dir.join("blobs/sha256"), tmp, bytes: Default::default(), done: false };
        fs::create_dir_all(sink.tmp.join("blobs/sha256")).at(dir)?;
        Ok(sink)
    }

    fn count(&self, n: u64) {
        self.bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Sink for DirSink {
    fn parallel(&self) -> bool {
        true
    }
    fn put_blob(&self, desc: &Descriptor, from: &dyn Source, progress: &(dyn Fn(u64) + Sync)) -> Result<bool> {
        let shown = self.shown.join(desc.digest.hex());
        let mut f = fs::File::create(self.tmp.join(blob_name(desc))).at(&shown)?;
        crate::source::copy_verified(from, desc, &mut f, &shown, progress)?;
        f.sync_data().at(&shown)?;
        crate::writeback::drop_synced(&f);
        self.count(desc.size);
        Ok(true)
    }
    fn put_manifest(&self, desc: &Descriptor, bytes: &[u8]) -> Result<bool> {
        let shown = self.shown.join(desc.digest.hex());
        let mut f = fs::File::create(self.tmp.join(blob_name(desc))).at(&shown)?;
        f.write_all(bytes).and_then(|()| f.sync_data()).at(&shown)?;
        self.count(desc.size);
        Ok(true)
    }
    fn commit(mut self: Box<Self>, refs: &[(String, Descriptor)]) -> Result<u64> {
        let (dir, tmp) = (&self.dir, &self.tmp);
        let index = index_json(refs);
        fs::write(tmp.join("oci-layout"), OCI_LAYOUT).at(dir.join("oci-layout"))?;
        let mut f = fs::File::create(tmp.join("index.json")).at(dir.join("index.json"))?;
        f.write_all(&index).and_then(|()| f.sync_all()).at(dir.join("index.json"))?;
        fs::File::open(tmp.join("blobs/sha256")).and_then(|d| d.sync_all()).at(&self.shown)?;
        if dir.exists() {
            let old = dir.with_extension(format!("old-{}", std::process::id()));
            fs::rename(dir, &old).at(dir)?;
            fs::rename(tmp, dir).at(dir)?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(tmp, dir).at(dir)?;
        }
        self.done = true;
        Ok(self.bytes.load(std::sync::atomic::Ordering::Relaxed) + index.len() as u64)
    }
}

impl Drop for DirSink {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

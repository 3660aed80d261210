//! docker-archive export: many images in one tar, each layer (by diff_id) once, uncompressed and
//! checked against the config's diff_id as it is written; both the classic `manifest.json` +
//! `repositories` and the Docker ≥ 25 OCI layout, so old and new `docker load`, `podman load`
//! and `ctr images import` all read it.
//!
//! Tar headers need sizes first, and a layer's uncompressed size is only known once it has been
//! decompressed: workers decompress layers in parallel (a few ahead of the writer) into spool
//! files beside the output; the writer appends them in order and deletes them.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use serde::Deserialize;

use super::oci::ANNOTATION_CONTAINERD_NAME;
use super::tarw::TarWriter;
use super::{manifest, ExportOptions, ExportReport, ExportedImage, Sink};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::image::{media, ConfigInfo, Descriptor, ManifestKind, MAX_CONFIG};
use crate::reference::Reference;
use crate::source::Source;
use crate::store::ANNOTATION_REF_NAME;

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}
#[derive(Deserialize)]
struct ConfigRootFs {
    rootfs: RootFs,
}

/// One image as it will appear in the archive.
struct Planned {
    name: String,
    reference: Reference,
    config: Descriptor,
    config_bytes: Vec<u8>,
    platform: String,
    /// (compressed blob, diff_id) per layer, in order.
    layers: Vec<(Descriptor, Digest)>,
}

/// Resolves each reference to one image manifest (picking a platform from an index).
fn plan(source: &dyn Source, images: &[(String, Descriptor)], opts: &ExportOptions, notes: &mut Vec<String>) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    for (name, entry) in images {
        let top = manifest(source, entry, name)?;
        let image = match top.kind {
            ManifestKind::Image(im) => im,
            ManifestKind::Index(children) => {
                let pick = children.iter().find(|c| c.platform.as_ref().is_some_and(|p| opts.platform.matches(p)));
                let Some(c) = pick else {
                    let have: Vec<String> = children.iter().filter_map(|c| c.platform.as_ref().map(|p| p.to_string())).collect();
                    return Err(Error::Other(format!("{name}: no {} image in its index (it has: {}); use --platform", opts.platform, have.join(", "))));
                };
                if !opts.platform_given {
                    let have: Vec<String> = children.iter().filter_map(|c| c.platform.as_ref().map(|p| p.to_string())).collect();
                    notes.push(format!("{name} is multi-platform ({}): exporting {} (choose with --platform)", have.join(", "), opts.platform));
                }
                match manifest(source, c, name)?.kind {
                    ManifestKind::Image(im) => im,
                    ManifestKind::Index(_) => return Err(Error::Other(format!("{name}: nested index {} is not supported", c.digest))),
                }
            }
        };
        let config_bytes = source.read_small(&image.config, MAX_CONFIG)?;
        let info: ConfigInfo = serde_json::from_slice(&config_bytes).map_err(|e| Error::BadJson { what: format!("{name}: config {}", image.config.digest), reason: e.to_string() })?;
        if opts.platform_given && !opts.platform.matches(&info.platform()) {
            return Err(Error::Other(format!("{name} is {} only, not {} (fetch it with --platform {})", info.platform(), opts.platform, opts.platform)));
        }
        let rootfs: ConfigRootFs = serde_json::from_slice(&config_bytes).map_err(|e| Error::BadJson { what: format!("{name}: config {} rootfs", image.config.digest), reason: e.to_string() })?;
        if rootfs.rootfs.diff_ids.len() != image.layers.len() {
            return Err(Error::Other(format!(
                "{name}: its manifest has {} layers but its config lists {} diff_ids",
                image.layers.len(),
                rootfs.rootfs.diff_ids.len()
            )));
        }
        out.push(Planned {
            name: name.clone(),
            reference: name.parse()?,
            config: image.config.clone(),
            config_bytes,
            platform: info.platform().to_string(),
            layers: image.layers.into_iter().zip(rootfs.rootfs.diff_ids).collect(),
        });
    }
    Ok(out)
}

/// Decompresses one layer (gzip, zstd or plain, told apart by their magic bytes) into `out`,
/// checking the result against the diff_id; returns its size. The compressed blob is read
/// unverified: every byte written is checked against the diff_id instead, which the verified
/// config names (and a damaged blob fails to inflate or to match).
fn decompress_into(source: &dyn Source, desc: &Descriptor, diff_id: &Digest, what: &str, stop: &AtomicBool, out: &mut dyn Write) -> Result<u64> {
    let mut src = BufReader::with_capacity(1 << 20, source.open_unverified(desc)?);
    let head = src.fill_buf().map_err(|e| Error::Other(format!("{what}: {e}")))?.to_vec();
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pump = |r: &mut dyn Read| -> Result<()> {
        loop {
            if stop.load(Ordering::Relaxed) || crate::cancel::requested() {
                return Err(Error::Interrupted);
            }
            let n = r.read(&mut buf).map_err(|e| Error::Other(format!("{what}: {e}")))?;
            if n == 0 {
                return Ok(());
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| Error::Other(format!("{what}: writing: {e}")))?;
        }
    };
    if head.starts_with(&[0x1f, 0x8b]) {
        pump(&mut flate2::read::MultiGzDecoder::new(&mut src))?;
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut d = zstd::stream::read::Decoder::with_buffer(&mut src).map_err(|e| Error::Other(format!("{what}: {e}")))?;
        d.window_log_max(31).map_err(|e| Error::Other(format!("{what}: {e}")))?;
        pump(&mut d)?;
    } else {
        pump(&mut src)?;
    }
    let size = h.len();
    let found = h.finish();
    if &found != diff_id {
        return Err(Error::Other(format!("{what}: uncompressed content does not match its diff_id: expected {diff_id}, got {found}")));
    }
    Ok(size)
}

/// Decompresses one layer into an unnamed spool file in `dir` (whatever ends the process, the
/// kernel frees it), rewound for the writer.
fn spool_layer(source: &dyn Source, desc: &Descriptor, diff_id: &Digest, dir: &Path, what: &str, stop: &AtomicBool) -> Result<(File, u64)> {
    let file = tempfile::tempfile_in(dir).at(dir)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let size = decompress_into(source, desc, diff_id, what, stop, &mut out)?;
    let mut file = out.into_inner().map_err(|e| Error::Other(format!("{what}: writing the spool in {}: {}", dir.display(), e.error())))?;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0)).at(dir)?;
    Ok((file, size))
}

/// The spool results, shared by the decompression workers and the writer.
struct Spool {
    state: Mutex<SpoolState>,
    cv: Condvar,
}
struct SpoolState {
    next: usize,
    written: usize,
    done: BTreeMap<usize, Result<(File, u64)>>,
}

pub fn write(source: &dyn Source, images: &[(String, Descriptor)], opts: &ExportOptions) -> Result<ExportReport> {
    let mut notes = Vec::new();
    let mut planned = plan(source, images, opts, &mut notes)?;
    planned.sort_by(|a, b| a.name.cmp(&b.name));
    for n in &notes {
        eprintln!("note: {n}");
    }
    // Each diff_id once, in the order the writer needs them.
    let mut layers: Vec<(Descriptor, Digest, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    for p in &planned {
        for (d, diff) in &p.layers {
            if seen.insert(diff.clone()) {
                layers.push((d.clone(), diff.clone(), p.name.clone()));
            }
        }
    }
    // Spool files live beside the output (same disk), or in the temp dir for stdout.
    let spool_dir = match opts.output.as_ref().and_then(|p| p.parent()) {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        Some(_) => PathBuf::from("."),
        None => std::env::temp_dir(),
    };
    let sink = Sink::create(&opts.output, opts.force)?;
    let spool = Spool { state: Mutex::new(SpoolState { next: 0, written: 0, done: BTreeMap::new() }), cv: Condvar::new() };
    let stop = AtomicBool::new(false);
    let jobs = opts.jobs.max(1);
    // Into a file the writer decompresses the layer it needs itself, straight into the archive
    // (its header is written afterwards); workers spool only the layers ahead of it. Into a
    // pipe every layer is spooled, since a tar header must precede its data.
    let direct = opts.output.is_some();
    let workers = if direct { jobs - 1 } else { jobs };
    // How many layers may be claimed beyond the one being written (bounds the spool).
    let ahead = 2 * jobs + 2;
    let total_compressed: u64 = layers.iter().map(|l| l.0.size).sum();
    let progress = crate::progress::Progress::new(opts.progress, total_compressed, "export");
    let bar = progress.blob("", 0);

    let result = std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = {
                    let mut st = spool.state.lock().unwrap();
                    // Stay at most 2×jobs layers ahead of the writer: the spool stays small.
                    while st.next < layers.len() && st.next >= st.written + ahead && !stop.load(Ordering::Relaxed) {
                        st = spool.cv.wait(st).unwrap();
                    }
                    if st.next >= layers.len() || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    st.next += 1;
                    st.next - 1
                };
                let (desc, diff, name) = &layers[i];
                let what = format!("{name}: layer {}", desc.digest);
                let r = spool_layer(source, desc, diff, &spool_dir, &what, &stop);
                bar.inc(desc.size);
                let mut st = spool.state.lock().unwrap();
                st.done.insert(i, r);
                spool.cv.notify_all();
            });
        }
        let direct_layer = |i: usize, out: &mut Sink| -> Result<u64> {
            let (desc, diff, name) = &layers[i];
            let what = format!("{name}: layer {}", desc.digest);
            let n = decompress_into(source, desc, diff, &what, &stop, out)?;
            bar.inc(desc.size);
            Ok(n)
        };
        let spool_one = |j: usize| -> Result<(File, u64)> {
            let (desc, diff, name) = &layers[j];
            let what = format!("{name}: layer {}", desc.digest);
            let r = spool_layer(source, desc, diff, &spool_dir, &what, &stop);
            bar.inc(desc.size);
            r
        };
        let hands: Hands = (&direct_layer, &spool_one);
        let r = write_tar(sink, &planned, &layers, &spool, ahead, direct.then_some(hands));
        stop.store(true, Ordering::Relaxed);
        spool.cv.notify_all();
        r
    });
    progress.finish();
    let (sink, bytes, digests) = match result {
        Ok(x) => x,
        Err((sink, e)) => {
            sink.abort();
            return Err(e);
        }
    };
    sink.commit()?;
    let images = planned
        .iter()
        .map(|p| ExportedImage {
            reference: p.name.clone(),
            image_id: p.config.digest.clone(),
            repo_tags: repo_tag(&p.reference).into_iter().collect(),
            platform: p.platform.clone(),
            manifest_digest: digests[&p.name].clone(),
            layers: p.layers.len(),
        })
        .collect();
    Ok(ExportReport {
        output: opts.output.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "-".into()),
        format: "docker-archive".into(),
        bytes,
        images,
        notes,
    })
}

/// RepoTags are fully qualified (`docker.io/library/redis:7`), as skopeo writes them: docker
/// shows them in its familiar form (`redis:7`), and podman keeps them instead of prefixing
/// `localhost/` to a name without a host.
fn repo_tag(r: &Reference) -> Option<String> {
    r.tag.as_ref().map(|t| format!("{}/{}:{t}", r.registry, r.repository))
}

/// The OCI manifest docker ≥ 25 expects: config plus uncompressed layers named by diff_id.
fn generated_manifest(p: &Planned, sizes: &BTreeMap<Digest, u64>) -> (Vec<u8>, Digest) {
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": p.config.digest, "size": p.config.size},
        "layers": p.layers.iter().map(|(_, diff)| serde_json::json!({
            "mediaType": media::OCI_LAYER, "digest": diff, "size": sizes.get(diff).copied().unwrap_or(0),
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&doc).expect("json");
    let d = Digest::of(&bytes);
    (bytes, d)
}

/// The sink, bytes written and each image's generated manifest digest; or the sink to abort.
type TarResult = std::result::Result<(Sink, u64, BTreeMap<String, Digest>), (Sink, Error)>;

/// Decompress layer i straight into the archive; spool layer j.
type Hands<'a> = (&'a dyn Fn(usize, &mut Sink) -> Result<u64>, &'a dyn Fn(usize) -> Result<(File, u64)>);

fn write_tar(sink: Sink, planned: &[Planned], layers: &[(Descriptor, Digest, String)], spool: &Spool, ahead: usize, direct: Option<Hands>) -> TarResult {
    let mut tw = TarWriter::new(sink);
    let io = |e: std::io::Error| Error::Other(format!("writing the archive: {e}"));
    let mut sizes: BTreeMap<Digest, u64> = BTreeMap::new();
    let mut written_blobs: BTreeSet<Digest> = BTreeSet::new();
    let mut index_entries = Vec::new();
    let mut manifest_json: Vec<serde_json::Value> = Vec::new();
    let mut by_image: BTreeMap<(Digest, Vec<Digest>), usize> = BTreeMap::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut next_layer = 0usize;
    let mut digests = BTreeMap::new();
    let res = (|| -> Result<()> {
        for p in planned {
            if written_blobs.insert(p.config.digest.clone()) {
                tw.add_bytes(&format!("blobs/sha256/{}", p.config.digest.hex()), &p.config_bytes).map_err(io)?;
            }
            for (_, diff) in &p.layers {
                if sizes.contains_key(diff) {
                    continue;
                }
                // Layers are spooled in exactly this order.
                let i = next_layer;
                debug_assert_eq!(&layers[i].1, diff);
                // Take the layer if nobody has; while a worker has it, spool a later one
                // instead of waiting, so every core keeps decompressing.
                enum Next {
                    Mine,
                    Spooled(Result<(File, u64)>),
                    Help(usize),
                }
                let size = loop {
                    let next = {
                        let mut st = spool.state.lock().unwrap();
                        loop {
                            if direct.is_some() && st.next == i {
                                st.next += 1;
                                break Next::Mine;
                            }
                            if let Some(r) = st.done.remove(&i) {
                                break Next::Spooled(r);
                            }
                            if direct.is_some() && st.next < layers.len() && st.next < st.written + ahead {
                                st.next += 1;
                                break Next::Help(st.next - 1);
                            }
                            st = spool.cv.wait(st).unwrap();
                        }
                    };
                    match next {
                        Next::Mine => {
                            let f = direct.unwrap().0;
                            let mut failed = None;
                            let entry = format!("blobs/sha256/{}", diff.hex());
                            let n = tw.add_streaming(&entry, &mut |out: &mut Sink| {
                                f(i, out).map_err(|e| {
                                    let msg = e.to_string();
                                    failed = Some(e);
                                    std::io::Error::other(msg)
                                })
                            });
                            match (n, failed) {
                                (_, Some(e)) => return Err(e),
                                (Err(e), None) => return Err(io(e)),
                                (Ok(n), None) => break n,
                            }
                        }
                        Next::Spooled(r) => {
                            let (mut f, size) = r?;
                            tw.add_file(&format!("blobs/sha256/{}", diff.hex()), &mut f, size).map_err(io)?;
                            break size;
                        }
                        Next::Help(j) => {
                            let r = (direct.unwrap().1)(j);
                            let mut st = spool.state.lock().unwrap();
                            st.done.insert(j, r);
                            spool.cv.notify_all();
                        }
                    }
                };
                sizes.insert(diff.clone(), size);
                next_layer += 1;
                let mut st = spool.state.lock().unwrap();
                st.written = next_layer;
                spool.cv.notify_all();
            }
            let (mbytes, mdigest) = generated_manifest(p, &sizes);
            digests.insert(p.name.clone(), mdigest.clone());
            if written_blobs.insert(mdigest.clone()) {
                tw.add_bytes(&format!("blobs/sha256/{}", mdigest.hex()), &mbytes).map_err(io)?;
            }
            let mut ann = serde_json::Map::new();
            ann.insert(ANNOTATION_CONTAINERD_NAME.into(), p.name.clone().into());
            if let Some(t) = &p.reference.tag {
                ann.insert(ANNOTATION_REF_NAME.into(), t.clone().into());
            }
            index_entries.push(serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": mdigest, "size": mbytes.len(), "annotations": ann}));
            let key = (p.config.digest.clone(), p.layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>());
            let slot = *by_image.entry(key).or_insert_with(|| {
                manifest_json.push(serde_json::json!({
                    "Config": format!("blobs/sha256/{}", p.config.digest.hex()),
                    "RepoTags": [],
                    "Layers": p.layers.iter().map(|(_, d)| format!("blobs/sha256/{}", d.hex())).collect::<Vec<_>>(),
                }));
                manifest_json.len() - 1
            });
            if let Some(tag) = repo_tag(&p.reference) {
                manifest_json[slot]["RepoTags"].as_array_mut().unwrap().push(tag.into());
                if let (Some(t), Some((_, top))) = (&p.reference.tag, p.layers.last()) {
                    repositories.entry(format!("{}/{}", p.reference.registry, p.reference.repository)).or_default().insert(t.clone(), top.hex().to_string());
                }
            }
        }
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": index_entries});
        tw.add_bytes("index.json", &serde_json::to_vec(&index).expect("json")).map_err(io)?;
        tw.add_bytes("manifest.json", &serde_json::to_vec(&manifest_json).expect("json")).map_err(io)?;
        if !repositories.is_empty() {
            tw.add_bytes("repositories", &serde_json::to_vec(&repositories).expect("json")).map_err(io)?;
        }
        tw.add_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
        tw.end().map_err(io)
    })();
    let written = tw.written;
    match res {
        Ok(()) => Ok((tw.into_inner(), written, digests)),
        Err(e) => Err((tw.into_inner(), e)),
    }
}

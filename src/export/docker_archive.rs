//! docker-archive export: many images in one tar, each layer (by diff_id) once, uncompressed and
//! checked against the config's diff_id as it is written; both the classic `manifest.json` +
//! `repositories` and the Docker ≥ 25 OCI layout, so old and new `docker load`, `podman load`
//! and `ctr images import` all read it.
//!
//! Tar headers need sizes first: into a file, the sizes the blobs announce reserve each layer's
//! place and every core decompresses straight into it (see `write_placed`); into a pipe,
//! layers are spooled a few ahead of the writer. Configs and the JSON files come last.
// Failures hand the output back as `(Output, Error)` so the caller removes the temp file; that
// pair is large, but there is one per export.
#![allow(clippy::result_large_err)]
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use super::tarw::TarWriter;
use super::{manifest, ExportOptions, ExportReport, ExportedImage, Output};
use super::layers::{size_hint, spool_layer, Layer, Placed, Region};
use crate::digest::{DiffId, Digest};
use crate::error::{Error, Result};
use crate::image::{is_config_type, is_layer_type, media, ConfigInfo, Descriptor, ManifestKind};
use crate::limits;
use crate::reference::Reference;
use crate::source::Source;
use crate::store::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};

/// One image as it will appear in the archive.
struct Planned {
    name: String,
    reference: Reference,
    config: Descriptor,
    config_bytes: Vec<u8>,
    platform: String,
    /// (compressed blob, diff_id) per layer, in order.
    layers: Vec<(Descriptor, DiffId)>,
}

/// Resolves each reference to one image manifest (picking a platform from an index).
fn plan(source: &dyn Source, images: &[(String, Descriptor)], opts: &ExportOptions, notes: &mut Vec<String>) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    for (name, entry) in images {
        let top = manifest(source, entry, name)?;
        let image = match top.kind {
            ManifestKind::Image(im) => im,
            ManifestKind::Index(children) => {
                let Some(c) = crate::graph::pick_platform(&children, &opts.platform) else {
                    let have = crate::graph::platforms(&children);
                    return Err(Error::Other(format!("{name}: no {} image in its index (it has: {}); use --platform", opts.platform, have.join(", "))));
                };
                if !opts.platform_given {
                    let have = crate::graph::platforms(&children);
                    notes.push(format!("{name} is multi-platform ({}): exporting {} (choose with --platform)", have.join(", "), opts.platform));
                }
                match manifest(source, c, name)?.kind {
                    ManifestKind::Image(im) => im,
                    ManifestKind::Index(_) => return Err(Error::Other(format!("{name}: nested index {} is not supported", c.digest))),
                }
            }
        };
        // docker and podman load only container images: refuse (or with --all, skip) anything
        // else by its config type, and never guess at a layer type they would not know.
        if !is_config_type(&image.config.media_type) {
            if opts.skip_non_images {
                notes.push(format!("{name}: left out: not a container image (its config is {})", image.config.media_type));
                continue;
            }
            return Err(Error::UnsupportedMediaType { what: format!("{name}: not a container image, cannot go into a docker-archive (config {})", image.config.digest), media_type: crate::error::one_line(&image.config.media_type, 200) });
        }
        if let Some(l) = image.layers.iter().find(|l| !is_layer_type(&l.media_type)) {
            // An Ollama model has a Docker config but model layers: not an image either.
            if opts.skip_non_images {
                notes.push(format!("{name}: left out: not a container image (layer {} is {})", l.digest, crate::error::one_line(&l.media_type, 200)));
                continue;
            }
            return Err(Error::UnsupportedMediaType { what: format!("{name}: layer {}", l.digest), media_type: crate::error::one_line(&l.media_type, 200) });
        }
        let config_bytes = source.read_small(&image.config, limits::CONFIG)?;
        let info = ConfigInfo::parse(&config_bytes, &format!("{name}: config {}", image.config.digest))?;
        if opts.platform_given && !opts.platform.matches(&info.platform()) {
            return Err(Error::Other(format!("{name} is {} only, not {} (fetch it with --platform {})", info.platform(), opts.platform, opts.platform)));
        }
        let diff_ids = crate::image::diff_ids(&config_bytes, &format!("{name}: config {} rootfs", image.config.digest))?;
        if diff_ids.len() != image.layers.len() {
            return Err(Error::Other(format!("{name}: its manifest has {} layers but its config lists {} diff_ids", image.layers.len(), diff_ids.len())));
        }
        out.push(Planned {
            name: name.clone(),
            reference: name.parse()?,
            config: image.config.clone(),
            config_bytes,
            platform: info.platform().to_string(),
            layers: image.layers.into_iter().zip(diff_ids).collect(),
        });
    }
    Ok(out)
}

pub fn write(source: &dyn Source, images: &[(String, Descriptor)], opts: &ExportOptions) -> Result<ExportReport> {
    let mut notes = Vec::new();
    let mut planned = plan(source, images, opts, &mut notes)?;
    planned.sort_by(|a, b| a.name.cmp(&b.name));
    for n in &notes {
        eprintln!("note: {n}");
    }
    if planned.is_empty() {
        return Err(Error::Other("nothing to export: none of the chosen references is a container image".into()));
    }
    // Each diff_id once, in image order.
    let mut layers: Vec<Layer> = Vec::new();
    let mut seen = BTreeSet::new();
    for p in &planned {
        for (d, diff) in &p.layers {
            if seen.insert(diff.clone()) {
                layers.push(Layer { desc: d.clone(), diff_id: diff.clone(), image: p.name.clone() });
            }
        }
    }
    // Spool files live beside the output (same disk), or in the temp dir for stdout.
    let spool_dir = match opts.output.as_ref().and_then(|p| p.parent()) {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        Some(_) => PathBuf::from("."),
        None => std::env::temp_dir(),
    };
    let total_compressed: u64 = layers.iter().map(|l| l.desc.size).sum();
    let progress = crate::progress::Progress::new(opts.progress, total_compressed, "export");
    let bar = progress.blob("", 0);
    let ctx = Ctx { source, layers: &layers, spool_dir: &spool_dir, jobs: opts.jobs.max(1), bar: &bar };
    let layout = Layout::new(&ctx)?;
    let sink = Output::create(&opts.output, opts.force)?;
    let result = if sink.file().is_some() { write_placed(sink, &ctx, &layout) } else { write_streamed(sink, &ctx, &layout) };
    let result = result.and_then(|(sink, start, sizes)| {
        let mut tw = TarWriter::at(sink, start);
        match write_metadata(&mut tw, &planned, &sizes) {
            Ok(digests) => Ok((tw.written, tw.into_inner(), digests)),
            Err(e) => Err((tw.into_inner(), e)),
        }
    });
    progress.finish();
    let (bytes, sink, digests) = match result {
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

/// What the layer writers share.
struct Ctx<'a> {
    source: &'a dyn Source,
    layers: &'a [Layer],
    spool_dir: &'a Path,
    jobs: usize,
    bar: &'a crate::progress::BlobBar,
}

/// The sink and how far the archive got, plus each layer's size; or the sink to abort.
type LayersResult = std::result::Result<(Output, u64, BTreeMap<DiffId, u64>), (Output, Error)>;

fn entry_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn round_up(n: u64) -> u64 {
    n.div_ceil(512) * 512
}

/// Where every layer goes in the archive, decided before any is decompressed, so that a file
/// and a pipe get the same bytes. Layers whose blob announces its uncompressed size come first,
/// biggest first, each in a place of known size; the others follow in image order. A layer
/// whose announced size proves wrong (a well-compressed gzip over 4 GiB, several members) leaves a
/// zero-filled padding entry (`.ocibundle-padding-N`, ignored by every loader) in its place
/// and joins the others.
struct Layout {
    /// (layer, announced size, offset of its tar header)
    placed: Vec<(usize, u64, u64)>,
    /// Layers of unknown size, in image order.
    rest: Vec<usize>,
    /// Where the placed part ends.
    end: u64,
}

impl Layout {
    fn new(ctx: &Ctx) -> Result<Layout> {
        let mut placed = Vec::new();
        let mut rest = Vec::new();
        for (i, l) in ctx.layers.iter().enumerate() {
            match size_hint(ctx.source, &l.desc)? {
                Some(h) => placed.push((i, h, 0)),
                None => rest.push(i),
            }
        }
        // Biggest first: the longest jobs start first and every core stays busy to the end.
        placed.sort_by_key(|&(i, h, _)| (std::cmp::Reverse(h), i));
        let mut end = 0u64;
        for p in &mut placed {
            p.2 = end;
            end += 512 + round_up(p.1);
        }
        Ok(Layout { placed, rest, end })
    }
}

fn padding_name(i: usize) -> String {
    format!(".ocibundle-padding-{i}")
}

/// Appends the layers that were not placed (unknown size or a wrong hint), in image order.
fn append_rest(mut tw: TarWriter<Output>, ctx: &Ctx, mut rest: BTreeMap<usize, (File, u64)>, mut sizes: BTreeMap<DiffId, u64>) -> LayersResult {
    for (i, (f, size)) in rest.iter_mut() {
        let layer = &ctx.layers[*i];
        if let Err(e) = tw.add_file(&entry_name(layer.diff_id.as_digest()), f, *size) {
            return Err((tw.into_inner(), Error::Other(format!("{}: writing the archive: {e}", layer.what()))));
        }
        sizes.insert(layer.diff_id.clone(), *size);
    }
    let written = tw.written;
    Ok((tw.into_inner(), written, sizes))
}

/// Into a file: every core decompresses placed layers straight into their places at once (no
/// spool copy, no waiting on one another); the rest is spooled and appended after them.
fn write_placed(mut sink: Output, ctx: &Ctx, layout: &Layout) -> LayersResult {
    let tasks: Vec<(usize, Option<(u64, u64)>)> =
        layout.placed.iter().map(|&(i, h, at)| (i, Some((h, at)))).chain(layout.rest.iter().map(|&i| (i, None))).collect();
    let sizes: Mutex<BTreeMap<DiffId, u64>> = Mutex::new(BTreeMap::new());
    let rest: Mutex<BTreeMap<usize, (File, u64)>> = Mutex::new(BTreeMap::new());
    let stop = AtomicBool::new(false);
    let file = sink.file().expect("a file sink");
    // The first failure stops the other workers (their `Interrupted` never hides it).
    let r = crate::pool::try_each_stopping(&tasks, ctx.jobs, &stop, |&(i, place), _| {
        let layer = &ctx.layers[i];
        let r = (|| -> Result<()> {
            let Some((hint, at)) = place else {
                rest.lock().unwrap().insert(i, spool_layer(ctx.source, layer, ctx.spool_dir, &stop)?);
                return Ok(());
            };
            let placed = Region::new(file, at + 512, hint, ctx.spool_dir).fill(ctx.source, layer, &stop)?;
            let header = match placed {
                Placed::InPlace(size) => {
                    sizes.lock().unwrap().insert(layer.diff_id.clone(), size);
                    TarWriter::<Output>::header(&entry_name(layer.diff_id.as_digest()), size)
                }
                Placed::Spilled(f, size) => {
                    rest.lock().unwrap().insert(i, (f, size));
                    zero_range(file, at + 512, round_up(hint)).and_then(|()| TarWriter::<Output>::header(&padding_name(i), round_up(hint)))
                }
            };
            header
                .and_then(|h| std::os::unix::fs::FileExt::write_all_at(file, &h, at))
                .map_err(|e| Error::Other(format!("{}: writing the archive: {e}", layer.what())))
        })();
        ctx.bar.inc(layer.desc.size);
        r
    });
    if let Err(e) = r {
        return Err((sink, e));
    }
    if let Err(e) = sink.skip_to(layout.end) {
        return Err((sink, Error::Other(format!("writing the archive: {e}"))));
    }
    append_rest(TarWriter::at(sink, layout.end), ctx, rest.into_inner().unwrap(), sizes.into_inner().unwrap())
}

/// Zeroes a range of the file: a hole punched where the filesystem can, zeros written elsewhere.
fn zero_range(file: &File, start: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an fd we hold.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, start as i64, len as i64) };
    if r == 0 {
        return Ok(());
    }
    let zeros = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        std::os::unix::fs::FileExt::write_all_at(file, &zeros[..n], start + done)?;
        done += n as u64;
    }
    Ok(())
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

/// Into a pipe, where a tar header must precede its data: workers decompress layers, in the
/// layout's order, into spool files a few ahead of the writer, which appends them in order.
fn write_streamed(sink: Output, ctx: &Ctx, layout: &Layout) -> LayersResult {
    let order: Vec<usize> = layout.placed.iter().map(|p| p.0).chain(layout.rest.iter().copied()).collect();
    let spool = Spool { state: Mutex::new(SpoolState { next: 0, written: 0, done: BTreeMap::new() }), cv: Condvar::new() };
    let stop = AtomicBool::new(false);
    // How many layers may be claimed beyond the one being written (bounds the spool).
    let ahead = 2 * ctx.jobs + 2;
    std::thread::scope(|s| {
        for _ in 0..ctx.jobs {
            s.spawn(|| loop {
                let k = {
                    let mut st = spool.state.lock().unwrap();
                    while st.next < order.len() && st.next >= st.written + ahead && !stop.load(Ordering::Relaxed) {
                        st = spool.cv.wait(st).unwrap();
                    }
                    if st.next >= order.len() || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    st.next += 1;
                    st.next - 1
                };
                let layer = &ctx.layers[order[k]];
                let r = spool_layer(ctx.source, layer, ctx.spool_dir, &stop);
                ctx.bar.inc(layer.desc.size);
                let mut st = spool.state.lock().unwrap();
                st.done.insert(k, r);
                spool.cv.notify_all();
            });
        }
        let mut tw = TarWriter::new(sink);
        let mut sizes = BTreeMap::new();
        let mut rest = BTreeMap::new();
        let res = (|| -> Result<()> {
            let io = |e: std::io::Error| Error::Other(format!("writing the archive: {e}"));
            for (k, &i) in order.iter().enumerate() {
                let r = {
                    let mut st = spool.state.lock().unwrap();
                    loop {
                        if let Some(r) = st.done.remove(&k) {
                            break r;
                        }
                        st = spool.cv.wait(st).unwrap();
                    }
                };
                let (mut f, size) = r?;
                let layer = &ctx.layers[i];
                match layout.placed.get(k) {
                    Some(&(_, hint, _)) if hint != size => {
                        let pad = round_up(hint);
                        tw.add_reader(&padding_name(i), pad, &mut std::io::Read::take(std::io::repeat(0), pad)).map_err(io)?;
                        rest.insert(i, (f, size));
                    }
                    Some(_) => {
                        tw.add_file(&entry_name(layer.diff_id.as_digest()), &mut f, size).map_err(io)?;
                        sizes.insert(layer.diff_id.clone(), size);
                    }
                    None => {
                        rest.insert(i, (f, size));
                    }
                }
                // The rest in image order, as into a file: what comes before the next unknown
                // one (or everything, at the end) can go.
                if k + 1 >= layout.placed.len() {
                    let keep = match layout.rest.get(k + 1 - layout.placed.len()) {
                        Some(&next) => rest.split_off(&next),
                        None => BTreeMap::new(),
                    };
                    for (j, (mut f, size)) in std::mem::replace(&mut rest, keep) {
                        let l = &ctx.layers[j];
                        tw.add_file(&entry_name(l.diff_id.as_digest()), &mut f, size).map_err(io)?;
                        sizes.insert(l.diff_id.clone(), size);
                    }
                }
                let mut st = spool.state.lock().unwrap();
                st.written = k + 1;
                spool.cv.notify_all();
            }
            Ok(())
        })();
        if res.is_err() {
            stop.store(true, Ordering::Relaxed);
            spool.cv.notify_all();
        }
        let written = tw.written;
        match res {
            Ok(()) => Ok((tw.into_inner(), written, sizes)),
            Err(e) => Err((tw.into_inner(), e)),
        }
    })
}

/// RepoTags are fully qualified (`docker.io/library/redis:7`), as skopeo writes them: docker
/// shows them in its familiar form (`redis:7`), and podman keeps them instead of prefixing
/// `localhost/` to a name without a host.
fn repo_tag(r: &Reference) -> Option<String> {
    r.tag.as_ref().map(|t| format!("{}/{}:{t}", r.registry, r.repository))
}

/// The OCI manifest docker ≥ 25 expects: config plus uncompressed layers named by diff_id.
fn generated_manifest(p: &Planned, sizes: &BTreeMap<DiffId, u64>) -> (Vec<u8>, Digest) {
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

/// Writes configs, generated manifests, `index.json`, `manifest.json`, `repositories` and
/// `oci-layout` after the layers (whose sizes the generated manifests need), then ends the
/// archive. Returns each image's generated manifest digest.
fn write_metadata(tw: &mut TarWriter<Output>, planned: &[Planned], sizes: &BTreeMap<DiffId, u64>) -> Result<BTreeMap<String, Digest>> {
    let io = |e: std::io::Error| Error::Other(format!("writing the archive: {e}"));
    let mut written_blobs: BTreeSet<Digest> = BTreeSet::new();
    let mut index_entries = Vec::new();
    let mut manifest_json: Vec<serde_json::Value> = Vec::new();
    let mut by_image: BTreeMap<(Digest, Vec<DiffId>), usize> = BTreeMap::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut digests = BTreeMap::new();
    for p in planned {
        if written_blobs.insert(p.config.digest.clone()) {
            tw.add_bytes(&entry_name(&p.config.digest), &p.config_bytes).map_err(io)?;
        }
        let (mbytes, mdigest) = generated_manifest(p, sizes);
        digests.insert(p.name.clone(), mdigest.clone());
        if written_blobs.insert(mdigest.clone()) {
            tw.add_bytes(&entry_name(&mdigest), &mbytes).map_err(io)?;
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
                "Config": entry_name(&p.config.digest),
                "RepoTags": [],
                "Layers": p.layers.iter().map(|(_, d)| entry_name(d.as_digest())).collect::<Vec<_>>(),
            }));
            manifest_json.len() - 1
        });
        if let Some(tag) = repo_tag(&p.reference) {
            manifest_json[slot]["RepoTags"].as_array_mut().unwrap().push(tag.into());
            if let (Some(t), Some((_, top))) = (&p.reference.tag, p.layers.last()) {
                repositories.entry(format!("{}/{}", p.reference.registry, p.reference.repository)).or_default().insert(t.clone(), top.as_digest().hex().to_string());
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
    tw.end().map_err(io)?;
    Ok(digests)
}

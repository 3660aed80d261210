//! Writing a bundle in format version 2: every chunkable blob (layers, artifact files) analysed
//! once (in parallel, cached in the store), its new chunks packed once into zstd frames while
//! the layer is checked against its recipe, then the recipes, the whole blobs (configs,
//! manifests, indexes, layers with no proven exact rebuild), the index and the trailer.
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::Mutex;

use sha2::Digest as _;

use super::format::{encode_entry, encode_header, Index, IndexEntry, PackInfo, RawLayer, RecipeInfo, Required, KIND_BLOB, KIND_PACK, KIND_RECIPE, MEDIA_PACK, MEDIA_RECIPE, VERSION_CHUNKED, VOLUME_HEADER_LEN};
use super::plan::BundlePlan;
use super::volumes::{Target, VolumeWriter};
use super::writer::{checked, io_err, write_blob_entry, write_index, BlobChecker, WriteReport};
use crate::chunk::analyze::{analyze, walk, Analyzed, Cache};
use crate::digest::{BundleId, Digest};
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::progress::Progress;
use crate::source::Source;
use crate::store::Store;

/// How chunks are packed: frames of about this many bytes before compression (the zstd window
/// is the frame), at this level. Chosen by measurement, docs/design.md "Bundle format version 2".
pub const PACK_SIZE: usize = 16 << 20;
pub const LEVEL: i32 = 9;
/// Blobs smaller than this are carried whole: a recipe would cost more than it saves.
const CHUNK_MIN_BLOB: u64 = 32 << 10;

pub struct Options<'a> {
    pub jobs: usize,
    /// The store whose analysis cache is read and filled.
    pub cache: Option<&'a Store>,
    /// Chunks the receiving side can cut from its own layers (a delta's base), with those layers.
    pub base: Option<&'a ChunkBase>,
    pub progress: bool,
}

/// Chunks a delta leaves to its base: every chunk of the base's layers, and which layers they are.
#[derive(Default)]
pub struct ChunkBase {
    pub chunks: HashSet<[u8; 32]>,
    pub layers: BTreeMap<Digest, u64>,
}

/// Whether a blob is worth analysing: anything but manifests, indexes and configs, above a size.
pub fn chunkable(d: &Descriptor) -> bool {
    !(d.media_type.is_index() || d.media_type.is_manifest() || d.media_type.is_config()) && d.size >= CHUNK_MIN_BLOB
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The analysis of one blob: from the store's cache, or worked out (and cached).
pub fn analysis(source: &dyn Source, d: &Descriptor, cache: Option<&Store>) -> Result<Analyzed> {
    let cache = cache.map(|store| Cache { store });
    if let Some(a) = cache.as_ref().and_then(|c| c.get(d)) {
        return Ok(a);
    }
    let a = analyze(source, d, &source.what_blob(d))?;
    if let Some(c) = &cache {
        c.put(d, &a)?;
    }
    Ok(a)
}

/// What a compression thread is given: pack `seq`, to compress from its bytes, or to copy from
/// the pack cache (whose entry was checked and hashes to the digest).
enum PackJob {
    Compress(u64, Vec<u8>),
    Cached(u64, Digest),
}

/// A planned pack: its chunks (name, length), its pack-cache key, and the digest of its cached
/// frame when the cache holds a checked one.
struct PlannedPack {
    chunks: Vec<([u8; 32], u32)>,
    key: [u8; 32],
    cached: Option<Digest>,
}

/// Cuts the chunks the layers bring, in bundle order, into packs (where `pack_ends` says), and
/// notes for each layer the packs its chunks go to.
fn plan_packs(descs: &[Descriptor], analysed: &BTreeMap<Digest, Analyzed>, emits: &BTreeMap<Digest, HashSet<usize>>, pack_size: usize, level: i32) -> (Vec<PlannedPack>, BTreeMap<Digest, std::ops::Range<usize>>) {
    let mut packs = Vec::new();
    let mut layers = BTreeMap::new();
    let (mut cur, mut len) = (Vec::new(), 0usize);
    let close = |cur: &mut Vec<([u8; 32], u32)>, packs: &mut Vec<PlannedPack>| {
        let chunks = std::mem::take(cur);
        packs.push(PlannedPack { key: super::packcache::key(&chunks, level), chunks, cached: None });
    };
    for d in descs {
        let Some(Analyzed::Recipe { recipe, .. }) = analysed.get(&d.digest) else { continue };
        let emit = &emits[&d.digest];
        let first = packs.len();
        let mut any = false;
        for (i, (sha, n)) in recipe.chunks().enumerate() {
            if !emit.contains(&i) {
                continue;
            }
            any = true;
            cur.push((*sha, n));
            len += n as usize;
            if pack_ends(len, sha, pack_size) {
                close(&mut cur, &mut packs);
                len = 0;
            }
        }
        // The packs this layer's chunks go to: from the one open when it started to the one
        // open (or just closed) now.
        let last = if !any { first } else if cur.is_empty() { packs.len() } else { packs.len() + 1 };
        layers.insert(d.digest.clone(), first..last);
    }
    if !cur.is_empty() {
        close(&mut cur, &mut packs);
    }
    (packs, layers)
}

/// Whether a pack holding `len` bytes ends after the chunk named `sha`: from half the target size
/// on, at the first chunk whose name starts with byte 0 or 1 (1 in 128 chunks: with the corpus's
/// ~57 KiB chunks, packs average about the target), and at 1.5 times the target whatever the
/// chunk. Content-defined, so a bundle with a few more (or fewer) chunks somewhere keeps the other
/// packs as they were: cut at a fixed size, every pack after the change shifted, and how well the
/// regrouped packs compress moved the bundle by up to a MB (engine-c added to engine-a/b: +1.4 MB
/// at level 9, of which 0.8 MB was the shift).
fn pack_ends(len: usize, sha: &[u8; 32], target: usize) -> bool {
    (len >= target / 2 && sha[0] < 2) || len >= target + target / 2
}

fn compress_frame(raw: &[u8], level: i32) -> Result<Vec<u8>> {
    use zstd::stream::raw::CParameter;
    let mut c = zstd::bulk::Compressor::new(level).map_err(|e| Error::Other(format!("zstd: {e}")))?;
    let wlog = (raw.len().max(1 << 10) as f64).log2().ceil() as u32;
    c.set_parameter(CParameter::WindowLog(wlog.clamp(10, crate::limits::ZSTD_WINDOW_LOG))).map_err(|e| Error::Other(format!("zstd: {e}")))?;
    c.set_parameter(CParameter::ContentSizeFlag(true)).map_err(|e| Error::Other(format!("zstd: {e}")))?;
    c.compress(raw).map_err(|e| Error::Other(format!("zstd: {e}")))
}

/// The bundle id of a version 2 bundle: what version 1 would have, and the version.
fn id_v2(plan: &BundlePlan) -> BundleId {
    let mut h = sha2::Sha256::new();
    h.update(plan.bundle_id.bytes());
    h.update(b"ocibundle format 2, chunks");
    BundleId(h.finalize().into())
}

/// How many bytes went which way, for `size`/`inspect`.
#[derive(Debug, Default, serde::Serialize)]
pub struct ChunkStats {
    pub layers_rebuilt: u64,
    pub layer_bytes_rebuilt: u64,
    pub layers_raw: u64,
    pub raw_bytes: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
    pub chunks_left_to_base: u64,
    pub packed_bytes: u64,
    pub recipe_bytes: u64,
}

pub fn write(source: &dyn Source, plan: &BundlePlan, target: Target, opts: &Options) -> Result<(WriteReport, ChunkStats)> {
    // A user of the store while it runs: `store gc` (which empties the pack cache and drops
    // analyses) waits for it.
    let _guard = opts.cache.map(|s| s.use_guard()).transpose()?;
    let level = knob("OCIBUNDLE_ZSTD_LEVEL", LEVEL as usize) as i32;
    let pack_size = knob("OCIBUNDLE_PACK_KIB", PACK_SIZE >> 10) << 10;
    let descs: Vec<Descriptor> = plan.index.entries.iter().map(|e| Descriptor { media_type: e.media_type.clone(), digest: e.digest.clone(), size: e.size, platform: None, annotations: None }).collect();
    // 1. Analyse (largest first, so the pool ends together).
    let mut todo: Vec<&Descriptor> = descs.iter().filter(|d| chunkable(d)).collect();
    todo.sort_by_key(|d| std::cmp::Reverse(d.size));
    let bar = Progress::new(opts.progress, todo.iter().map(|d| d.size).sum(), "analyse");
    let done = bar.blob("", 0);
    let results = crate::pool::map_all(&todo, |d, _| {
        let a = analysis(source, d, opts.cache);
        done.inc(d.size);
        a
    });
    bar.finish();
    let mut analysed: BTreeMap<Digest, Analyzed> = BTreeMap::new();
    for (d, r) in todo.iter().zip(results) {
        analysed.insert(d.digest.clone(), r?);
    }
    // 2. Which chunks each layer brings (first use, in bundle order, not left to a base).
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    let mut stats = ChunkStats::default();
    let mut emits: BTreeMap<Digest, HashSet<usize>> = BTreeMap::new();
    let mut base_used: BTreeMap<Digest, u64> = BTreeMap::new();
    for d in &descs {
        let Some(Analyzed::Recipe { recipe, .. }) = analysed.get(&d.digest) else { continue };
        let mut emit = HashSet::new();
        for (i, (sha, _)) in recipe.chunks().enumerate() {
            if !seen.insert(*sha) {
                continue;
            }
            if opts.base.is_some_and(|b| b.chunks.contains(sha)) {
                stats.chunks_left_to_base += 1;
            } else {
                emit.insert(i);
            }
        }
        emits.insert(d.digest.clone(), emit);
    }
    if let Some(b) = opts.base
        && stats.chunks_left_to_base > 0 {
        base_used = b.layers.clone();
    }

    // 3. Cut the chunks into packs; find the packs the store's pack cache holds (checked).
    let (mut packs, layer_packs) = plan_packs(&descs, &analysed, &emits, pack_size, level);
    let pack_cache = opts.cache.filter(|_| knob("OCIBUNDLE_PACK_CACHE", 1) != 0).map(|store| super::packcache::PackCache { store });
    if let Some(pc) = &pack_cache {
        let found = crate::pool::map_all(&packs, |p, _| pc.check(&p.key, &p.chunks));
        for (p, f) in packs.iter_mut().zip(found) {
            p.cached = f;
        }
    }
    for p in &packs {
        stats.chunks += p.chunks.len() as u64;
        stats.chunk_bytes += p.chunks.iter().map(|(_, n)| *n as u64).sum::<u64>();
    }

    // 4. Write: header, packs (each either copied from the cache or compressed from its layers,
    // read again and checked against their recipes), recipes, blobs.
    let bundle_id = id_v2(plan);
    let mut w = VolumeWriter::new(target, bundle_id)?;
    w.write_all(&encode_header(&bundle_id, VERSION_CHUNKED)).map_err(io_err)?;
    let mut entries: Vec<IndexEntry> = Vec::new();
    let total_in: u64 = descs.iter().map(|d| d.size).sum();
    let bar = Progress::new(opts.progress, total_in, "bundle");
    let total = bar.blob("", 0);
    let jobs = opts.jobs.max(1);
    let (job_tx, job_rx) = sync_channel::<PackJob>(jobs);
    let job_rx = Mutex::new(job_rx);
    std::thread::scope(|s| -> Result<()> {
        let (done_tx, done_rx) = channel::<(u64, Result<Vec<u8>>)>();
        for _ in 0..jobs {
            let (job_rx, done_tx, packs, pack_cache) = (&job_rx, done_tx.clone(), &packs, &pack_cache);
            s.spawn(move || loop {
                let job = job_rx.lock().unwrap().recv();
                let (seq, frame) = match job {
                    Err(_) => return,
                    Ok(PackJob::Compress(seq, raw)) => {
                        let frame = compress_frame(&raw, level);
                        if let (Ok(f), Some(pc)) = (&frame, pack_cache) {
                            pc.put(&packs[seq as usize].key, f);
                        }
                        (seq, frame)
                    }
                    Ok(PackJob::Cached(seq, digest)) => (seq, pack_cache.as_ref().expect("a cached pack has a cache").frame(&packs[seq as usize].key, &digest)),
                };
                if done_tx.send((seq, frame)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let mut pending: BTreeMap<u64, Result<Vec<u8>>> = BTreeMap::new();
        let mut next = 0u64;
        let mut write_ready = |w: &mut VolumeWriter, pending: &mut BTreeMap<u64, _>, entries: &mut Vec<IndexEntry>, stats: &mut ChunkStats| -> Result<()> {
            while let Some(frame) = pending.remove(&next) {
                let frame: Vec<u8> = frame?;
                let digest = Digest::of(&frame);
                w.write_all(&encode_entry(KIND_PACK, frame.len() as u64, &digest)).map_err(io_err)?;
                let offset = w.position;
                w.write_all(&frame).map_err(io_err)?;
                stats.packed_bytes += frame.len() as u64;
                let p = &packs[next as usize];
                let raw_size = p.chunks.iter().map(|(_, n)| *n as u64).sum();
                let chunks = p.chunks.iter().map(|(sha, n)| (hex::encode(sha), *n)).collect();
                entries.push(IndexEntry { kind: KIND_PACK, digest, size: frame.len() as u64, offset, media_type: MEDIA_PACK.into(), pack: Some(PackInfo { raw_size, chunks }), recipe: None });
                next += 1;
            }
            Ok(())
        };
        // The pack being filled, how many of its chunks are in, and its bytes (when compressed here).
        let (mut open, mut filled) = (0usize, 0usize);
        let mut buf: Vec<u8> = Vec::with_capacity(pack_size + (1 << 20));
        let walked = (|| -> Result<()> {
            // One chunk of pack `open` is in (its bytes, or None when the pack is cached).
            let mut add = |bytes: Option<&[u8]>, pending: &mut BTreeMap<u64, Result<Vec<u8>>>, w: &mut VolumeWriter, entries: &mut Vec<IndexEntry>, stats: &mut ChunkStats| -> Result<()> {
                let p = &packs[open];
                if let (None, Some(b)) = (&p.cached, bytes) {
                    buf.extend_from_slice(b);
                }
                filled += 1;
                if filled == p.chunks.len() {
                    let job = match &p.cached {
                        Some(d) => PackJob::Cached(open as u64, d.clone()),
                        None => PackJob::Compress(open as u64, std::mem::replace(&mut buf, Vec::with_capacity(pack_size + (1 << 20)))),
                    };
                    job_tx.send(job).map_err(|_| Error::Other("a compression thread stopped".into()))?;
                    (open, filled) = (open + 1, 0);
                }
                while let Ok((seq, f)) = done_rx.try_recv() {
                    pending.insert(seq, f);
                }
                write_ready(w, pending, entries, stats)
            };
            for d in &descs {
                let Some(Analyzed::Recipe { recipe, .. }) = analysed.get(&d.digest) else { continue };
                let emit = &emits[&d.digest];
                // A layer whose chunks all go to cached packs is not read at all.
                if packs[layer_packs[&d.digest].clone()].iter().all(|p| p.cached.is_some()) {
                    for _ in 0..emit.len() {
                        add(None, &mut pending, &mut w, &mut entries, &mut stats)?;
                    }
                } else {
                    walk(source, d, recipe, emit, &mut |_, bytes| add(Some(bytes), &mut pending, &mut w, &mut entries, &mut stats))?;
                }
                total.inc(d.size);
            }
            Ok(())
        })();
        drop(job_tx);
        for (seq, f) in done_rx.iter() {
            pending.insert(seq, f);
        }
        walked?;
        write_ready(&mut w, &mut pending, &mut entries, &mut stats)
    })?;
    // Recipes, in bundle order.
    let mut raw = Vec::new();
    for d in &descs {
        match analysed.get(&d.digest) {
            Some(Analyzed::Recipe { recipe, producer }) => {
                let body = recipe.encode();
                let frame = zstd::bulk::compress(&body, 9).map_err(|e| Error::Other(format!("zstd: {e}")))?;
                let digest = Digest::of(&frame);
                w.write_all(&encode_entry(KIND_RECIPE, frame.len() as u64, &digest)).map_err(io_err)?;
                let offset = w.position;
                w.write_all(&frame).map_err(io_err)?;
                stats.recipe_bytes += frame.len() as u64;
                stats.layers_rebuilt += 1;
                stats.layer_bytes_rebuilt += d.size;
                let info = RecipeInfo { layer: d.digest.clone(), layer_size: d.size, layer_media_type: d.media_type.clone(), diff_id: recipe.diff_id.clone(), tar_size: recipe.tar_size, raw_size: body.len() as u64, producer: producer.clone() };
                entries.push(IndexEntry { kind: KIND_RECIPE, digest, size: frame.len() as u64, offset, media_type: MEDIA_RECIPE.into(), pack: None, recipe: Some(info) });
            }
            Some(Analyzed::Raw { producer, why }) => {
                stats.layers_raw += 1;
                stats.raw_bytes += d.size;
                raw.push(RawLayer { digest: d.digest.clone(), size: d.size, producer: producer.clone(), why: why.clone() });
            }
            None => {}
        }
    }
    // Whole blobs, as in version 1.
    let checker = BlobChecker::new();
    let what = format!("{}: blob", source.name());
    let copied = (|| -> Result<()> {
        for d in &descs {
            if matches!(analysed.get(&d.digest), Some(Analyzed::Recipe { .. })) {
                continue;
            }
            let offset = w.position + super::format::ENTRY_HEADER_LEN;
            write_blob_entry(&mut w, source, d, &checker, &|n| total.inc(n), &what)?;
            entries.push(IndexEntry { kind: KIND_BLOB, digest: d.digest.clone(), size: d.size, offset, media_type: d.media_type.clone(), pack: None, recipe: None });
        }
        Ok(())
    })();
    let verdict = checked(checker, &what);
    copied?;
    verdict?;
    let volume_payload = w.split_size().map(|s| s - VOLUME_HEADER_LEN);
    let mut index = Index {
        format: "ocibundle".into(),
        version: VERSION_CHUNKED,
        bundle_id,
        images: plan.index.images.clone(),
        entries,
        requires: plan.index.requires.clone(),
        base: plan.index.base.clone(),
        volume_size: volume_payload.unwrap_or(0),
        volumes: 1,
        raw,
        base_layers: base_used.into_iter().map(|(digest, size)| Required { digest, size }).collect(),
    };
    index.settle_volumes(w.position, volume_payload);
    write_index(&mut w, &index.to_bytes(), VERSION_CHUNKED)?;
    bar.finish();
    let stream_len = w.position;
    let files = w.commit()?;
    let bytes = match volume_payload {
        Some(_) => stream_len + index.volumes as u64 * VOLUME_HEADER_LEN,
        None => stream_len,
    };
    Ok((WriteReport { bundle_id, bytes, files }, stats))
}

/// What a delta made with `--since BASE` can leave to the receiving side below the layer: every
/// chunk of the base's layers that this side can cut (a format 2 base bundle's recipes say
/// them; layers the base names that `source` or the store holds are analysed, cached).
pub fn chunk_base(base: &std::path::Path, source: &dyn Source, store: Option<&Store>) -> Result<ChunkBase> {
    let mut out = ChunkBase::default();
    let set = super::load_base(base)?;
    if !super::inventory::is_inventory(base)? {
        let b = super::Bundle::open(base)?;
        for e in b.index.entries.iter().filter(|e| e.kind == KIND_RECIPE) {
            let r = super::rebuild::read_recipe(&b.vols, e, &b.name)?;
            out.chunks.extend(r.chunks().map(|(s, _)| *s));
            out.layers.insert(r.layer.clone(), r.layer_size);
        }
    }
    for d in &set.digests {
        if out.layers.contains_key(d) {
            continue;
        }
        let held: Option<(&dyn Source, u64)> = match (source.size_of(d), store.and_then(|s| Source::size_of(s, d))) {
            (Some(n), _) => Some((source, n)),
            (None, Some(n)) => Some((store.unwrap() as &dyn Source, n)),
            _ => None,
        };
        let Some((from, size)) = held else { continue };
        let desc = Descriptor { media_type: crate::media::MediaType::Other("application/octet-stream".into()), digest: d.clone(), size, platform: None, annotations: None };
        if !chunkable(&desc) || is_json(from, &desc)? {
            continue;
        }
        if let Analyzed::Recipe { recipe, .. } = analysis(from, &desc, store)? {
            out.chunks.extend(recipe.chunks().map(|(s, _)| *s));
            out.layers.insert(d.clone(), size);
        }
    }
    Ok(out)
}

/// Whether a blob is JSON (a manifest or config named only by digest in an inventory).
fn is_json(source: &dyn Source, d: &Descriptor) -> Result<bool> {
    let mut head = [0u8; 1];
    let n = source.blob(d)?.read(&mut head).map_err(|e| Error::Other(format!("{}: {e}", source.what_blob(d))))?;
    Ok(n == 1 && head[0] == b'{')
}

#[cfg(test)]
mod tests {
    use super::pack_ends;
    use sha2::Digest as _;

    /// The chunks after which packs end, for chunks named `names` of `len` bytes each.
    fn ends(names: &[[u8; 32]], len: usize, target: usize) -> Vec<[u8; 32]> {
        let mut at = 0;
        let mut out = Vec::new();
        for n in names {
            at += len;
            if pack_ends(at, n, target) {
                out.push(*n);
                at = 0;
            }
        }
        out
    }

    #[test]
    fn packs_end_where_the_chunks_say_so_a_change_moves_only_nearby_ends() {
        let name = |i: u32| -> [u8; 32] { sha2::Sha256::digest(i.to_le_bytes()).into() };
        let names: Vec<[u8; 32]> = (0..20_000).map(name).collect();
        let target = 16 << 20;
        let a = ends(&names, 60 << 10, target);
        // Average and bounds: about the target, never under half of it or over 1.5 times (plus the chunk that crosses it).
        let sizes: Vec<usize> = a.iter().map(|e| names.iter().position(|n| n == e).unwrap()).collect::<Vec<_>>().windows(2).map(|w| (w[1] - w[0]) * (60 << 10)).collect();
        assert!(sizes.iter().all(|s| *s >= target / 2 && *s < target + target / 2 + (60 << 10)), "{sizes:?}");
        let avg = sizes.iter().sum::<usize>() / sizes.len();
        assert!(avg > target * 3 / 4 && avg < target * 5 / 4, "average pack {avg}");
        // 40 more chunks early on: the ends after the first few packs are the same chunks.
        let mut more = names[..1000].to_vec();
        more.extend((100_000..100_040).map(name));
        more.extend_from_slice(&names[1000..]);
        let b = ends(&more, 60 << 10, target);
        let later: Vec<_> = a.iter().filter(|e| names.iter().position(|n| n == *e).unwrap() > 2000).collect();
        let kept = later.iter().filter(|e| b.contains(e)).count();
        assert_eq!(kept, later.len(), "pack ends after the change moved");
        // Cut at a fixed size instead, every end after the change would move.
        assert!(later.len() > 30);
    }
}

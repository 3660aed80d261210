//! Reading content below the layer back out of a version 2 bundle: chunks from their packs
//! (each pack checked against its digest before it is decoded; `verify` also checks each chunk
//! against its name), a
//! layer's tar from its recipe, and its exact compressed blob from that tar. Every caller gets
//! the bytes through a verifying stream (layer digest, or diff_id for the tar).
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use sha2::Digest as _;

use super::format::{Index, IndexEntry, KIND_PACK, KIND_RECIPE};
use super::volumes::VolumeSet;
use crate::chunk::recipe::{Op, Recipe, CHUNK_CAP};
use crate::codec::exact;
use crate::digest::Digest;
use crate::error::{Error, Result};

/// A pack may not decode to more than this; a recipe not to more than this.
pub const PACK_CAP: u64 = 256 << 20;
pub const RECIPE_CAP: u64 = 1 << 30;
/// Decoded packs a reader keeps (the chunks of one layer mostly sit in a few packs in a row).
/// Packs run up to 24 MiB (content-defined ends), so with two readers in flight three kept
/// packs each took import and export over 256 MiB; two keep them under it.
const PACKS_KEPT: usize = 2;
/// Buffers of decoded packs no reader uses any more, kept for the next decode: a fresh 16 MiB
/// buffer per pack cost a docker-archive export more system time (page faults, zeroed pages)
/// than its zstd decoding.
const SPARE_BUFFERS: usize = 2;

/// Chunks the bundle leaves to the receiving store (a delta): found by cutting base layers.
pub trait BaseChunks: Send + Sync {
    /// The chunk's bytes, checked, or None when no base layer holds it.
    fn chunk(&self, sha: &[u8; 32], len: u32) -> Result<Option<Vec<u8>>>;
}

struct Pack {
    offset: u64,
    size: u64,
    raw_size: u64,
    digest: Digest,
}

#[derive(Clone, Copy)]
struct Loc {
    pack: u32,
    at: u64,
    len: u32,
}

/// Where every chunk of a bundle is, from its index.
pub struct Chunks {
    vols: Arc<VolumeSet>,
    packs: Vec<Pack>,
    map: HashMap<[u8; 32], Loc>,
    pub name: String,
    pub base: std::sync::OnceLock<Arc<dyn BaseChunks>>,
    spare: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl Chunks {
    /// Builds the chunk table from a checked index: every pack's chunks must add up to its size.
    pub fn from_index(vols: Arc<VolumeSet>, index: &Index, name: &str) -> Result<Chunks> {
        let mut packs = Vec::new();
        let mut map = HashMap::new();
        for e in index.entries.iter().filter(|e| e.kind == KIND_PACK) {
            let p = e.pack.as_ref().expect("a checked index has pack info");
            if p.raw_size > PACK_CAP {
                return Err(Error::Other(format!("{name}: chunk pack {} claims {} bytes decoded, over the {} MiB cap (corrupt index)", e.digest, p.raw_size, PACK_CAP >> 20)));
            }
            let mut at = 0u64;
            for (h, len) in &p.chunks {
                if *len == 0 || *len > CHUNK_CAP {
                    return Err(Error::Other(format!("{name}: chunk pack {} lists a chunk of {len} bytes (corrupt index)", e.digest)));
                }
                let mut sha = [0u8; 32];
                hex::decode_to_slice(h, &mut sha).map_err(|_| Error::Other(format!("{name}: chunk pack {} names a chunk by a malformed digest (corrupt index)", e.digest)))?;
                map.entry(sha).or_insert(Loc { pack: packs.len() as u32, at, len: *len });
                at += *len as u64;
            }
            if at != p.raw_size {
                return Err(Error::Other(format!("{name}: chunk pack {} lists {at} bytes of chunks but holds {} (corrupt index)", e.digest, p.raw_size)));
            }
            packs.push(Pack { offset: e.offset, size: e.size, raw_size: p.raw_size, digest: e.digest.clone() });
        }
        Ok(Chunks { vols, packs, map, name: name.to_string(), base: std::sync::OnceLock::new(), spare: Default::default() })
    }

    pub fn has(&self, sha: &[u8; 32]) -> bool {
        self.map.contains_key(sha)
    }

    pub fn count(&self) -> usize {
        self.map.len()
    }

    /// Reads and decodes pack `i`, checked against its digest first.
    fn pack(&self, i: u32) -> Result<Arc<Vec<u8>>> {
        let p = &self.packs[i as usize];
        let mut frame = self.spare_buffer();
        self.frame_into(p.offset, p.size, &p.digest, &mut frame)?;
        let found = Digest::of(&frame);
        if found != p.digest {
            return Err(Error::DigestMismatch { what: format!("{}: chunk pack", self.name), expected: p.digest.clone(), found });
        }
        let mut raw = self.spare_buffer();
        decode_into(&frame, p.raw_size, &mut raw).map_err(|e| Error::Other(format!("{}: chunk pack {}: {e}", self.name, p.digest)))?;
        self.give_back(frame);
        Ok(Arc::new(raw))
    }

    fn spare_buffer(&self) -> Vec<u8> {
        let mut b = self.spare.lock().map(|mut s| s.pop()).ok().flatten().unwrap_or_default();
        b.clear();
        b
    }

    fn give_back(&self, b: Vec<u8>) {
        if let Ok(mut s) = self.spare.lock()
            && s.len() < SPARE_BUFFERS
        {
            s.push(b);
        }
    }

    /// A pack's frame, read whole: no bigger than a frame of the largest pack can be.
    fn frame(&self, offset: u64, size: u64, digest: &Digest) -> Result<Vec<u8>> {
        let mut frame = Vec::new();
        self.frame_into(offset, size, digest, &mut frame)?;
        Ok(frame)
    }

    fn frame_into(&self, offset: u64, size: u64, digest: &Digest, frame: &mut Vec<u8>) -> Result<()> {
        if size > zstd::zstd_safe::compress_bound(PACK_CAP as usize) as u64 {
            return Err(Error::Other(format!("{}: chunk pack {digest} has {size} bytes, more than a {} MiB pack compresses to (corrupt index)", self.name, PACK_CAP >> 20)));
        }
        frame.clear();
        frame.resize(size as usize, 0);
        self.vols.read_exact_at(frame, offset)
    }

    /// Checks pack entry `e` from one read: its frame against its digest, then decoded within
    /// its declared size, every chunk against its name.
    pub fn check_pack(&self, e: &IndexEntry, p: &super::format::PackInfo) -> std::result::Result<(), String> {
        let frame = self.frame(e.offset, e.size, &e.digest).map_err(|x| x.to_string())?;
        let found = Digest::of(&frame);
        if found != e.digest {
            return Err(format!("content hashes to {found}"));
        }
        self.check_chunks(e, p, &frame).map_err(|x| x.to_string())
    }

    fn check_chunks(&self, e: &IndexEntry, p: &super::format::PackInfo, frame: &[u8]) -> Result<()> {
        let raw = decode_capped(frame, p.raw_size).map_err(|x| Error::Other(format!("chunk pack {}: {x} (corrupt bundle)", e.digest)))?;
        let mut at = 0usize;
        for (h, len) in &p.chunks {
            let c = &raw[at..at + *len as usize];
            if hex::encode(sha2::Sha256::digest(c)) != *h {
                return Err(Error::Other(format!("chunk {h} in pack {} does not hash to its name (corrupt bundle)", e.digest)));
            }
            at += *len as usize;
        }
        Ok(())
    }

    /// One chunk's bytes: from a pack that was checked against its digest when it was decoded
    /// (base chunks from the store are checked against their names). A chunk is not hashed again
    /// here: the pack's digest already says its bytes are the writer's, and every reader's stream
    /// ends with the layer digest or diff_id check, which catches a writer that misnamed one
    /// (`verify` names that chunk). Hashing each chunk again cost a third of a docker-archive
    /// export's CPU.
    pub fn read(&self, sha: &[u8; 32], len: u32, kept: &mut Vec<(u32, Arc<Vec<u8>>)>) -> Result<ChunkBytes> {
        let Some(loc) = self.map.get(sha).copied() else {
            if let Some(b) = self.base.get()
                && let Some(v) = b.chunk(sha, len)? {
                return Ok(ChunkBytes { data: Arc::new(v), start: 0, len: len as usize });
            }
            return Err(Error::Other(format!("{}: chunk {} is neither in the bundle nor in the store's base layers (a delta bundle needs its base imported first)", self.name, hex::encode(sha))));
        };
        if loc.len != len {
            return Err(Error::Other(format!("{}: a recipe says chunk {} has {len} bytes, the pack says {} (corrupt bundle)", self.name, hex::encode(sha), loc.len)));
        }
        let data = match kept.iter().position(|(i, _)| *i == loc.pack) {
            Some(k) => {
                let hit = kept.remove(k);
                kept.insert(0, hit.clone());
                hit.1
            }
            None => {
                let d = self.pack(loc.pack)?;
                kept.insert(0, (loc.pack, d.clone()));
                if kept.len() > PACKS_KEPT
                    && let Some((_, old)) = kept.pop()
                    && let Ok(b) = Arc::try_unwrap(old)
                {
                    self.give_back(b);
                }
                d
            }
        };
        let (start, n) = (loc.at as usize, len as usize);
        Ok(ChunkBytes { data, start, len: n })
    }
}

/// Decodes one zstd frame to exactly `size` bytes; more is refused, not allocated. Up to a
/// pack's cap, in one call straight into the result (no streaming copies); bigger (a recipe may
/// declare up to 1 GiB) through a stream that allocates only what it decodes.
pub fn decode_capped(frame: &[u8], size: u64) -> std::io::Result<Vec<u8>> {
    if size <= PACK_CAP {
        let mut out = Vec::new();
        decode_into(frame, size, &mut out)?;
        return Ok(out);
    }
    let mut d = zstd::stream::read::Decoder::with_buffer(frame)?;
    d.window_log_max(crate::limits::ZSTD_WINDOW_LOG)?;
    let mut out = Vec::with_capacity(size.min(PACK_CAP) as usize);
    (&mut d).take(size + 1).read_to_end(&mut out)?;
    if out.len() as u64 != size {
        return Err(std::io::Error::other(format!("decodes to {}{} bytes, the index says {size}", out.len(), if out.len() as u64 > size { "+" } else { "" })));
    }
    Ok(out)
}

/// Decodes one zstd frame of at most `PACK_CAP` bytes into `out` (emptied first), which must
/// come to exactly `size` bytes.
fn decode_into(frame: &[u8], size: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    if size > PACK_CAP {
        return Err(std::io::Error::other(format!("{size} bytes is over the {} MiB cap", PACK_CAP >> 20)));
    }
    let mut d = zstd::bulk::Decompressor::new()?;
    d.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(crate::limits::ZSTD_WINDOW_LOG))?;
    out.clear();
    out.reserve(size as usize);
    match d.decompress_to_buffer(frame, out) {
        Ok(n) if n as u64 == size => Ok(()),
        Ok(n) if (n as u64) < size => Err(std::io::Error::other(format!("decodes to {n} bytes, the index says {size}"))),
        // More than `size` (a reused buffer may have room for it), or more than the buffer holds.
        Ok(_) => Err(over(size)),
        Err(e) if e.to_string().contains("too small") => Err(over(size)),
        Err(e) => Err(e),
    }
}

fn over(size: u64) -> std::io::Error {
    std::io::Error::other(format!("decodes to {}+ bytes, the index says {size}", size + 1))
}

pub struct ChunkBytes {
    data: Arc<Vec<u8>>,
    start: usize,
    len: usize,
}

impl ChunkBytes {
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.start + self.len]
    }
}

/// Reads a recipe entry: checked against its digest, decoded within its declared size, parsed,
/// and checked to rebuild the layer the index says.
pub fn read_recipe(vols: &VolumeSet, e: &IndexEntry, name: &str) -> Result<Recipe> {
    let info = e.recipe.as_ref().filter(|_| e.kind == KIND_RECIPE).ok_or_else(|| Error::Other(format!("{name}: entry {} is not a recipe", e.digest)))?;
    let what = format!("{name}: recipe of layer {}", info.layer);
    if info.raw_size > RECIPE_CAP || e.size > RECIPE_CAP {
        return Err(Error::TooLarge { what, limit: RECIPE_CAP });
    }
    let mut frame = vec![0u8; e.size as usize];
    vols.read_exact_at(&mut frame, e.offset)?;
    let found = Digest::of(&frame);
    if found != e.digest {
        return Err(Error::DigestMismatch { what, expected: e.digest.clone(), found });
    }
    let body = decode_capped(&frame, info.raw_size).map_err(|x| Error::Other(format!("{what}: {x} (corrupt bundle)")))?;
    let r = Recipe::decode(&body, &what)?;
    if r.layer != info.layer || r.layer_size != info.layer_size || r.diff_id != info.diff_id || r.tar_size != info.tar_size {
        return Err(Error::Other(format!("{what}: the recipe rebuilds another layer than the index says (corrupt bundle)")));
    }
    Ok(r)
}

/// A layer's tar stream, pulled from its recipe (metadata) and chunks. Not verified as a
/// whole: callers wrap it in a verifying reader (diff_id) or rebuild the blob from it and
/// verify that.
pub struct TarReader {
    recipe: Arc<Recipe>,
    chunks: Arc<Chunks>,
    kept: Vec<(u32, Arc<Vec<u8>>)>,
    op: usize,
    meta_at: usize,
    /// The op being read: its bytes and how far.
    cur: Option<(ChunkBytes, usize)>,
    meta_left: usize,
}

impl TarReader {
    pub fn new(recipe: Arc<Recipe>, chunks: Arc<Chunks>) -> TarReader {
        TarReader { recipe, chunks, kept: Vec::new(), op: 0, meta_at: 0, cur: None, meta_left: 0 }
    }
}

impl Read for TarReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.meta_left > 0 {
                let n = self.meta_left.min(buf.len());
                buf[..n].copy_from_slice(&self.recipe.meta[self.meta_at..self.meta_at + n]);
                self.meta_at += n;
                self.meta_left -= n;
                return Ok(n);
            }
            if let Some((c, at)) = &mut self.cur {
                let b = c.bytes();
                if *at < b.len() {
                    let n = (b.len() - *at).min(buf.len());
                    buf[..n].copy_from_slice(&b[*at..*at + n]);
                    *at += n;
                    return Ok(n);
                }
                self.cur = None;
            }
            let Some(op) = self.recipe.ops.get(self.op) else { return Ok(0) };
            self.op += 1;
            match op {
                Op::Meta(n) => self.meta_left = *n as usize,
                Op::Chunk { sha, len } => {
                    if crate::cancel::requested() {
                        return Err(std::io::Error::other(Error::Interrupted.to_string()));
                    }
                    let c = self.chunks.read(sha, *len, &mut self.kept).map_err(|e| std::io::Error::other(e.to_string()))?;
                    self.cur = Some((c, 0));
                }
            }
        }
    }
}

/// The exact compressed blob a recipe rebuilds, as a stream: the tar is pulled from chunks and
/// re-compressed on a thread of its own (the codec writes; the caller reads).
pub fn blob_reader(recipe: Arc<Recipe>, chunks: Arc<Chunks>, what: String) -> Result<Box<dyn Read + Send>> {
    let rec = exact::Rebuild::decode(&recipe.rebuild, &what)?;
    let (tx, rx) = sync_channel::<std::result::Result<Vec<u8>, String>>(4);
    std::thread::spawn(move || {
        let mut out = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(1 << 20) };
        let mut tar = std::io::BufReader::with_capacity(1 << 20, TarReader::new(recipe, chunks));
        let r = exact::rebuild(&rec, &mut tar, &mut out, &what).and_then(|_| out.flush().map_err(|e| Error::Other(format!("{what}: {e}"))));
        if let Err(e) = r {
            let _ = tx.send(Err(e.to_string()));
        }
    });
    Ok(Box::new(ChannelReader { rx, cur: Vec::new(), at: 0 }))
}

struct ChannelWriter {
    tx: SyncSender<std::result::Result<Vec<u8>, String>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let v = std::mem::replace(&mut self.buf, Vec::with_capacity(1 << 20));
            self.tx.send(Ok(v)).map_err(|_| std::io::Error::other("reader gone"))?;
        }
        Ok(())
    }
}

struct ChannelReader {
    rx: Receiver<std::result::Result<Vec<u8>, String>>,
    cur: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(v)) => {
                    self.cur = v;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Ok(0),
            }
        }
        let n = (self.cur.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

//! Analysing one layer once: its exact rebuild record (codec::exact) and its recipe (the tar
//! split into metadata and file payloads, payloads cut into chunks), in one streaming pass over
//! the verified blob; and the store's cache of those analyses, keyed by layer digest.
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use super::cdc::Cutter;
use super::recipe::{Op, Recipe};
use super::tarsplit::{Piece, TarSplit};
use crate::codec::{self, Compression, exact};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::source::Source;
use crate::store::Store;

/// What analysing a layer found: a recipe that rebuilds it exactly, or why it is carried whole.
#[derive(Debug, Clone, PartialEq)]
pub enum Analyzed {
    Recipe { recipe: Recipe, producer: String },
    Raw { producer: String, why: String },
}

impl Analyzed {
    pub fn producer(&self) -> &str {
        match self {
            Analyzed::Recipe { producer, .. } | Analyzed::Raw { producer, .. } => producer,
        }
    }
}

/// Turns a layer's decompressed stream, given in pieces, into a recipe's steps: the splitter
/// separates metadata from payloads, the cutter cuts payloads, the stream is hashed for its
/// diff_id. The one way both `analyze` and `cut` split and cut, so they can never disagree.
struct Steps {
    hash: Hasher,
    split: TarSplit,
    cutter: Cutter,
    out: Out,
}

/// Where the splitter's pieces go (apart from the cutter, which they feed).
struct Out {
    meta: Vec<u8>,
    ops: Vec<Op>,
}

impl Out {
    fn meta(&mut self, b: &[u8]) {
        self.meta.extend_from_slice(b);
        let mut n = b.len() as u64;
        if let Some(Op::Meta(m)) = self.ops.last_mut() {
            let add = n.min((u32::MAX - *m) as u64);
            *m += add as u32;
            n -= add;
        }
        while n > 0 {
            let add = n.min(u32::MAX as u64);
            self.ops.push(Op::Meta(add as u32));
            n -= add;
        }
    }
    fn chunk(&mut self, c: &[u8]) -> std::result::Result<(), ()> {
        let sha = sha2::Sha256::digest(c);
        self.ops.push(Op::Chunk {
            sha: sha.into(),
            len: c.len() as u32,
        });
        Ok(())
    }
    fn piece(&mut self, p: Piece, cut: &mut Cutter) -> std::result::Result<(), ()> {
        match p {
            Piece::Meta(b) => {
                self.meta(b);
                Ok(())
            }
            Piece::Data(b) => cut.push(b, &mut |c| self.chunk(c)),
            Piece::FileEnd => cut.finish(&mut |c| self.chunk(c)),
        }
    }
}

impl Steps {
    fn new() -> Steps {
        Steps {
            hash: Hasher::new(),
            split: TarSplit::new(),
            cutter: Cutter::new(),
            out: Out {
                meta: Vec::new(),
                ops: Vec::new(),
            },
        }
    }

    fn push(&mut self, p: &[u8]) {
        self.hash.update(p);
        let (out, cutter) = (&mut self.out, &mut self.cutter);
        let _ = self.split.push(p, &mut |piece| out.piece(piece, cutter));
    }

    /// The recipe of layer `desc` whose stream has ended, with `rebuild` (an encoded
    /// `codec::exact` record; empty when the layer is only cut).
    fn finish(mut self, desc: &Descriptor, rebuild: Vec<u8>) -> Recipe {
        let (out, cutter) = (&mut self.out, &mut self.cutter);
        let _ = self.split.finish(&mut |piece| out.piece(piece, cutter));
        let _ = cutter.finish(&mut |c| out.chunk(c));
        let out = self.out;
        let tar_size = self.hash.len();
        Recipe {
            layer: desc.digest.clone(),
            layer_size: desc.size,
            diff_id: self.hash.finish(),
            tar_size,
            rebuild,
            meta: out.meta,
            ops: out.ops,
        }
    }
}
use sha2::Digest as _;

/// Analyses layer `desc` of `source` in one pass over its verified stream.
/// A gzip body that a zlib replay matched for a while and then did not is read a second time,
/// through preflate-rs alone.
pub fn analyze(source: &dyn Source, desc: &Descriptor, what: &str) -> Result<Analyzed> {
    let mut replay = true;
    let (mut r, steps, a) = loop {
        let mut r = source.blob(desc)?;
        let mut steps = Steps::new();
        let mut feed = |p: &[u8]| {
            if crate::cancel::requested() {
                return Err(Error::Interrupted);
            }
            steps.push(p);
            Ok(())
        };
        let a = if replay {
            exact::analyze(&mut r, &mut feed, what)?
        } else {
            exact::analyze_without_replay(&mut r, &mut feed, what)?
        };
        if a.diverged && replay {
            replay = false;
            continue;
        }
        break (r, steps, a);
    };
    let Some(rebuild) = a.rebuild else {
        return Ok(Analyzed::Raw {
            producer: a.producer,
            why: a.why_not.unwrap_or_else(|| "no exact rebuild".into()),
        });
    };
    // The blob is read to its end, so its digest is checked whatever the decoder left.
    std::io::copy(&mut r, &mut std::io::sink())
        .map_err(|e| Error::Other(format!("{what}: {e}")))?;
    let mut rb = Vec::new();
    rebuild.encode(&mut rb);
    Ok(Analyzed::Recipe {
        recipe: steps.finish(desc, rb),
        producer: a.producer,
    })
}

/// Runs `f` on layer `d`'s decompressed stream (gzip, zstd or plain, told by its first bytes),
/// then reads the blob to its end, so the source's verifying stream checks its digest whatever
/// the decoder left unread.
fn decompressed<T>(
    source: &dyn Source,
    d: &Descriptor,
    f: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let what = source.what_blob(d);
    let mut src = BufReader::with_capacity(1 << 20, source.blob(d)?);
    let head = src
        .fill_buf()
        .map_err(|e| Error::Other(format!("{what}: {e}")))?
        .to_vec();
    let mut dec = codec::decoder(Compression::sniff(&head), &mut src)
        .map_err(|e| Error::Other(format!("{what}: {e}")))?;
    let out = f(&mut dec)?;
    drop(dec);
    std::io::copy(&mut src, &mut std::io::sink())
        .map_err(|e| Error::Other(format!("{what}: {e}")))?;
    Ok(out)
}

/// Reads layer `d` again (decompressed), checks every byte against its recipe (metadata equal,
/// chunks hashing to their names, the tar to its diff_id) and hands the chunks named in `emit`
/// to `chunk`, in order.
pub fn walk(
    source: &dyn Source,
    d: &Descriptor,
    r: &Recipe,
    emit: &HashSet<usize>,
    chunk: &mut ChunkSink,
) -> Result<()> {
    let what = source.what_blob(d);
    let bad = |x: String| {
        Error::Other(format!(
            "{what}: {x}: the layer does not match its analysis (a damaged analysis cache? remove {})",
            ".ocibundle/recipes"
        ))
    };
    let h = decompressed(source, d, |dec| {
        let mut h = Hasher::new();
        let mut buf = vec![0u8; crate::chunk::recipe::CHUNK_CAP as usize];
        let mut at = 0usize;
        let mut n_chunk = 0usize;
        for op in &r.ops {
            if crate::cancel::requested() {
                return Err(Error::Interrupted);
            }
            let n = match op {
                Op::Meta(n) => *n as usize,
                Op::Chunk { len, .. } => *len as usize,
            };
            let mut left = n;
            while left > 0 {
                let take = left.min(buf.len());
                dec.read_exact(&mut buf[..take])
                    .map_err(|e| bad(format!("reading its tar: {e}")))?;
                h.update(&buf[..take]);
                match op {
                    Op::Meta(_) => {
                        if buf[..take] != r.meta[at..at + take] {
                            return Err(bad("tar metadata differs".into()));
                        }
                        at += take;
                    }
                    Op::Chunk { sha, .. } => {
                        if sha2::Sha256::digest(&buf[..take]).as_slice() != sha {
                            return Err(bad(format!("chunk {} differs", hex::encode(sha))));
                        }
                        if emit.contains(&n_chunk) {
                            chunk(sha, &buf[..take])?;
                        }
                    }
                }
                left -= take;
            }
            if matches!(op, Op::Chunk { .. }) {
                n_chunk += 1;
            }
        }
        if dec
            .read(&mut buf[..1])
            .map_err(|e| bad(format!("reading its tar: {e}")))?
            != 0
        {
            return Err(bad("the tar goes on past its recipe".into()));
        }
        Ok(h)
    })?;
    if h.finish() != r.diff_id {
        return Err(bad("its tar does not hash to the recipe's diff_id".into()));
    }
    Ok(())
}

/// Where `walk` hands the chunks it was asked for: name and bytes.
pub type ChunkSink<'a> = dyn FnMut(&[u8; 32], &[u8]) -> Result<()> + 'a;

/// Cuts layer `d` the way `analyze` does (same split, same chunks) without working out an
/// exact rebuild: what a receiving side needs to find a delta's chunks in its own layers.
pub fn cut(source: &dyn Source, desc: &Descriptor) -> Result<Recipe> {
    let what = source.what_blob(desc);
    let mut steps = Steps::new();
    decompressed(source, desc, |dec| {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if crate::cancel::requested() {
                return Err(Error::Interrupted);
            }
            let n = dec
                .read(&mut buf)
                .map_err(|e| Error::Other(format!("{what}: {e}")))?;
            if n == 0 {
                return Ok(());
            }
            steps.push(&buf[..n]);
        }
    })?;
    Ok(steps.finish(desc, Vec::new()))
}

/// The store's cache of analyses: `.ocibundle/recipes/v1/<layer hex>`, written once (temp,
/// fsync, rename) and checked on every read (a SHA-256 of the record heads it; the record
/// names its layer). A damaged entry is analysed again, never used.
pub struct Cache<'a> {
    pub store: &'a Store,
}

const CACHE_CAP: u64 = 1 << 30;

impl Cache<'_> {
    fn path(&self, layer: &Digest) -> PathBuf {
        self.store
            .root()
            .join(".ocibundle/recipes/v1")
            .join(layer.hex())
    }

    pub fn get(&self, desc: &Descriptor) -> Option<Analyzed> {
        let bytes = std::fs::read(self.path(&desc.digest)).ok()?;
        let (sum, body) = bytes.split_at_checked(32)?;
        if Digest::of(body).raw() != *sum {
            return None;
        }
        let body = zstd::bulk::decompress(body, CACHE_CAP as usize).ok()?;
        let (&tag, rest) = body.split_first()?;
        let (n, rest) = rest.split_at_checked(2)?;
        let (producer, rest) = rest.split_at_checked(u16::from_le_bytes([n[0], n[1]]) as usize)?;
        let producer = String::from_utf8(producer.to_vec()).ok()?;
        match tag {
            0 => {
                let recipe = Recipe::decode(rest, "analysis cache").ok()?;
                (recipe.layer == desc.digest && recipe.layer_size == desc.size)
                    .then_some(Analyzed::Recipe { recipe, producer })
            }
            1 => Some(Analyzed::Raw {
                producer,
                why: String::from_utf8(rest.to_vec()).ok()?,
            }),
            _ => None,
        }
    }

    pub fn put(&self, desc: &Descriptor, a: &Analyzed) -> Result<()> {
        let (tag, producer, rest) = match a {
            Analyzed::Recipe { recipe, producer } => (0u8, producer, recipe.encode()),
            Analyzed::Raw { producer, why } => (1u8, producer, why.as_bytes().to_vec()),
        };
        let producer = &producer.as_bytes()[..producer.len().min(1000)];
        let mut body = vec![tag];
        body.extend_from_slice(&(producer.len() as u16).to_le_bytes());
        body.extend_from_slice(producer);
        body.extend_from_slice(&rest);
        let z = zstd::bulk::compress(&body, 3)
            .map_err(|e| Error::Other(format!("analysis cache: {e}")))?;
        let mut out = Digest::of(&z).raw().to_vec();
        out.extend_from_slice(&z);
        let dir = self.path(&desc.digest).parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        self.store.write_atomic(&self.path(&desc.digest), &out)
    }
}

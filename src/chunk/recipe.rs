//! A layer's recipe: how to rebuild its exact tar stream from tar metadata and chunks, and its
//! exact compressed blob from that stream (the codec's rebuild record). Binary, versioned; read
//! as untrusted input (every count and length checked against what holds it).
use crate::digest::Digest;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"OCIBRCP\x01";
/// A chunk is never longer than this in a recipe (the cutter's MAX is far below).
pub const CHUNK_CAP: u32 = 4 << 20;

/// One step of a tar stream: the next `n` bytes of the recipe's metadata, or a chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Meta(u32),
    Chunk { sha: [u8; 32], len: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub layer: Digest,
    pub layer_size: u64,
    pub diff_id: Digest,
    pub tar_size: u64,
    /// `codec::exact::Rebuild`, encoded.
    pub rebuild: Vec<u8>,
    pub meta: Vec<u8>,
    pub ops: Vec<Op>,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Cur<'a> {
    b: &'a [u8],
    what: &'a str,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        if n > self.b.len() as u64 {
            return Err(Error::Other(format!("{}: recipe is truncated or promises more bytes than it holds (corrupt bundle)", self.what)));
        }
        let (a, rest) = self.b.split_at(n as usize);
        self.b = rest;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn sha(&mut self) -> Result<[u8; 32]> {
        Ok(self.take(32)?.try_into().unwrap())
    }
}

impl Recipe {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.rebuild.len() + self.meta.len() + self.ops.len() * 37);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.layer.raw());
        put_u64(&mut out, self.layer_size);
        out.extend_from_slice(&self.diff_id.raw());
        put_u64(&mut out, self.tar_size);
        put_u64(&mut out, self.rebuild.len() as u64);
        out.extend_from_slice(&self.rebuild);
        put_u64(&mut out, self.meta.len() as u64);
        out.extend_from_slice(&self.meta);
        put_u64(&mut out, self.ops.len() as u64);
        for op in &self.ops {
            match op {
                Op::Meta(n) => {
                    out.push(0);
                    put_u32(&mut out, *n);
                }
                Op::Chunk { sha, len } => {
                    out.push(1);
                    out.extend_from_slice(sha);
                    put_u32(&mut out, *len);
                }
            }
        }
        out
    }

    /// Parses and checks a recipe: the ops use exactly the metadata it holds, add up to the tar
    /// size, and no chunk is empty or over the cap.
    pub fn decode(b: &[u8], what: &str) -> Result<Recipe> {
        let bad = |x: &str| Error::Other(format!("{what}: {x} (corrupt bundle)"));
        let mut c = Cur { b, what };
        if c.take(8)? != MAGIC {
            return Err(bad("not a recipe this ocibundle knows (unknown recipe kind)"));
        }
        let layer = Digest::from_bytes(&c.sha()?);
        let layer_size = c.u64()?;
        let diff_id = Digest::from_bytes(&c.sha()?);
        let tar_size = c.u64()?;
        let n = c.u64()?;
        let rebuild = c.take(n)?.to_vec();
        let n = c.u64()?;
        let meta = c.take(n)?.to_vec();
        let count = c.u64()?;
        // Every op takes at least 5 bytes: a count beyond that is a lie, refused before any allocation.
        if count > c.b.len() as u64 / 5 {
            return Err(bad("recipe promises more steps than it holds"));
        }
        let mut ops = Vec::with_capacity(count as usize);
        let (mut meta_used, mut total) = (0u64, 0u64);
        for _ in 0..count {
            let op = match c.u8()? {
                0 => {
                    let n = c.u32()?;
                    meta_used += n as u64;
                    total += n as u64;
                    Op::Meta(n)
                }
                1 => {
                    let sha = c.sha()?;
                    let len = c.u32()?;
                    if len == 0 || len > CHUNK_CAP {
                        return Err(bad(&format!("recipe names a chunk of {len} bytes")));
                    }
                    total += len as u64;
                    Op::Chunk { sha, len }
                }
                k => return Err(bad(&format!("unknown recipe step kind {k}"))),
            };
            ops.push(op);
        }
        if !c.b.is_empty() {
            return Err(bad("recipe has bytes after its last step"));
        }
        if meta_used != meta.len() as u64 {
            return Err(bad(&format!("recipe steps use {meta_used} bytes of metadata, it holds {}", meta.len())));
        }
        if total != tar_size {
            return Err(bad(&format!("recipe steps add up to {total} bytes, the layer's tar has {tar_size}")));
        }
        Ok(Recipe { layer, layer_size, diff_id, tar_size, rebuild, meta, ops })
    }

    /// The chunks it uses, in order (with repeats).
    pub fn chunks(&self) -> impl Iterator<Item = (&[u8; 32], u32)> {
        self.ops.iter().filter_map(|o| match o {
            Op::Chunk { sha, len } => Some((sha, *len)),
            Op::Meta(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Recipe {
        Recipe {
            layer: Digest::of(b"layer"),
            layer_size: 10,
            diff_id: Digest::of(b"tar"),
            tar_size: 9,
            rebuild: vec![1, 2, 3],
            meta: b"hdr".to_vec(),
            ops: vec![Op::Meta(2), Op::Chunk { sha: [7; 32], len: 6 }, Op::Meta(1)],
        }
    }

    #[test]
    fn round_trips() {
        let r = sample();
        assert_eq!(Recipe::decode(&r.encode(), "x").unwrap(), r);
    }

    #[test]
    fn lies_are_refused() {
        let good = sample().encode();
        // Truncated anywhere.
        for n in 0..good.len() {
            assert!(Recipe::decode(&good[..n], "x").is_err(), "cut at {n}");
        }
        let mut r = sample();
        r.tar_size = 10;
        assert!(Recipe::decode(&r.encode(), "x").unwrap_err().to_string().contains("add up to 9"));
        let mut r = sample();
        r.ops[0] = Op::Meta(3);
        r.tar_size = 10;
        assert!(Recipe::decode(&r.encode(), "x").unwrap_err().to_string().contains("metadata"));
        let mut r = sample();
        r.ops[1] = Op::Chunk { sha: [7; 32], len: CHUNK_CAP + 1 };
        assert!(Recipe::decode(&r.encode(), "x").is_err());
        let mut b = good.clone();
        let at = b.len() - 5 - 37 - 5 - 8;
        b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Recipe::decode(&b, "x").unwrap_err().to_string().contains("more steps"));
        let mut b = good.clone();
        let at = b.len() - 5 - 37 - 5;
        b[at] = 9;
        assert!(Recipe::decode(&b, "x").unwrap_err().to_string().contains("unknown recipe step kind 9"));
    }
}

//! Exact gzip rebuild by replay: a deflate body that the zlib linked into this build (libz-sys,
//! its bundled C zlib) re-encodes byte for byte at some level and memLevel. The parameters are
//! found on the body's first MiBs (`probe`), then proven over the whole body while it streams
//! (`body`: every re-encoded byte compared with the original); a rebuild is one deflate pass
//! (`Deflater`). It needs no correction bytes and runs several times faster than preflate-rs,
//! so `regzip` tries it first and keeps preflate-rs for the other encoders.
use std::mem::MaybeUninit;
use std::os::raw::c_int;

use flate2::{Crc, Decompress, FlushDecompress, Status};
use libz_sys as z;

use super::exact::Window;
use crate::error::{Error, Result};

/// The candidates tried, as (level, memLevel): zlib's levels 1–9 with its default memLevel 8 and
/// the 9 that Python's `zlib.compressobj(level, DEFLATED, -15, 9)` and some tools use. Window
/// 32 KiB (windowBits 15) and the default strategy only: what gzip writers use.
const LEVELS: std::ops::RangeInclusive<i32> = 1..=9;
const MEM_LEVELS: [i32; 2] = [8, 9];

/// Plain bytes the probe inflates at most (from at most `PROBE_IN` bytes of deflate data) to tell
/// the candidates apart: zlib emits a block per 16 Ki (memLevel 8) or 32 Ki (9) symbols, so a
/// few MiB of plain text hold several blocks of anything but long runs.
const PROBE_PLAIN: usize = 8 << 20;
const PROBE_IN: usize = 8 << 20;
/// Output a candidate must have matched to be chosen before the probe's data runs out.
const PROBE_PROOF: usize = 64 << 10;
/// Plain bytes the probe feeds each live candidate per round.
const PROBE_STEP: usize = 256 << 10;

/// Deflate data inflated but not yet matched by the replay: zlib holds back at most one block
/// (32 Ki symbols, far less compressed), so more means the encoder is not this zlib.
const LEAD_MAX: usize = 64 << 20;
/// Deflate bytes inflated per step of `body`.
const STEP_IN: usize = 1 << 20;

/// The version string of the zlib linked here (`zlibVersion()`), which a record names.
pub fn version() -> String {
    // SAFETY: zlibVersion returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(z::zlibVersion()) }.to_string_lossy().into_owned()
}

/// A raw deflate stream of the linked zlib (windowBits -15, default strategy).
pub struct Deflater {
    s: Box<MaybeUninit<z::z_stream>>,
}

// SAFETY: the stream is owned by this value and only used through `&mut self`.
unsafe impl Send for Deflater {}

impl Deflater {
    pub fn new(level: i32, mem_level: i32) -> Result<Deflater> {
        let mut s = Box::new(MaybeUninit::<z::z_stream>::zeroed());
        // SAFETY: zeroed zalloc/zfree/opaque are Z_NULL, which zlib reads as "use malloc";
        // deflateInit2_ fills in the rest before anything reads the struct as a z_stream.
        let r = unsafe {
            z::deflateInit2_(s.as_mut_ptr(), level, z::Z_DEFLATED, -15, mem_level, z::Z_DEFAULT_STRATEGY, z::zlibVersion(), std::mem::size_of::<z::z_stream>() as c_int)
        };
        if r != z::Z_OK {
            return Err(Error::Other(format!("zlib: deflateInit2 failed ({r}) for level {level}, memLevel {mem_level}")));
        }
        Ok(Deflater { s })
    }

    /// Compresses all of `input`, appending what zlib gives out to `out`; `finish` ends the stream
    /// (everything buffered is written, then the final block).
    pub fn run(&mut self, mut input: &[u8], finish: bool, out: &mut Vec<u8>) -> Result<()> {
        let sp = self.s.as_mut_ptr();
        loop {
            let take = input.len().min(1 << 30);
            let last = take == input.len();
            out.reserve(64 << 10);
            let at = out.len();
            let room = (out.capacity() - at).min(1 << 30);
            // SAFETY: the stream was initialised in `new`; next_in/next_out point into live
            // buffers of at least avail_in/avail_out bytes for the duration of the call, and
            // only the bytes zlib reports written are added to `out`.
            let (r, used, made, room_left) = unsafe {
                (*sp).next_in = input.as_ptr().cast_mut();
                (*sp).avail_in = take as u32;
                (*sp).next_out = out.as_mut_ptr().add(at);
                (*sp).avail_out = room as u32;
                let flush = if finish && last { z::Z_FINISH } else { z::Z_NO_FLUSH };
                let r = z::deflate(sp, flush);
                let made = room - (*sp).avail_out as usize;
                out.set_len(at + made);
                (r, take - (*sp).avail_in as usize, made, (*sp).avail_out)
            };
            input = &input[used..];
            match r {
                z::Z_STREAM_END => return Ok(()),
                z::Z_OK | z::Z_BUF_ERROR => {}
                r => return Err(Error::Other(format!("zlib: deflate failed ({r})"))),
            }
            // Without `finish`, done once all input is taken and zlib stopped for want of it.
            if !finish && input.is_empty() && room_left != 0 {
                return Ok(());
            }
            if used == 0 && made == 0 && room_left != 0 {
                return Err(Error::Other("zlib: deflate made no progress".into()));
            }
        }
    }
}

impl Drop for Deflater {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`; deflateEnd frees zlib's state once.
        unsafe {
            z::deflateEnd(self.s.as_mut_ptr());
        }
    }
}

/// The candidates in the order tried: the level the header's XFL byte hints (2: best, 4:
/// fastest) and zlib's default 6 first, each with memLevel 8 then 9.
fn candidates(xfl: u8) -> Vec<(i32, i32)> {
    let first = match xfl {
        2 => 9,
        4 => 1,
        _ => 6,
    };
    let mut levels = vec![first];
    levels.extend([6].into_iter().chain(LEVELS).filter(|l| *l != first));
    levels.dedup();
    let mut out = Vec::new();
    for l in levels {
        if !out.iter().any(|(x, _)| *x == l) {
            out.extend(MEM_LEVELS.iter().map(|m| (l, *m)));
        }
    }
    out
}

/// Finds the (level, memLevel) whose replay matches the start of the deflate body at the front of
/// `w`, without consuming anything: the first `PROBE_PLAIN` bytes of plain text are re-encoded by
/// every candidate in rounds, a candidate is dropped at its first differing byte, and one that
/// has matched `PROBE_PROOF` bytes (or the whole body, if it ends within the probe) is chosen.
/// `None` when none does: another encoder, or a body the probe cannot decide on.
pub(super) fn probe(w: &mut Window, xfl: u8) -> Result<Option<(i32, i32)>> {
    let body = w.fill(PROBE_IN)?;
    let mut d = Decompress::new(false);
    let mut plain = Vec::with_capacity(PROBE_PLAIN);
    let ended = match d.decompress_vec(body, &mut plain, FlushDecompress::None) {
        Ok(s) => s == Status::StreamEnd,
        Err(_) => return Ok(None),
    };
    let used = d.total_in() as usize;
    let body = &body[..used];
    // Each live candidate, and how many bytes of the body its output has matched so far: the
    // output itself is compared and dropped step by step, so the probe holds one step's worth.
    let mut live: Vec<((i32, i32), Deflater, usize)> = Vec::new();
    for c in candidates(xfl) {
        live.push((c, Deflater::new(c.0, c.1)?, 0));
    }
    let mut out = Vec::new();
    let mut fed = 0;
    while !live.is_empty() {
        let step = &plain[fed..(fed + PROBE_STEP).min(plain.len())];
        fed += step.len();
        let finish = ended && fed == plain.len();
        let mut i = 0;
        while i < live.len() {
            let (c, zs, matched) = &mut live[i];
            out.clear();
            zs.run(step, finish, &mut out)?;
            let good = body[*matched..].starts_with(&out);
            *matched += out.len();
            if good && ((finish && *matched == body.len()) || (!ended && *matched >= PROBE_PROOF)) {
                return Ok(Some(*c));
            }
            if good && !finish {
                i += 1;
            } else {
                live.remove(i);
            }
        }
        if fed == plain.len() {
            break;
        }
    }
    Ok(None)
}

/// Why a replay stopped: `No` before any plain byte was handed on (use another way), or
/// `Diverged` after (the whole analysis must start again without replay).
pub(super) enum Fail {
    No(String),
    Diverged(String),
    Err(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Err(e)
    }
}

/// Streams the deflate body at the front of `w` through inflate, hands its plain text to
/// `plain` (and `crc`), re-encodes it with (level, memLevel) and compares every byte with the
/// original before consuming it. Returns the body's plain length; `w` is left just after the
/// body (at the gzip trailer).
pub(super) fn body(w: &mut Window, (level, mem_level): (i32, i32), plain: &mut dyn FnMut(&[u8]) -> Result<()>, crc: &mut Crc) -> Result<u64, Fail> {
    let mut d = Decompress::new(false);
    let mut zs = Deflater::new(level, mem_level)?;
    let mut lead = 0usize;
    let mut text = Vec::with_capacity(1 << 20);
    let mut out = Vec::new();
    let mut plain_len = 0u64;
    loop {
        let avail = w.fill(lead + STEP_IN)?;
        let input = &avail[lead..];
        let before = d.total_in();
        text.clear();
        let status = d
            .decompress_vec(input, &mut text, FlushDecompress::None)
            .map_err(|e| Fail::No(format!("corrupt deflate data near byte {}: {e}", w.pos + lead as u64)))?;
        let took = (d.total_in() - before) as usize;
        let ended = status == Status::StreamEnd;
        if !ended && took == 0 && text.is_empty() {
            return Err(fail(plain_len, format!("truncated: the blob ends inside the deflate data (at byte {})", w.pos + lead as u64)));
        }
        lead += took;
        crc.update(&text);
        plain(&text)?;
        plain_len += text.len() as u64;
        out.clear();
        zs.run(&text, ended, &mut out)?;
        if out.len() > lead {
            return Err(Fail::Diverged(format!("zlib replay ran ahead of the deflate data at byte {}", w.pos)));
        }
        if let Some(k) = w.avail()[..out.len()].iter().zip(&out).position(|(a, b)| a != b) {
            return Err(Fail::Diverged(format!("zlib -{level} (memLevel {mem_level}) replay differs at byte {}", w.pos + k as u64)));
        }
        w.consume(out.len());
        lead -= out.len();
        if ended {
            if lead != 0 {
                return Err(Fail::Diverged(format!("zlib -{level} (memLevel {mem_level}) replay ends {lead} bytes before the deflate data (at byte {})", w.pos)));
            }
            return Ok(plain_len);
        }
        if lead > LEAD_MAX {
            return Err(Fail::Diverged(format!("zlib -{level} replay fell over {} MiB behind the deflate data at byte {}", LEAD_MAX >> 20, w.pos)));
        }
    }
}

/// Nothing handed on yet: another way may still read this body.
fn fail(plain_len: u64, why: String) -> Fail {
    if plain_len == 0 { Fail::No(why) } else { Fail::Diverged(why) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zlib(data: &[u8], level: i32, mem: i32) -> Vec<u8> {
        let mut out = Vec::new();
        Deflater::new(level, mem).unwrap().run(data, true, &mut out).unwrap();
        out
    }

    fn sample() -> Vec<u8> {
        // Text-like, with repeats and a little noise: blocks at every level.
        let mut v = Vec::new();
        let mut x = 12345u32;
        for i in 0..400_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.extend_from_slice(format!("line {} value {} {}\n", i % 977, x >> 20, i / 3).as_bytes());
        }
        v
    }

    #[test]
    fn the_probe_finds_the_level_and_memlevel_that_made_a_body() {
        let data = sample();
        for (level, mem) in [(1, 8), (6, 8), (6, 9), (9, 9), (4, 8)] {
            let body = zlib(&data, level, mem);
            let mut r = &body[..];
            let mut w = Window::new(&mut r, "test");
            assert_eq!(probe(&mut w, 0).unwrap(), Some((level, mem)), "level {level} memLevel {mem}");
        }
    }

    #[test]
    fn a_replayed_body_hands_on_its_plain_text_and_ends_at_the_trailer() {
        let data = sample();
        let mut blob = zlib(&data, 6, 9);
        let body_len = blob.len();
        blob.extend_from_slice(b"TRAILER!");
        let mut r = &blob[..];
        let mut w = Window::new(&mut r, "test");
        let mut got = Vec::new();
        let mut crc = Crc::new();
        let n = match body(&mut w, (6, 9), &mut |p| {
            got.extend_from_slice(p);
            Ok(())
        }, &mut crc) {
            Ok(n) => n,
            Err(_) => panic!("replay failed"),
        };
        assert_eq!(n as usize, data.len());
        assert_eq!(got, data);
        assert_eq!(w.pos as usize, body_len);
        assert_eq!(w.avail(), b"TRAILER!");
    }

    #[test]
    fn the_wrong_parameters_diverge_and_say_where() {
        let data = sample();
        let body6 = zlib(&data, 6, 8);
        let mut r = &body6[..];
        let mut w = Window::new(&mut r, "test");
        match body(&mut w, (5, 8), &mut |_| Ok(()), &mut Crc::new()) {
            Err(Fail::Diverged(why)) => assert!(why.contains("differs at byte"), "{why}"),
            _ => panic!("level 5 replayed a level 6 body"),
        }
    }

    #[test]
    fn another_encoder_is_not_taken_for_zlib() {
        // flate2's zlib-rs backend encodes differently from C zlib at level 9.
        use std::io::Write;
        let data = sample();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(9));
        e.write_all(&data).unwrap();
        let other = e.finish().unwrap();
        if other == zlib(&data, 9, 8) {
            return; // same bytes: nothing to tell apart
        }
        let mut r = &other[..];
        let mut w = Window::new(&mut r, "test");
        let found = probe(&mut w, 2).unwrap();
        if let Some(c) = found {
            // Only acceptable if that candidate really reproduces the whole body.
            assert_eq!(zlib(&data, c.0, c.1), other);
        }
    }
}

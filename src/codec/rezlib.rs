//! Exact gzip rebuild by replay: a deflate body that the zlib linked into this build (libz-sys,
//! its bundled C zlib) re-encodes byte for byte at some level and memLevel. The parameters are
//! found on the body's first MiBs (`probe`), then proven over the whole body while it streams
//! (`body`: every re-encoded byte compared with the original, and seams found); a rebuild is
//! one deflate pass per segment between seams (`Deflater`, run by `segments`). It needs no correction bytes and runs several times faster than preflate-rs,
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

// zlib has had it since 1.2.5.2; libz-sys leaves it out of its bindings.
unsafe extern "C" {
    fn deflatePending(strm: z::z_streamp, pending: *mut std::os::raw::c_uint, bits: *mut c_int) -> c_int;
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

    /// A deflater that continues a stream at a seam (see [`Seam`]): `dict` (the plain text from
    /// `history_start` to the seam, at most [`HISTORY`] bytes) is its window, and the `bits` low
    /// bits of `value` are already in its first output byte (the end of the block before).
    pub fn at_seam(level: i32, mem_level: i32, dict: &[u8], bits: u8, value: u8) -> Result<Deflater> {
        let mut d = Deflater::new(level, mem_level)?;
        // A dictionary of a whole window or more would replace the window (and restart it at 0),
        // so it goes in pieces shorter than one, each appended where the one before ended.
        for piece in dict.chunks(WSIZE as usize - 1) {
            d.set_dictionary(piece)?;
        }
        if bits > 0 {
            d.prime(i32::from(bits), i32::from(value))?;
        }
        Ok(d)
    }

    /// An independent copy of this stream's whole state (`deflateCopy`).
    pub fn try_clone(&self) -> Result<Deflater> {
        let mut s = Box::new(MaybeUninit::<z::z_stream>::zeroed());
        // SAFETY: `self` is initialised; deflateCopy fills the zeroed destination completely
        // (its own allocations) or fails and leaves nothing to free.
        let r = unsafe { z::deflateCopy(s.as_mut_ptr(), self.s.as_ptr().cast_mut()) };
        if r != z::Z_OK {
            return Err(Error::Other(format!("zlib: deflateCopy failed ({r})")));
        }
        Ok(Deflater { s })
    }

    /// Compresses all of `input`, appending what zlib gives out to `out`; `finish` ends the stream
    /// (everything buffered is written, then the final block).
    pub fn run(&mut self, input: &[u8], finish: bool, out: &mut Vec<u8>) -> Result<()> {
        self.run_with(input, if finish { z::Z_FINISH } else { z::Z_NO_FLUSH }, out)
    }

    /// One `deflateSetDictionary` call with all of `dict` (a whole window or more replaces the
    /// history, as pigz's jobs do).
    pub fn set_dictionary(&mut self, dict: &[u8]) -> Result<()> {
        // SAFETY: initialised in `new`, before any deflate call; `dict` is live for the call.
        let r = unsafe { z::deflateSetDictionary(self.s.as_mut_ptr(), dict.as_ptr(), dict.len() as z::uInt) };
        if r != z::Z_OK {
            return Err(Error::Other(format!("zlib: deflateSetDictionary failed ({r})")));
        }
        Ok(())
    }

    /// Ends the open block where it is (`Z_BLOCK`); its last bits stay pending.
    pub fn end_block(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.run_with(&[], z::Z_BLOCK, out)
    }

    /// How many bits are written but not yet a whole byte (`deflatePending`).
    pub fn pending_bits(&mut self) -> Result<i32> {
        let mut bits: c_int = 0;
        // SAFETY: initialised in `new`; zlib allows a null `pending` pointer.
        let r = unsafe { deflatePending(self.s.as_mut_ptr(), std::ptr::null_mut(), &mut bits) };
        if r != z::Z_OK {
            return Err(Error::Other(format!("zlib: deflatePending failed ({r})")));
        }
        Ok(bits)
    }

    /// Inserts `bits` bits of `value` into the output (`deflatePrime`).
    pub fn prime(&mut self, bits: i32, value: i32) -> Result<()> {
        // SAFETY: initialised in `new`; zlib checks the bit count.
        let r = unsafe { z::deflatePrime(self.s.as_mut_ptr(), bits, value) };
        if r != z::Z_OK {
            return Err(Error::Other(format!("zlib: deflatePrime failed ({r})")));
        }
        Ok(())
    }

    /// Everything buffered written out (`Z_SYNC_FLUSH`: the open block ends, an empty stored
    /// block follows), after `input`.
    pub fn sync(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.run_with(input, z::Z_SYNC_FLUSH, out)
    }

    fn run_with(&mut self, mut input: &[u8], flush: c_int, out: &mut Vec<u8>) -> Result<()> {
        let finish = flush == z::Z_FINISH;
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
                let r = z::deflate(sp, if last { flush } else { z::Z_NO_FLUSH });
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
            // Without `finish`, done once all input is taken and zlib stopped for want of it (or,
            // for a sync flush, wrote everything out with room to spare).
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

/// A place where a new zlib stream may take over a deflate body: a block ends at plain byte
/// `plain_at` and at bit `byte_at * 8 + bits` of the body, and a fresh deflater given the plain
/// text from `history_start(plain_at)` to the seam as its dictionary (and those `bits` low bits of
/// `value`, the start of byte `byte_at`) writes the rest of the body exactly. The stream before
/// it, fed `MARGIN` plain bytes past the seam and then sync-flushed, has written bytes up to
/// `byte_at` exactly. Proven at write time like the rest of the replay; it lets a rebuild run one
/// deflater per segment, on as many cores as there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seam {
    pub plain_at: u64,
    pub byte_at: u64,
    pub bits: u8,
    pub value: u8,
}

/// zlib's window (32 KiB) and the distance a match may reach back (`MAX_DIST`: the window less
/// its 262-byte lookahead).
const WSIZE: u64 = 32 << 10;
const MAX_DIST: u64 = WSIZE - 262;

/// Where the dictionary of a deflater that takes over at plain byte `at` starts: where the
/// original stream's window starts when it gets there. zlib slides its window by 32 KiB whenever
/// its position passes 32 KiB + `MAX_DIST` into it, so its window starts at a multiple of 32 KiB
/// fixed by the position alone; the fresh deflater's window must start at the same place, or it
/// slides at other times, and a block that straddles a slide may not be stored in one stream
/// and be stored in the other (zlib stores a block only while its start is still in the window).
/// Measured: with the last 32 KiB as the dictionary, seams on a layer of the corpus broke 30 MB
/// later, at a run of stored blocks; with this start none did. Between `MAX_DIST` and
/// 32 KiB + `MAX_DIST` bytes before `at`.
pub fn history_start(at: u64) -> u64 {
    if at < MAX_DIST { 0 } else { (at - MAX_DIST) / WSIZE * WSIZE }
}

/// The most plain text a seam's dictionary can take (see [`history_start`]).
pub const HISTORY: usize = (WSIZE + MAX_DIST) as usize;
/// Plain bytes the stream before a seam is fed past it before its sync flush: enough lookahead
/// (zlib needs 262) for it to have ended the block at the seam, and far less than any block
/// after it (16 Ki symbols at least), so nothing after the seam has been written yet.
pub const MARGIN: u64 = 4 << 10;
/// The closest two seams (and the first seam to the start) may be: it bounds the extra work of a
/// record with many seams (a dictionary and a margin per seam) to a small part of the body.
pub const SEAM_MIN: u64 = 64 << 10;
/// Failed seam trials in a row after which a body is replayed without further tries (zlib's
/// fast levels 1-3 insert fewer strings than a dictionary does, so their seams never hold; at
/// levels 4-9 a trial fails only at a block that ends on a literal with a match pending).
const TRIES: u32 = 8;
/// Plain bytes a seam trial may hold back from the stream before it (one block at most, and zlib
/// blocks hold at most 32 Ki symbols of at most 258 bytes).
const TRIAL_MAX: usize = 16 << 20;

/// Raw inflate that stops at every block end (`Z_BLOCK`), to find where seams may go.
struct Inflater {
    s: Box<MaybeUninit<z::z_stream>>,
}

impl Inflater {
    fn new() -> Result<Inflater> {
        let mut s = Box::new(MaybeUninit::<z::z_stream>::zeroed());
        // SAFETY: as in `Deflater::new`.
        let r = unsafe { z::inflateInit2_(s.as_mut_ptr(), -15, z::zlibVersion(), std::mem::size_of::<z::z_stream>() as c_int) };
        if r != z::Z_OK {
            return Err(Error::Other(format!("zlib: inflateInit2 failed ({r})")));
        }
        Ok(Inflater { s })
    }

    /// Inflates from `input` into `out` (up to `room` more bytes), stopping at the end of a block.
    /// Returns (bytes of `input` used, stream ended, the bit offset in the stream of the block end
    /// it stopped at, if it did).
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> std::result::Result<(usize, bool, Option<u64>), String> {
        let sp = self.s.as_mut_ptr();
        out.reserve(room);
        let at = out.len();
        let take = input.len().min(1 << 30);
        // SAFETY: initialised in `new`; the pointers cover live buffers of the lengths given, and
        // only the bytes zlib reports written are added to `out`.
        let (r, used, data_type, total_in) = unsafe {
            (*sp).next_in = input.as_ptr().cast_mut();
            (*sp).avail_in = take as u32;
            (*sp).next_out = out.as_mut_ptr().add(at);
            (*sp).avail_out = room as u32;
            let r = z::inflate(sp, z::Z_BLOCK);
            out.set_len(at + room - (*sp).avail_out as usize);
            (r, take - (*sp).avail_in as usize, (*sp).data_type, (*sp).total_in)
        };
        match r {
            z::Z_STREAM_END => Ok((used, true, None)),
            z::Z_OK | z::Z_BUF_ERROR => {
                // data_type: 128 just after a block's end code, 64 inside the last block, the low
                // bits the unused bits of the last input byte.
                let end = (data_type & 128 != 0 && data_type & 64 == 0).then(|| total_in * 8 - (data_type & 7) as u64);
                Ok((used, false, end))
            }
            r => Err(format!("inflate failed ({r})")),
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`; inflateEnd frees zlib's state once.
        unsafe {
            z::inflateEnd(self.s.as_mut_ptr());
        }
    }
}

/// A seam being tried: a fresh deflater from a block end, checked against the body while the
/// stream before it waits (fed `MARGIN` past the seam).
struct Trial {
    zs: Deflater,
    seam: Seam,
    /// The body offset its next output byte must match.
    next: u64,
    /// Plain text after the seam that the stream before it has not been fed.
    held: Vec<u8>,
}

/// Streams the deflate body at the front of `w` through inflate, hands its plain text to
/// `plain` (and `crc`), re-encodes it with (level, memLevel) and compares every byte with the
/// original before consuming it. Every `seam_every` plain bytes or so it tries a seam at the next
/// block end (see [`Seam`]) and, once a fresh deflater from there has matched a whole block and
/// the stream before it is proven to end there, goes on with the fresh one. Returns the body's
/// plain length and its seams; `w` is left just after the body (at the gzip trailer).
pub(super) fn body(w: &mut Window, (level, mem_level): (i32, i32), seam_every: u64, plain: &mut dyn FnMut(&[u8]) -> Result<()>, crc: &mut Crc) -> Result<(u64, Vec<Seam>), Fail> {
    let base = w.pos;
    let seam_every = seam_every.max(SEAM_MIN);
    let mut d = Inflater::new()?;
    let mut zs = Deflater::new(level, mem_level)?;
    // Body offset of the next byte `zs` writes, and of the next byte inflate reads.
    let mut next = 0u64;
    let mut read = 0u64;
    let mut trial: Option<Trial> = None;
    let mut seams = Vec::new();
    let mut fails = 0u32;
    let mut text = Vec::with_capacity(1 << 20);
    let mut tail: Vec<u8> = Vec::with_capacity(2 * HISTORY);
    let mut out = Vec::new();
    let mut plain_len = 0u64;
    let at = |n: u64| base + n;
    loop {
        let lead = (read - (w.pos - base)) as usize;
        let avail = w.fill(lead + STEP_IN)?;
        text.clear();
        let (took, ended, block_end) = d.step(&avail[lead..], &mut text, STEP_IN).map_err(|e| Fail::No(format!("corrupt deflate data near byte {}: {e}", at(read))))?;
        if !ended && took == 0 && text.is_empty() {
            return Err(fail(plain_len, format!("truncated: the blob ends inside the deflate data (at byte {})", at(read))));
        }
        read += took as u64;
        crc.update(&text);
        plain(&text)?;
        let from = plain_len;
        plain_len += text.len() as u64;

        // The stream before a seam on trial is fed only up to MARGIN past it.
        let mut feed: &[u8] = &text;
        if let Some(t) = &mut trial {
            let stop = (t.seam.plain_at + MARGIN).saturating_sub(from).min(text.len() as u64) as usize;
            t.held.extend_from_slice(&text[stop..]);
            feed = &text[..stop];
        }
        out.clear();
        zs.run(feed, ended && trial.is_none(), &mut out)?;
        check(w, base, next, &out, level, mem_level)?;
        next += out.len() as u64;

        if let Some(mut t) = trial.take() {
            out.clear();
            let good = t.zs.run(&text, ended, &mut out).is_ok() && check(w, base, t.next, &out, level, mem_level).is_ok();
            t.next += out.len() as u64;
            let fed_margin = plain_len >= t.seam.plain_at + MARGIN;
            if good && t.next > t.seam.byte_at + 1 && fed_margin && !ended && next <= t.seam.byte_at {
                // The fresh stream matched a whole block: end the one before at the seam (on a
                // copy, so a failure leaves it as it was) and check its last bytes.
                let mut ending = zs.try_clone()?;
                out.clear();
                ending.sync(&[], &mut out)?;
                let want = (t.seam.byte_at - next) as usize;
                if out.len() >= want && check(w, base, next, &out[..want], level, mem_level).is_ok() {
                    seams.push(t.seam);
                    zs = t.zs;
                    next = t.next;
                    fails = 0;
                } else {
                    fails += 1;
                    resume(&mut zs, &t.held, false, w, base, &mut next, (level, mem_level))?;
                }
            } else if good && !ended && t.held.len() <= TRIAL_MAX {
                trial = Some(t);
            } else {
                fails += 1;
                resume(&mut zs, &t.held, ended, w, base, &mut next, (level, mem_level))?;
            }
        }

        // Keep the last HISTORY plain bytes for a seam's dictionary.
        tail.extend_from_slice(&text);
        if tail.len() > 2 * HISTORY {
            tail.drain(..tail.len() - HISTORY);
        }
        if let Some(b) = block_end
            && trial.is_none()
            && fails < TRIES
            && plain_len >= seams.last().map_or(0, |s: &Seam| s.plain_at) + seam_every
        {
            let byte_at = b / 8;
            let bits = (b % 8) as u8;
            // The byte the seam is in, from the body (held, as nothing past `next` is consumed);
            // a block end the stream before has already written past is no seam.
            let at = byte_at.checked_sub(w.pos - base).filter(|_| next <= byte_at).and_then(|k| w.avail().get(k as usize).copied());
            if let Some(byte) = at.or((bits == 0 && next <= byte_at).then_some(0)) {
                let value = byte & ((1u16 << bits) - 1) as u8;
                let dict = &tail[tail.len() - (plain_len - history_start(plain_len)) as usize..];
                let zs = Deflater::at_seam(level, mem_level, dict, bits, value)?;
                trial = Some(Trial { zs, seam: Seam { plain_at: plain_len, byte_at, bits, value }, next: byte_at, held: Vec::new() });
            }
        }

        let keep = trial.as_ref().map_or(next, |t| next.min(t.next.min(t.seam.byte_at)));
        let done = keep - (w.pos - base);
        w.consume(done as usize);
        if ended {
            if next != read || w.pos - base != read {
                return Err(Fail::Diverged(format!("zlib -{level} (memLevel {mem_level}) replay ends {} bytes before the deflate data (at byte {})", read.saturating_sub(next), at(next))));
            }
            return Ok((plain_len, seams));
        }
        if read - (w.pos - base) > LEAD_MAX as u64 {
            return Err(Fail::Diverged(format!("zlib -{level} replay fell over {} MiB behind the deflate data at byte {}", LEAD_MAX >> 20, w.pos)));
        }
    }
}

/// Checks what the replay wrote at body offset `next` against the body in `w`.
fn check(w: &Window, base: u64, next: u64, out: &[u8], level: i32, mem_level: i32) -> Result<(), Fail> {
    let k = (next - (w.pos - base)) as usize;
    let avail = w.avail();
    if avail.len() < k + out.len() {
        return Err(Fail::Diverged(format!("zlib replay ran ahead of the deflate data at byte {}", base + next)));
    }
    if let Some(i) = avail[k..k + out.len()].iter().zip(out).position(|(a, b)| a != b) {
        return Err(Fail::Diverged(format!("zlib -{level} (memLevel {mem_level}) replay differs at byte {}", base + next + i as u64)));
    }
    Ok(())
}

/// A failed trial: the stream before the seam takes the plain text it was held back from (and
/// ends, with `finish`).
fn resume(zs: &mut Deflater, held: &[u8], finish: bool, w: &Window, base: u64, next: &mut u64, (level, mem_level): (i32, i32)) -> Result<(), Fail> {
    let mut out = Vec::new();
    zs.run(held, finish, &mut out)?;
    check(w, base, *next, &out, level, mem_level)?;
    *next += out.len() as u64;
    Ok(())
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
        let n = match body(&mut w, (6, 9), u64::MAX, &mut |p| {
            got.extend_from_slice(p);
            Ok(())
        }, &mut crc) {
            Ok((n, seams)) => {
                assert!(seams.is_empty());
                n
            }
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
        match body(&mut w, (5, 8), SEAM_MIN, &mut |_| Ok(()), &mut Crc::new()) {
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

    /// The body's seams every `SEAM_MIN` plain bytes, and its plain text.
    fn seams_of(data: &[u8], body_bytes: &[u8], c: (i32, i32)) -> Vec<Seam> {
        let mut r = body_bytes;
        let mut w = Window::new(&mut r, "test");
        let mut got = Vec::new();
        let (n, seams) = match body(&mut w, c, SEAM_MIN, &mut |p| {
            got.extend_from_slice(p);
            Ok(())
        }, &mut Crc::new()) {
            Ok(x) => x,
            Err(_) => panic!("replay with seams failed for {c:?}"),
        };
        assert_eq!((n as usize, &got[..]), (data.len(), data), "{c:?}");
        assert_eq!(w.pos as usize, body_bytes.len());
        seams
    }

    fn rebuild_of(data: &[u8], c: (i32, i32), seams: Vec<Seam>) -> Result<Vec<u8>> {
        use super::super::segments::{Layout, replay};
        let mut rebuilt = Vec::new();
        let mut out = super::super::exact::Out { out: &mut rebuilt, what: "test" };
        let mut crc = Crc::new();
        replay(c.0 as u8, c.1 as u8, data.len() as u64, Layout::Seams(&seams), &mut &data[..], &mut out, &mut crc)?;
        let mut want = Crc::new();
        want.update(data);
        assert_eq!(crc.sum(), want.sum());
        Ok(rebuilt)
    }

    #[test]
    fn seams_are_found_and_segments_rebuild_the_body_exactly() {
        let data = sample();
        for c in [(6, 8), (9, 9), (4, 8), (9, 8)] {
            let body_bytes = zlib(&data, c.0, c.1);
            let seams = seams_of(&data, &body_bytes, c);
            // ~10 MB of plain text, a seam tried every 64 KiB at the next block end.
            assert!(seams.len() >= 20, "{c:?}: only {} seams", seams.len());
            assert!(seams.windows(2).all(|p| p[1].plain_at >= p[0].plain_at + SEAM_MIN && p[1].byte_at > p[0].byte_at));
            assert!(seams.iter().all(|s| s.plain_at + MARGIN <= data.len() as u64 && s.bits < 8 && u16::from(s.value) >> s.bits == 0));
            assert_eq!(rebuild_of(&data, c, seams).unwrap(), body_bytes, "{c:?}");
        }
    }

    #[test]
    fn fast_levels_give_up_on_seams_and_still_replay() {
        // Levels 1-3 insert fewer strings than a dictionary does: every trial fails.
        let data = sample();
        let body_bytes = zlib(&data, 1, 8);
        let seams = seams_of(&data, &body_bytes, (1, 8));
        assert!(seams.is_empty(), "{} seams at level 1", seams.len());
    }

    #[test]
    fn a_wrong_seam_gives_other_bytes_or_an_error() {
        let data = sample();
        let c = (9, 9);
        let body_bytes = zlib(&data, c.0, c.1);
        let seams = seams_of(&data, &body_bytes, c);
        let mid = seams.len() / 2;
        let primed = seams.iter().position(|s| s.bits > 0).expect("a seam inside a byte");
        let mut cases = Vec::new();
        let mut s = seams.clone();
        s[primed].value ^= 1;
        cases.push(s);
        let mut s = seams.clone();
        s[mid].byte_at += 1;
        cases.push(s);
        let mut s = seams.clone();
        s[mid].plain_at += 1;
        cases.push(s);
        for (i, s) in cases.into_iter().enumerate() {
            if let Ok(b) = rebuild_of(&data, c, s) {
                assert!(b != body_bytes, "case {i} rebuilt the body");
            }
        }
        // Leaving a seam out only makes a segment longer: the stream before it just goes on.
        let mut s = seams.clone();
        s.remove(mid);
        assert!(rebuild_of(&data, c, s).unwrap() == body_bytes);
    }

    #[test]
    fn a_segment_too_long_for_a_worker_is_streamed_exactly() {
        // Seams left out make a segment longer than a worker takes (8 MiB): the rebuild streams
        // it in order, first as the first segment, then in the middle.
        let data = sample();
        assert!(data.len() > 9 << 20, "sample of {} bytes", data.len());
        let c = (6, 9);
        let body_bytes = zlib(&data, c.0, c.1);
        let seams = seams_of(&data, &body_bytes, c);
        let (first, last) = (seams[0], *seams.last().unwrap());
        assert!(last.plain_at - first.plain_at > 8 << 20);
        for s in [vec![last], vec![first, last], vec![first]] {
            assert!(rebuild_of(&data, c, s.clone()).unwrap() == body_bytes, "{s:?}");
        }
    }
}

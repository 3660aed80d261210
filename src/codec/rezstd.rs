//! Exact zstd rebuild: the zstd side of `exact` — finding libzstd parameters (level, checksum,
//! pledged content size, `--long`, single- or multi-threaded API) that re-encode a frame byte for
//! byte, compared with the original while the blob streams, and re-encoding with them.
//!
//! The zstd CLI (1.5.x) compresses through libzstd's multi-threaded API even with one thread
//! (`-T1` is its default; `--single-thread` is the other API), and its output is the same for any
//! number of workers: both APIs are candidates. Output depends on the libzstd version: the CLI
//! here (1.5.4) and the libzstd built into the `zstd` crate (1.5.7) differ at level 3 from the
//! first block on (measured), so a record names the libzstd version that proved it and a build
//! with another version refuses it rather than write other bytes.
use std::collections::VecDeque;
use std::io::{Read, Write};

use zstd::stream::raw::{CParameter, DParameter, Decoder, Encoder, InBuffer, Operation, OutBuffer};

use super::exact::{Analysis, Out, Rebuild, Window, ZstdParams, expect_plain_end};
use crate::error::{Error, Result};

/// The levels a record may name (libzstd's range).
pub(super) const LEVELS: std::ops::RangeInclusive<i64> = -131072..=22;

/// Plain bytes kept from the frame's start so that a candidate started after another failed can
/// be fed from the beginning. Wrong parameters show within the first block (128 KiB) in the
/// single-threaded API and within the first job (8 MiB at level 3, 32 MiB at 19) in the
/// multi-threaded one.
const HEAD: usize = 8 << 20;
/// Candidates encoding at once (each is a libzstd context: a few MiB at level 3, ~100 at 19).
const LIVE: usize = 3;
/// Compressed bytes kept for comparison behind the slowest candidate (a multi-threaded encoder
/// outputs a job at a time): past this, it is dropped.
const HIST_MAX: usize = 64 << 20;
const BUF: usize = 1 << 20;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// libzstd's window log per level for inputs over 256 KiB (lib/compress/clevels.h), used only to
/// try the levels that fit the frame's window first.
const WINDOW_LOG: [u32; 23] = [19, 19, 20, 21, 21, 21, 21, 21, 21, 22, 22, 22, 22, 22, 22, 22, 22, 23, 23, 23, 25, 26, 27];

fn encoder(z: &ZstdParams) -> std::io::Result<Encoder<'static>> {
    let mut e = Encoder::new(z.level)?;
    e.set_parameter(CParameter::ChecksumFlag(z.checksum))?;
    if z.long {
        e.set_parameter(CParameter::EnableLongDistanceMatching(true))?;
        e.set_parameter(CParameter::WindowLog(27))?;
    }
    if z.workers > 0 {
        e.set_parameter(CParameter::NbWorkers(z.workers))?;
    }
    e.set_pledged_src_size(z.content_size)?;
    Ok(e)
}

/// What the frame header says: content checksum, content size, window log (None for a
/// single-segment frame, whose window is its content size), dictionary id present.
struct Header {
    checksum: bool,
    content_size: Option<u64>,
    window_log: Option<u32>,
    dict: bool,
}

fn header(h: &[u8]) -> Option<Header> {
    let fhd = *h.get(4)?;
    let single = fhd & 0x20 != 0;
    let window_log = if single { None } else { Some(10 + u32::from(*h.get(5)? >> 3)) };
    Some(Header { checksum: fhd & 4 != 0, content_size: super::hint::zstd_content_size(h), window_log, dict: fhd & 3 != 0 })
}

/// The single-threaded candidates for a frame, most likely first: the CLI's default level 3, then
/// the levels whose window fits the header, then the rest; `--long` only when the window is
/// 128 MiB or the frame is a single segment. Each one's multi-threaded twin is started when it
/// has matched the frame's first block (see `Search`).
fn candidates(h: &Header) -> VecDeque<ZstdParams> {
    let mut levels: Vec<i32> = vec![3];
    let fits = |l: i32| h.window_log.is_none_or(|w| WINDOW_LOG[l as usize] == w);
    levels.extend((1..=19).filter(|&l| l != 3 && fits(l)));
    levels.extend((1..=19).filter(|&l| l != 3 && !fits(l)));
    let longs: &[bool] = match h.window_log {
        Some(27) => &[true, false],
        None => &[false, true],
        Some(_) => &[false],
    };
    let mut out = VecDeque::new();
    for &long in longs {
        for &level in &levels {
            out.push_back(ZstdParams { level, checksum: h.checksum, content_size: h.content_size, long, workers: 0, libzstd: libzstd() });
        }
    }
    out
}

/// A candidate encoder and how many of the frame's bytes it has matched so far.
struct Cand {
    p: ZstdParams,
    enc: Encoder<'static>,
    pos: u64,
    /// Whether its multi-threaded twin has been started.
    twin: bool,
}

/// The frame's compressed bytes from `base` on, for comparison.
struct Hist {
    bytes: Vec<u8>,
    base: u64,
}

impl Cand {
    /// Compares what the encoder produced with the frame; false at the first difference (or when
    /// it produced bytes the frame has not shown yet, which a matching encoder cannot).
    fn check(&mut self, produced: &[u8], hist: &Hist) -> bool {
        let from = (self.pos - hist.base) as usize;
        let ok = hist.bytes.get(from..from + produced.len()).is_some_and(|want| want == produced);
        self.pos += produced.len() as u64;
        ok
    }

    fn feed(&mut self, plain: &[u8], hist: &Hist, out: &mut [u8]) -> bool {
        let mut ib = InBuffer::around(plain);
        while ib.pos() < plain.len() {
            let mut ob = OutBuffer::around(out);
            if self.enc.run(&mut ib, &mut ob).is_err() {
                return false;
            }
            let n = ob.pos();
            if !self.check(&out[..n], hist) {
                return false;
            }
        }
        true
    }

    /// Ends the frame; true when all of it matched the original frame of `len` bytes.
    fn finish(&mut self, hist: &Hist, out: &mut [u8], len: u64) -> bool {
        loop {
            let mut ob = OutBuffer::around(out);
            let Ok(left) = self.enc.finish(&mut ob, true) else { return false };
            let n = ob.pos();
            if !self.check(&out[..n], hist) {
                return false;
            }
            if left == 0 {
                return self.pos == len;
            }
        }
    }
}

/// The candidates' search, fed the frame's plain bytes as they come.
struct Search {
    queue: VecDeque<ZstdParams>,
    live: Vec<Cand>,
    /// The frame's first plain bytes, while there are at most `HEAD` of them.
    head: Option<Vec<u8>>,
    hist: Hist,
    out: Vec<u8>,
}

impl Search {
    fn plain(&mut self, pc: &[u8]) {
        if let Some(h) = &mut self.head {
            if h.len() + pc.len() <= HEAD {
                h.extend_from_slice(pc);
            } else {
                self.head = None;
            }
        }
        let (hist, out) = (&self.hist, &mut self.out);
        self.live.retain_mut(|c| c.feed(pc, hist, out));
        self.twins();
        self.refill();
        self.trim();
    }

    /// The multi-threaded API writes its first output only after a whole job (8 MiB at level 3,
    /// 32 MiB at 19), too late to try levels one by one; its first block is the single-threaded
    /// API's, so a single-threaded candidate that matched a block starts its twin.
    fn twins(&mut self) {
        let Some(head) = &self.head else { return };
        for i in 0..self.live.len() {
            let c = &mut self.live[i];
            if c.twin || c.p.workers != 0 || c.pos == 0 {
                continue;
            }
            c.twin = true;
            let p = ZstdParams { workers: 1, ..c.p.clone() };
            let Ok(enc) = encoder(&p) else { continue };
            let mut t = Cand { p, enc, pos: 0, twin: true };
            if t.feed(head, &self.hist, &mut self.out) {
                self.live.push(t);
            }
        }
    }

    /// Starts queued candidates (fed the head) while there is room and the head is whole.
    fn refill(&mut self) {
        let Some(head) = &self.head else { return };
        while self.live.len() < LIVE {
            let Some(p) = self.queue.pop_front() else { return };
            let Ok(enc) = encoder(&p) else { continue };
            let mut c = Cand { p, enc, pos: 0, twin: false };
            if c.feed(head, &self.hist, &mut self.out) {
                self.live.push(c);
            }
        }
    }

    fn trim(&mut self) {
        if self.head.is_some() {
            return; // a new candidate compares from the frame's first byte
        }
        while self.hist.bytes.len() > HIST_MAX && !self.live.is_empty() {
            let slowest = (0..self.live.len()).min_by_key(|&i| self.live[i].pos).expect("not empty");
            self.live.remove(slowest);
        }
        let Some(low) = self.live.iter().map(|c| c.pos).min() else {
            self.hist.bytes.clear();
            return;
        };
        let cut = (low - self.hist.base) as usize;
        if cut >= BUF {
            self.hist.bytes.drain(..cut);
            self.hist.base = low;
        }
    }

    /// Whether a candidate can still turn out exact.
    fn hopeless(&self) -> bool {
        self.live.is_empty() && (self.head.is_none() || self.queue.is_empty())
    }

    /// At the frame's end (`len` bytes): the first candidate, in order, that reproduces it.
    fn finish(mut self, len: u64) -> Option<ZstdParams> {
        let (hist, out) = (&self.hist, &mut self.out);
        let mut live = std::mem::take(&mut self.live);
        live.sort_by_key(|c| order(&c.p));
        if let Some(c) = live.iter_mut().find_map(|c| c.finish(hist, out, len).then_some(c)) {
            return Some(c.p.clone());
        }
        let head = self.head?;
        // The whole frame is in the head: the rest of the queue can still be tried.
        while let Some(p) = self.queue.pop_front() {
            for p in [ZstdParams { workers: 1, ..p.clone() }, p] {
                let Ok(enc) = encoder(&p) else { continue };
                let mut c = Cand { p, enc, pos: 0, twin: true };
                if c.feed(&head, &self.hist, &mut self.out) && c.finish(&self.hist, &mut self.out, len) {
                    return Some(c.p);
                }
            }
        }
        None
    }
}

/// Preference among several candidates that reproduce a frame: the CLI's way first.
fn order(p: &ZstdParams) -> (bool, u32, i32) {
    (p.long, 1 - p.workers, p.level)
}

pub(super) fn analyze(w: &mut Window, plain: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<Analysis> {
    let other = |why: &str| Ok(Analysis::not_exact("zstd (other)".into(), why));
    let Some(h) = header(w.fill(18)?) else { return other("truncated frame header") };
    if h.dict {
        return other("the frame names a dictionary");
    }
    let mut s = Search { queue: candidates(&h), live: Vec::new(), head: Some(Vec::new()), hist: Hist { bytes: Vec::new(), base: 0 }, out: vec![0; BUF] };
    s.refill();
    let mut dec = Decoder::new().map_err(|e| Error::Other(format!("{}: zstd: {e}", w.what)))?;
    dec.set_parameter(DParameter::WindowLogMax(crate::limits::ZSTD_WINDOW_LOG)).map_err(|e| Error::Other(format!("{}: zstd: {e}", w.what)))?;
    let mut pbuf = vec![0u8; BUF];
    let mut len = 0u64;
    loop {
        let at = w.pos;
        let avail = w.fill(1)?;
        if avail.is_empty() {
            return other(&format!("truncated: the blob ends inside the zstd frame (at byte {at})"));
        }
        let mut ib = InBuffer::around(avail);
        let mut ob = OutBuffer::around(&mut pbuf[..]);
        let hint = match dec.run(&mut ib, &mut ob) {
            Ok(h) => h,
            Err(e) => return other(&format!("corrupt zstd frame near byte {at}: {e}")),
        };
        let (used, n) = (ib.pos(), ob.pos());
        s.hist.bytes.extend_from_slice(&avail[..used]);
        w.consume(used);
        len += used as u64;
        if n > 0 {
            plain(&pbuf[..n])?;
            s.plain(&pbuf[..n]);
        }
        if hint == 0 {
            break;
        }
        if s.hopeless() {
            return other("no libzstd level or mode tried reproduces the frame (another encoder, e.g. klauspost/compress, or another libzstd version)");
        }
    }
    if !w.at_end()? {
        let at = w.pos;
        let more = if w.fill(4)?.starts_with(&ZSTD_MAGIC) { "another zstd frame follows (multi-frame blobs are not rebuilt)" } else { "bytes after the zstd frame" };
        return other(&format!("{more}, at byte {at}"));
    }
    match s.finish(len) {
        Some(p) => Ok(Analysis::exact(Rebuild::Zstd(p), "zstd (libzstd)".into())),
        None => other("no libzstd level or mode tried reproduces the frame (another encoder, e.g. klauspost/compress, or another libzstd version)"),
    }
}

/// The version of the libzstd linked in, as `ZSTD_versionNumber` gives it (10507 = 1.5.7).
pub(super) fn libzstd() -> u32 {
    zstd::zstd_safe::version_number()
}

fn dotted(v: u32) -> String {
    format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
}

/// Re-encodes `plain` with the recorded parameters.
pub(super) fn rebuild(z: &ZstdParams, plain: &mut dyn Read, out: &mut dyn Write, what: &str) -> Result<u64> {
    if z.libzstd != libzstd() {
        return Err(Error::Other(format!("{what}: the exact-rebuild record needs libzstd {}, this build has {}", dotted(z.libzstd), dotted(libzstd()))));
    }
    let zerr = |e: std::io::Error| Error::Other(format!("{what}: zstd re-encode: {e}"));
    let mut enc = encoder(z).map_err(zerr)?;
    let mut out = Out { out, what };
    let (mut ibuf, mut obuf) = (vec![0u8; BUF], vec![0u8; BUF]);
    let (mut fed, mut written) = (0u64, 0u64);
    loop {
        let n = match plain.read(&mut ibuf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from_read(what, e)),
        };
        fed += n as u64;
        if let Some(c) = z.content_size.filter(|&c| fed > c) {
            return Err(Error::Other(format!("{what}: the plain stream is longer than the exact-rebuild record's {c} bytes")));
        }
        let mut ib = InBuffer::around(&ibuf[..n]);
        while ib.pos() < n {
            let mut ob = OutBuffer::around(&mut obuf[..]);
            enc.run(&mut ib, &mut ob).map_err(zerr)?;
            let k = ob.pos();
            out.put(&obuf[..k])?;
            written += k as u64;
        }
    }
    if let Some(c) = z.content_size.filter(|&c| c != fed) {
        return Err(Error::Other(format!("{what}: the plain stream ends {} bytes before the exact-rebuild record does", c - fed)));
    }
    loop {
        let mut ob = OutBuffer::around(&mut obuf[..]);
        let left = enc.finish(&mut ob, true).map_err(zerr)?;
        let k = ob.pos();
        out.put(&obuf[..k])?;
        written += k as u64;
        if left == 0 {
            break;
        }
    }
    expect_plain_end(plain, what)?;
    Ok(written)
}

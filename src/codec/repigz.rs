//! Exact gzip rebuild of pigz's output by replay: pigz cuts its input into jobs of 128 KiB, and
//! deflates each with a fresh zlib stream (memLevel 8, the level asked for) whose dictionary is
//! the 32 KiB of input before the job, then ends it on a byte boundary (a sync flush, or empty
//! static blocks after a `Z_BLOCK`) so the jobs concatenate; the last job finishes the stream.
//! The linked zlib replays that job by job. `probe` finds the level on the first jobs without
//! consuming anything; `body` proves the whole body while it streams, every job's bytes compared
//! with the original before they are consumed. Measured with pigz 2.6 at levels 1, 6 and 9:
//! exact, where preflate-rs ran at 3.7–7.9 MB/s and kept 9.6 % of side data at level 1.
use flate2::{Crc, Decompress, FlushDecompress, Status};

use super::exact::Window;
use super::rezlib::{Deflater, Fail};
use crate::error::Result;

/// pigz's default job size (`-b 128`): the only one tried.
pub const BLOCK: u32 = 128 << 10;
/// The job sizes a record may name (pigz's `-b` is in KiB, from 32): bounds a rebuild's memory
/// (a rebuild hands whole jobs to its workers).
pub const BLOCK_MIN: u32 = 32 << 10;
pub const BLOCK_MAX: u32 = 8 << 20;
/// The dictionary each job after the first gets.
const DICT: usize = 32 << 10;
/// Jobs the probe replays, at most.
const PROBE_JOBS: usize = 3;
/// Deflate bytes inflated per step of `body`.
const STEP_IN: usize = 1 << 20;
/// Deflate data inflated but not yet matched: a job's output is at most a little more than its
/// input, so more than this means another encoder.
const LEAD_MAX: usize = 8 << 20;

/// One pigz job: `input` deflated after `dict` (empty for the first job), its bytes appended to
/// `out`; `more` when jobs follow (then it ends on a byte boundary), else it ends the stream.
pub fn job(level: i32, dict: &[u8], input: &[u8], more: bool, out: &mut Vec<u8>) -> Result<()> {
    let mut zs = Deflater::new(level, 8)?;
    if !dict.is_empty() {
        zs.set_dictionary(dict)?;
    }
    zs.run(input, !more, out)?;
    if more {
        zs.end_block(out)?;
        let mut bits = zs.pending_bits()?;
        if bits & 1 != 0 {
            zs.sync(&[], out)?;
        } else if bits & 7 != 0 {
            while bits & 7 != 0 {
                zs.prime(10, 2)?;
                bits = zs.pending_bits()?;
            }
            zs.end_block(out)?;
        }
    }
    Ok(())
}

/// The candidate levels in the order tried: the header's XFL hint (2: best, 4: fastest), then
/// pigz's default 6, then the rest.
fn levels(xfl: u8) -> Vec<i32> {
    let first = match xfl {
        2 => 9,
        4 => 1,
        _ => 6,
    };
    let mut v = vec![first];
    for l in [6, 1, 2, 3, 4, 5, 7, 8, 9] {
        if !v.contains(&l) {
            v.push(l);
        }
    }
    v
}

/// The level at which pigz's jobs reproduce the start of the deflate body at the front of `w`
/// (its first jobs, or the whole body if it is shorter), without consuming anything.
pub(super) fn probe(w: &mut Window, xfl: u8) -> Result<Option<i32>> {
    let want_plain = PROBE_JOBS * BLOCK as usize + 1;
    let body = w.fill(want_plain + (1 << 20))?;
    let mut d = Decompress::new(false);
    let mut plain = Vec::with_capacity(want_plain);
    let ended = match d.decompress_vec(body, &mut plain, FlushDecompress::None) {
        Ok(s) => s == Status::StreamEnd,
        Err(_) => return Ok(None),
    };
    let body = &body[..d.total_in() as usize];
    let block = BLOCK as usize;
    // Whole jobs known to be followed by more (or all of a body that ended).
    let jobs = if ended { plain.len().div_ceil(block).max(1) } else { (plain.len().saturating_sub(1) / block).min(PROBE_JOBS) };
    if jobs == 0 || (ended && plain.len() <= block) {
        // One job is one zlib stream: the zlib replay's probe has already tried that.
        return Ok(None);
    }
    let mut out = Vec::new();
    for level in levels(xfl) {
        out.clear();
        for j in 0..jobs {
            let at = j * block;
            let end = (at + block).min(plain.len());
            let more = !(ended && end == plain.len());
            let dict = &plain[at.saturating_sub(DICT)..at];
            job(level, dict, &plain[at..end], more, &mut out)?;
            if !body.starts_with(&out) {
                break;
            }
        }
        let whole = if ended { out.len() == body.len() } else { out.len() >= 4096.min(body.len()) };
        if body.starts_with(&out) && whole {
            return Ok(Some(level));
        }
    }
    Ok(None)
}

/// Streams the deflate body at the front of `w` through inflate, hands its plain text to
/// `plain` (and `crc`), re-deflates it job by job at `level` and compares every byte with the
/// original before consuming it. Returns the body's plain length; `w` is left at the trailer.
pub(super) fn body(w: &mut Window, level: i32, plain: &mut dyn FnMut(&[u8]) -> Result<()>, crc: &mut Crc) -> Result<u64, Fail> {
    let block = BLOCK as usize;
    let mut d = Decompress::new(false);
    let mut lead = 0usize;
    // Plain text not yet re-deflated, after the 32 KiB before it (`dict` bytes of it).
    let mut held: Vec<u8> = Vec::with_capacity(2 * block + DICT);
    let mut dict = 0usize;
    let mut text = Vec::with_capacity(STEP_IN);
    let mut out = Vec::new();
    let mut plain_len = 0u64;
    let mut jobs = 0u64;
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
            let why = format!("truncated: the blob ends inside the deflate data (at byte {})", w.pos + lead as u64);
            return Err(if plain_len == 0 { Fail::No(why) } else { Fail::Diverged(why) });
        }
        lead += took;
        crc.update(&text);
        plain(&text)?;
        plain_len += text.len() as u64;
        held.extend_from_slice(&text);
        // Every job known to have more after it, then (at the end) the last one.
        while held.len() - dict > block || (ended && held.len() > dict) {
            let end = (dict + block).min(held.len());
            let more = !(ended && end == held.len());
            out.clear();
            job(level, &held[..dict], &held[dict..end], more, &mut out)?;
            let orig = w.avail();
            if out.len() > lead || orig[..out.len()] != out[..] {
                let at = orig.iter().zip(&out).position(|(a, b)| a != b).unwrap_or(out.len().min(lead));
                return Err(Fail::Diverged(format!("pigz -{level} replay differs at byte {} (job {})", w.pos + at as u64, jobs + 1)));
            }
            w.consume(out.len());
            lead -= out.len();
            jobs += 1;
            let keep = end.saturating_sub(DICT);
            held.drain(..keep);
            dict = end - keep;
        }
        if ended {
            if lead != 0 {
                return Err(Fail::Diverged(format!("pigz -{level} replay ends {lead} bytes before the deflate data (at byte {})", w.pos)));
            }
            return Ok(plain_len);
        }
        if lead > LEAD_MAX {
            return Err(Fail::Diverged(format!("pigz -{level} replay fell over {} MiB behind the deflate data at byte {}", LEAD_MAX >> 20, w.pos)));
        }
    }
}

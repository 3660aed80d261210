//! Exact gzip rebuild: the gzip side of `exact` — member headers and trailers kept verbatim, each
//! deflate body replayed by zlib (`rezlib`, when zlib made it) or turned into preflate-rs pieces
//! (plain bytes + corrections, proven by re-encoding as they are made) and back, and the producer
//! told from the header.
use std::panic::{AssertUnwindSafe, catch_unwind};

use preflate_rs::{ExitCode, HashAlgorithm, PreflateConfig, PreflateStreamProcessor, RecreateStreamProcessor};

use super::exact::{Analysis, GzBody, GzMember, Out, Piece, PigzReplay, Rebuild, Window, ZlibReplay, expect_plain_end, read_plain};
use super::repigz;
use super::segments::{self, Layout};
use super::rezlib::{self, Fail};
use crate::error::{Error, Result};

/// The longest member header there can be: 10 fixed bytes, FEXTRA (2 + 65535), FNAME and
/// FCOMMENT (65536 each, as `gunzip` allows), FHCRC (2).
pub(super) const HEADER_MAX: usize = 10 + 2 + 65535 + 2 * 65536 + 2;

/// Plain text preflate-rs may decode per call (its `plain_text_limit`): a piece ends at the last
/// block boundary before it. 16 MiB holds any Huffman block zlib (at most 16 Ki symbols of at
/// most 258 bytes: 4 MiB) or Go (64 Ki tokens) writes.
const PLAIN_LIMIT: usize = 16 << 20;

/// The most plain bytes a piece may have, here and in a record: preflate-rs does not count
/// stored blocks against its limit, so a piece may hold up to a slice of them on top.
pub(super) const PIECE_PLAIN_MAX: usize = 32 << 20;

/// Deflate bytes handed to preflate-rs per call: each call keeps its blocks' tokens and plain
/// text in memory, so this bounds memory; it grows (to `SLICE_MAX`) only when one block is
/// bigger.
const SLICE: usize = 1 << 20;
const SLICE_MAX: usize = 64 << 20;
/// The first call is bigger: preflate-rs estimates the encoder's parameters (hash function, match
/// finder, insertion policy) from the first call's blocks alone and keeps them for the member.
/// Estimated on 1 MiB of a tar that began with incompressible files, it took GNU gzip -6 for
/// libdeflate and failed 8 MB later; 8 MiB (capped at `PLAIN_LIMIT` of plain text) found zlib.
const FIRST_SLICE: usize = 8 << 20;

/// Plain bytes between the seams a zlib replay looks for (see `rezlib::Seam`): a rebuild runs a
/// deflater per segment, one per core. 4 MiB keeps a segment's work (and buffers, ~6 MiB) small
/// while its fixed costs (a 32 KiB dictionary, 4 KiB of margin) stay near 1 %; a 1 GB layer gets
/// about 250 seams, ~2 KB of record.
const SEAM_EVERY: u64 = 4 << 20;

/// Pieces are made so that their plain text ends at a block boundary within this limit.
fn config() -> PreflateConfig {
    PreflateConfig { plain_text_limit: PLAIN_LIMIT, verify_compression: true, ..PreflateConfig::default() }
}

/// The length of the gzip member header `b` holds, if it is exactly one whole valid header.
pub(super) fn header_len(b: &[u8]) -> Option<usize> {
    super::gunzip::header_len(b).ok().flatten()
}

/// Why a member cannot be rebuilt, or an error that ends the analysis.
enum Stop {
    No(String),
    /// A zlib replay stopped matching after plain bytes were handed on: analyse again without.
    Diverged(String),
    Err(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Err(e)
    }
}

impl From<Fail> for Stop {
    fn from(f: Fail) -> Self {
        match f {
            Fail::No(why) => Stop::No(why),
            Fail::Diverged(why) => Stop::Diverged(why),
            Fail::Err(e) => Stop::Err(e),
        }
    }
}

/// The whole-blob analysis: every member, then nothing after the last.
/// With `replay`, each body is first tried as a zlib replay (see `rezlib`).
pub(super) fn analyze(w: &mut Window, plain: &mut dyn FnMut(&[u8]) -> Result<()>, replay: bool) -> Result<Analysis> {
    let mut members = Vec::new();
    let mut first_header = Vec::new();
    let mut zlib = None;
    loop {
        let at = w.pos;
        // The fixed part of this member's header, for `producer` (member() consumes it).
        let fixed = w.fill(10)?;
        let fixed = fixed[..fixed.len().min(10)].to_vec();
        match member(w, plain, &mut zlib, replay) {
            Ok(m) => {
                if members.is_empty() {
                    first_header = m.header.clone();
                }
                members.push(m);
            }
            Err(Stop::Err(e)) => return Err(e),
            Err(Stop::Diverged(why)) => {
                let header = if members.is_empty() { fixed } else { first_header };
                let mut a = Analysis::not_exact(producer(&header, None), &why);
                a.diverged = true;
                return Ok(a);
            }
            Err(Stop::No(why)) => {
                let header = if members.is_empty() { fixed } else { first_header };
                let why = if members.is_empty() { why } else { format!("gzip member {} (at byte {at}): {why}", members.len() + 1) };
                return Ok(Analysis::not_exact(producer(&header, None), &why));
            }
        }
        if w.at_end()? {
            break;
        }
        if !w.fill(2)?.starts_with(&[0x1f, 0x8b]) {
            let at = w.pos;
            w.drain()?;
            let why = format!("{} bytes after the gzip stream (from byte {at})", w.pos - at);
            return Ok(Analysis::not_exact(producer(&first_header, None), &why));
        }
    }
    let producer = producer(&first_header, Some(zlib.unwrap_or(false)));
    Ok(Analysis::exact(Rebuild::Gzip { members }, producer))
}

/// One member: header, deflate body as a zlib replay or as pieces, trailer checked against the
/// plain bytes. `zlib` gets whether the first body was modelled as zlib's own output (a replay,
/// or preflate-rs finding zlib's hash function): the producer's tell.
fn member(w: &mut Window, plain: &mut dyn FnMut(&[u8]) -> Result<()>, zlib: &mut Option<bool>, replay: bool) -> Result<GzMember, Stop> {
    let head = w.fill(HEADER_MAX)?;
    let hlen = match super::gunzip::header_len(head) {
        Ok(Some(n)) => n,
        Ok(None) => return Err(Stop::No("truncated inside the member header".into())),
        Err(e) => return Err(Stop::No(e.into())),
    };
    let header = head[..hlen].to_vec();
    w.consume(hlen);

    if replay && let Some((level, mem_level)) = rezlib::probe(w, header[8])? {
        let mut crc = flate2::Crc::new();
        let (plain_len, seams) = rezlib::body(w, (level, mem_level), SEAM_EVERY, plain, &mut crc)?;
        zlib.get_or_insert(true);
        let trailer = trailer(w, &crc)?;
        let body = GzBody::Zlib(ZlibReplay { level: level as u8, mem_level: mem_level as u8, plain_len, zlib: rezlib::version(), seams });
        return Ok(GzMember { header, body, trailer });
    }

    if replay && let Some(level) = repigz::probe(w, header[8])? {
        let mut crc = flate2::Crc::new();
        let plain_len = repigz::body(w, level, plain, &mut crc)?;
        zlib.get_or_insert(true);
        let trailer = trailer(w, &crc)?;
        let body = GzBody::Pigz(PigzReplay { level: level as u8, block: repigz::BLOCK, plain_len, zlib: rezlib::version() });
        return Ok(GzMember { header, body, trailer });
    }

    let mut p = PreflateStreamProcessor::new(&config());
    let mut pieces = Vec::new();
    let mut crc = flate2::Crc::new();
    let mut want = FIRST_SLICE;
    while !p.is_done() {
        let at = w.pos;
        let avail = w.fill(want)?;
        let slice = &avail[..avail.len().min(want)];
        let got = slice.len();
        let step = catch_unwind(AssertUnwindSafe(|| p.decompress(slice))).map_err(|_| Stop::No(format!("preflate-rs panicked on the deflate data at byte {at}")))?;
        match step {
            Ok(r) => {
                if zlib.is_none() {
                    *zlib = r.parameters.map(|t| matches!(t.hash_algorithm, HashAlgorithm::Zlib { .. }));
                }
                let text = p.plain_text().text();
                if text.len() > PIECE_PLAIN_MAX {
                    return Err(Stop::No(format!("deflate blocks at byte {at} inflate to over {} MiB in one piece", PIECE_PLAIN_MAX >> 20)));
                }
                crc.update(text);
                plain(text)?;
                pieces.push(Piece { plain_len: text.len() as u64, corrections: r.corrections });
                p.shrink_to_dictionary();
                w.consume(r.compressed_size);
                want = SLICE;
            }
            Err(e) if e.exit_code() == ExitCode::ShortRead => {
                if got < want {
                    return Err(Stop::No(format!("truncated: the blob ends inside the deflate data (at byte {})", at + got as u64)));
                }
                if want >= SLICE_MAX {
                    return Err(Stop::No(format!("a deflate block at byte {at} is longer than {} MiB", SLICE_MAX >> 20)));
                }
                want *= 2;
            }
            Err(e) if e.exit_code() == ExitCode::PlainTextLimit => {
                return Err(Stop::No(format!("a deflate block at byte {at} inflates to over {} MiB", PLAIN_LIMIT >> 20)));
            }
            Err(e) => return Err(Stop::No(format!("preflate-rs cannot rebuild the deflate data at byte {at}: {e}"))),
        }
    }
    let trailer = trailer(w, &crc)?;
    Ok(GzMember { header, body: GzBody::Pieces(pieces), trailer })
}

/// Reads the member's 8-byte trailer and checks it against the plain bytes' CRC32 and length.
fn trailer(w: &mut Window, crc: &flate2::Crc) -> Result<[u8; 8], Stop> {
    let t = w.fill(8)?;
    if t.len() < 8 {
        return Err(Stop::No("truncated inside the gzip trailer".into()));
    }
    let trailer: [u8; 8] = t[..8].try_into().expect("8 bytes");
    w.consume(8);
    if trailer != trailer_of(crc) {
        return Err(Stop::No("the trailer's CRC32 or ISIZE does not match the inflated data (corrupt)".into()));
    }
    Ok(trailer)
}

/// The preflate-rs pieces re-deflated from their plain bytes; returns the deflate bytes written.
/// `member` names the member in errors.
fn recreate(pieces: &[Piece], plain: &mut dyn std::io::Read, out: &mut Out, crc: &mut flate2::Crc, buf: &mut Vec<u8>, member: &str) -> Result<u64> {
    let what = out.what;
    let mut r = RecreateStreamProcessor::new();
    let mut written = 0u64;
    for p in pieces {
        // decode() capped plain_len; a record built in memory is trusted to be sane.
        buf.resize(usize::try_from(p.plain_len).map_err(|_| Error::Other(format!("{what}: a deflate piece too big for memory")))?, 0);
        read_plain(plain, buf, what)?;
        crc.update(buf);
        let bytes = catch_unwind(AssertUnwindSafe(|| r.recompress(&mut &buf[..], &p.corrections)))
            .map_err(|_| Error::Other(format!("{member}: preflate-rs panicked on the exact-rebuild record")))?
            .map_err(|e| Error::Other(format!("{member}: the exact-rebuild record does not fit the plain stream: {e}")))?
            .0;
        out.put(&bytes)?;
        written += bytes.len() as u64;
    }
    Ok(written)
}

fn trailer_of(crc: &flate2::Crc) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&crc.sum().to_le_bytes());
    t[4..].copy_from_slice(&crc.amount().to_le_bytes());
    t
}

/// pgzip (klauspost/pgzip) writes Go's zero time as MTIME: 0x886e0900, seconds of year 1 AD cut
/// to 32 bits. Go's compress/gzip writes 0 for it.
const PGZIP_MTIME: [u8; 4] = [0x00, 0x09, 0x6e, 0x88];
const OS_UNIX: u8 = 3;
const OS_UNKNOWN: u8 = 255;

/// Who wrote a gzip blob, from its first member's header (MTIME, OS) and, when the body could be
/// modelled (`zlib` is `Some`), whether it was modelled as zlib's own output: with OS 255 that
/// tells Python's GzipFile from Go (whose bodies preflate-rs models as libdeflate-like).
/// Measured: GNU gzip, pigz and zlib's own gzip wrapper (Python's `gzip.compress(mtime=0)`) write
/// OS 3 (Unix); Python's GzipFile, Go's compress/gzip and pgzip OS 255; pgzip alone a fixed MTIME.
fn producer(header: &[u8], zlib: Option<bool>) -> String {
    let (mtime, os) = (header.get(4..8), header.get(9).copied());
    match (mtime, os) {
        (Some(_), Some(OS_UNIX)) => "gzip (zlib/GNU gzip/pigz)".into(),
        (Some(_), Some(OS_UNKNOWN)) if zlib == Some(true) => "gzip (zlib, e.g. Python gzip)".into(),
        (Some(m), Some(OS_UNKNOWN)) if m == PGZIP_MTIME => "gzip (klauspost pgzip)".into(),
        (Some(_), Some(OS_UNKNOWN)) => "gzip (Go compress/gzip)".into(),
        (Some(_), Some(os)) => format!("gzip (unknown encoder, OS byte {os})"),
        _ => "gzip (bad header)".into(),
    }
}

/// Replays the members: header, the body (a zlib pass, or each piece re-deflated from its plain
/// bytes), trailer (after checking the plain bytes' CRC32 and length against it).
pub(super) fn rebuild(members: &[GzMember], plain: &mut dyn std::io::Read, out: &mut dyn std::io::Write, what: &str) -> Result<u64> {
    let mut out = Out { out, what };
    let mut written = 0u64;
    let mut buf = Vec::new();
    for (i, m) in members.iter().enumerate() {
        out.put(&m.header)?;
        written += m.header.len() as u64;
        let mut crc = flate2::Crc::new();
        written += match &m.body {
            // A zlib body is one segment, or several between its seams; pigz's jobs go the same
            // way. Each on its own core.
            GzBody::Zlib(z) => segments::replay(z.level, z.mem_level, z.plain_len, Layout::Seams(&z.seams), plain, &mut out, &mut crc)?,
            GzBody::Pigz(p) => segments::replay(p.level, 8, p.plain_len, Layout::Pigz(u64::from(p.block)), plain, &mut out, &mut crc)?,
            GzBody::Pieces(p) => recreate(p, plain, &mut out, &mut crc, &mut buf, &format!("{what}: gzip member {}", i + 1))?,
        };
        if trailer_of(&crc) != m.trailer {
            return Err(Error::Other(format!("{what}: gzip member {}: the plain stream does not match the exact-rebuild record (CRC32 or length)", i + 1)));
        }
        out.put(&m.trailer)?;
        written += 8;
    }
    expect_plain_end(plain, what)?;
    Ok(written)
}

//! Exact rebuild of a compressed layer blob from its decompressed stream: the correction record
//! ([`Rebuild`]) that [`analyze`] works out and proves while the blob streams through it once, its
//! compact binary form, and [`rebuild`], which replays it. gzip goes through preflate-rs
//! (`regzip`), zstd through a re-encode with libzstd (`rezstd`); a plain tar is its own stream.
//!
//! Why a record proven at write time: a bundle that keeps only the decompressed stream must still
//! give back the registry's exact bytes (the layer digest), and only a re-encode compared byte for
//! byte with the original shows that it will. The caller checks the rebuilt blob's digest anyway
//! (at write time and at every restore), so a bug here is caught, never silent.
use std::io::{self, Read, Write};

use super::rezlib::{MARGIN, SEAM_MIN, Seam};
use super::{Compression, regzip, repigz, rezstd};
use crate::error::{Error, Result};

/// What it takes to rebuild a compressed blob byte for byte from its decompressed stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rebuild {
    /// The blob is the decompressed stream itself (an uncompressed tar).
    Plain,
    /// gzip: each member's header and trailer verbatim, its deflate body replayed by zlib or as
    /// preflate-rs pieces.
    Gzip { members: Vec<GzMember> },
    /// zstd: one frame that libzstd re-encodes exactly with these parameters.
    Zstd(ZstdParams),
}

/// One gzip member (most blobs have one; eStargz and concatenated gzip have several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GzMember {
    /// The member header (RFC 1952: magic, flags, MTIME, XFL, OS and any optional fields).
    pub header: Vec<u8>,
    /// How the deflate body comes back.
    pub body: GzBody,
    /// CRC32 and ISIZE, as found (and checked against the plain stream).
    pub trailer: [u8; 8],
}

/// How a gzip member's deflate body is rebuilt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GzBody {
    /// The pieces preflate-rs cut it into, in order.
    Pieces(Vec<Piece>),
    /// One deflate pass of the linked zlib over the member's plain bytes (`rezlib`).
    Zlib(ZlibReplay),
    /// pigz's jobs replayed with the linked zlib (`repigz`).
    Pigz(PigzReplay),
}

/// The pigz parameters proven to reproduce a deflate body: each job of `block` plain bytes a
/// zlib stream at `level` (memLevel 8) with the 32 KiB before it as its dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PigzReplay {
    pub level: u8,
    pub block: u32,
    pub plain_len: u64,
    /// The zlib version that proved it, as for a zlib replay.
    pub zlib: String,
}

/// The zlib parameters proven to reproduce a deflate body (raw deflate, 32 KiB window, default
/// strategy), and how many plain bytes it encodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZlibReplay {
    /// Compression level, 1..=9.
    pub level: u8,
    /// memLevel, 1..=9 (8 is zlib's default).
    pub mem_level: u8,
    /// The member's plain length (ISIZE only has it modulo 2^32).
    pub plain_len: u64,
    /// The zlib version that proved it (`zlibVersion()`); zlib's output has not changed between
    /// versions in a long time, so another one is tried, and the digest check decides.
    pub zlib: String,
    /// Where fresh deflaters may take over (in order), so segments rebuild in parallel; none
    /// for a body replayed in one pass.
    pub seams: Vec<Seam>,
}

/// A run of whole deflate blocks: how many plain bytes it decodes to and the preflate-rs
/// corrections that turn those bytes back into its compressed bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub plain_len: u64,
    pub corrections: Vec<u8>,
}

/// The libzstd parameters proven to reproduce a zstd frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZstdParams {
    /// Compression level (1..=22).
    pub level: i32,
    /// Whether the frame ends with a content checksum.
    pub checksum: bool,
    /// The content size the encoder was told beforehand (and wrote into the frame header), if any.
    pub content_size: Option<u64>,
    /// `--long`: long-distance matching with a 128 MiB window.
    pub long: bool,
    /// 0: libzstd's single-threaded streaming API; 1: its multi-threaded one with one worker,
    /// which the zstd CLI uses by default (its output is the same for any number of workers).
    pub workers: u32,
    /// The libzstd version that proved it (`ZSTD_versionNumber`, 10507 = 1.5.7): another
    /// version may compress differently, so `rebuild` refuses to use one.
    pub libzstd: u32,
}

/// Version of the encoded record; [`Rebuild::decode`] refuses any other.
const FORMAT: u8 = 1;
const TAG_PLAIN: u8 = 0;
const TAG_GZIP: u8 = 1;
const TAG_ZSTD: u8 = 2;
/// gzip whose members say how each body comes back (written when any member is a zlib replay;
/// all-preflate records keep `TAG_GZIP`, so they stay byte-identical).
const TAG_GZIP_BODIES: u8 = 3;
const BODY_PIECES: u8 = 0;
const BODY_ZLIB: u8 = 1;
/// A zlib replay with seams (as `BODY_ZLIB`, then the seams).
const BODY_ZLIB_SEAMS: u8 = 2;
/// A pigz replay: level byte, job size, plain length, zlib version.
const BODY_PIGZ: u8 = 3;
/// The longest zlib version string a record may name.
const ZLIB_VERSION_MAX: u64 = 32;

impl Rebuild {
    /// Appends the record's binary form: a format byte, a kind tag, then the kind's fields,
    /// lengths and counts as LEB128 varints:
    /// - gzip (kind 1): members; per member: header length, header, pieces; per piece: plain
    ///   length, corrections length, corrections; then the 8-byte trailer.
    /// - gzip (kind 3): members; per member: header length, header, a body kind (0: pieces, as
    ///   in kind 1; 1: zlib replay: level byte, memLevel byte, plain length, zlib version length
    ///   and bytes), then the 8-byte trailer.
    /// - zstd: level (zigzag), flags (1 checksum, 2 content size present, 4 long), content size if
    ///   present, workers, libzstd version.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(FORMAT);
        match self {
            Rebuild::Plain => out.push(TAG_PLAIN),
            Rebuild::Gzip { members } => {
                let kinds = members.iter().any(|m| !matches!(m.body, GzBody::Pieces(_)));
                out.push(if kinds { TAG_GZIP_BODIES } else { TAG_GZIP });
                put_varint(out, members.len() as u64);
                for m in members {
                    put_varint(out, m.header.len() as u64);
                    out.extend_from_slice(&m.header);
                    match &m.body {
                        GzBody::Pieces(pieces) => {
                            if kinds {
                                out.push(BODY_PIECES);
                            }
                            put_varint(out, pieces.len() as u64);
                            for p in pieces {
                                put_varint(out, p.plain_len);
                                put_varint(out, p.corrections.len() as u64);
                                out.extend_from_slice(&p.corrections);
                            }
                        }
                        GzBody::Zlib(z) => {
                            let kind = if z.seams.is_empty() { BODY_ZLIB } else { BODY_ZLIB_SEAMS };
                            out.extend_from_slice(&[kind, z.level, z.mem_level]);
                            put_varint(out, z.plain_len);
                            put_varint(out, z.zlib.len() as u64);
                            out.extend_from_slice(z.zlib.as_bytes());
                            if !z.seams.is_empty() {
                                put_varint(out, z.seams.len() as u64);
                                let (mut u, mut q) = (0, 0);
                                for s in &z.seams {
                                    put_varint(out, s.plain_at - u);
                                    put_varint(out, s.byte_at - q);
                                    out.extend_from_slice(&[s.bits, s.value]);
                                    (u, q) = (s.plain_at, s.byte_at);
                                }
                            }
                        }
                        GzBody::Pigz(p) => {
                            out.extend_from_slice(&[BODY_PIGZ, p.level]);
                            put_varint(out, u64::from(p.block));
                            put_varint(out, p.plain_len);
                            put_varint(out, p.zlib.len() as u64);
                            out.extend_from_slice(p.zlib.as_bytes());
                        }
                    }
                    out.extend_from_slice(&m.trailer);
                }
            }
            Rebuild::Zstd(z) => {
                out.push(TAG_ZSTD);
                put_varint(out, ((z.level << 1) ^ (z.level >> 31)) as u32 as u64);
                out.push(u8::from(z.checksum) | u8::from(z.content_size.is_some()) << 1 | u8::from(z.long) << 2);
                if let Some(n) = z.content_size {
                    put_varint(out, n);
                }
                put_varint(out, u64::from(z.workers));
                put_varint(out, u64::from(z.libzstd));
            }
        }
    }

    /// Reads a record written by [`Rebuild::encode`] from untrusted bytes: every count and length
    /// is checked against what is left of `b` and against the caps the writer keeps (so memory
    /// stays within a small multiple of `b`), and anything unknown or left over is an error
    /// naming `what`.
    pub fn decode(b: &[u8], what: &str) -> Result<Rebuild> {
        let mut c = Cursor { b, at: 0, what };
        let format = c.byte("format version")?;
        if format != FORMAT {
            return Err(c.bad(format!("unknown format version {format} (this build reads {FORMAT})")));
        }
        let rec = match c.byte("kind")? {
            TAG_PLAIN => Rebuild::Plain,
            tag @ (TAG_GZIP | TAG_GZIP_BODIES) => {
                let n = c.count("gzip members", 10)?;
                let mut members = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let hlen = c.varint("gzip header length")?;
                    if hlen > regzip::HEADER_MAX as u64 {
                        return Err(c.bad(format!("gzip header length {hlen} is over the {}-byte limit", regzip::HEADER_MAX)));
                    }
                    let header = c.bytes(hlen, "gzip header")?.to_vec();
                    if regzip::header_len(&header) != Some(header.len()) {
                        return Err(c.bad("a gzip member header is not a valid header".into()));
                    }
                    let kind = if tag == TAG_GZIP { BODY_PIECES } else { c.byte("gzip body kind")? };
                    let body = match kind {
                        BODY_PIECES => GzBody::Pieces(c.pieces()?),
                        BODY_ZLIB | BODY_ZLIB_SEAMS => {
                            let level = c.byte("zlib level")?;
                            let mem_level = c.byte("zlib memLevel")?;
                            if !(1..=9).contains(&level) || !(1..=9).contains(&mem_level) {
                                return Err(c.bad(format!("zlib level {level} or memLevel {mem_level} out of range (1 to 9)")));
                            }
                            let plain_len = c.varint("zlib plain length")?;
                            let zlib = c.zlib_version()?;
                            let seams = if kind == BODY_ZLIB_SEAMS { c.seams(plain_len)? } else { Vec::new() };
                            GzBody::Zlib(ZlibReplay { level, mem_level, plain_len, zlib, seams })
                        }
                        BODY_PIGZ => {
                            let level = c.byte("pigz level")?;
                            if !(1..=9).contains(&level) {
                                return Err(c.bad(format!("pigz level {level} out of range (1 to 9)")));
                            }
                            let block = c.varint("pigz job size")?;
                            if !(u64::from(repigz::BLOCK_MIN)..=u64::from(repigz::BLOCK_MAX)).contains(&block) {
                                return Err(c.bad(format!("pigz job size {block} out of range ({} to {})", repigz::BLOCK_MIN, repigz::BLOCK_MAX)));
                            }
                            let plain_len = c.varint("pigz plain length")?;
                            let zlib = c.zlib_version()?;
                            GzBody::Pigz(PigzReplay { level, block: block as u32, plain_len, zlib })
                        }
                        k => return Err(c.bad(format!("unknown gzip body kind {k}"))),
                    };
                    let trailer = c.bytes(8, "gzip trailer")?.try_into().expect("8 bytes");
                    members.push(GzMember { header, body, trailer });
                }
                if members.is_empty() {
                    return Err(c.bad("a gzip record without members".into()));
                }
                Rebuild::Gzip { members }
            }
            TAG_ZSTD => {
                let z = c.varint("zstd level")?;
                let level = i64::from(z as u32 >> 1) ^ -i64::from(z as u32 & 1);
                if z > u64::from(u32::MAX) || !(rezstd::LEVELS).contains(&level) {
                    return Err(c.bad(format!("zstd level out of range (encoded {z})")));
                }
                let flags = c.byte("zstd flags")?;
                if flags & !7 != 0 {
                    return Err(c.bad(format!("unknown zstd flags {flags:#x}")));
                }
                let content_size = if flags & 2 != 0 { Some(c.varint("zstd content size")?) } else { None };
                let workers = c.varint("zstd workers")?;
                if workers > 1 {
                    return Err(c.bad(format!("zstd workers {workers} (0 or 1 expected)")));
                }
                let libzstd = c.varint("libzstd version")?;
                if libzstd > 999_999 {
                    return Err(c.bad(format!("libzstd version {libzstd} out of range")));
                }
                Rebuild::Zstd(ZstdParams { level: level as i32, checksum: flags & 1 != 0, content_size, long: flags & 4 != 0, workers: workers as u32, libzstd: libzstd as u32 })
            }
            t => return Err(c.bad(format!("unknown kind {t}"))),
        };
        if c.at != b.len() {
            return Err(c.bad(format!("{} bytes after the record", b.len() - c.at)));
        }
        Ok(rec)
    }

    /// The record's size in bytes: what a bundle stores besides the decompressed stream.
    pub fn side_bytes(&self) -> u64 {
        let mut v = Vec::new();
        self.encode(&mut v);
        v.len() as u64
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A reader over an untrusted record.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    what: &'a str,
}

impl Cursor<'_> {
    fn bad(&self, msg: String) -> Error {
        Error::Other(format!("{}: exact-rebuild record: {msg} (at byte {})", self.what, self.at))
    }
    fn byte(&mut self, field: &str) -> Result<u8> {
        Ok(self.bytes(1, field)?[0])
    }
    fn bytes(&mut self, n: u64, field: &str) -> Result<&[u8]> {
        let left = self.b.len() - self.at;
        if n > left as u64 {
            return Err(self.bad(format!("truncated: {field} needs {n} bytes, {left} left")));
        }
        let s = &self.b[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(s)
    }
    fn varint(&mut self, field: &str) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(field)?;
            if shift == 63 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad(format!("{field}: varint over 64 bits")))
    }
    /// A gzip member's preflate-rs pieces: count, then per piece plain length, corrections.
    fn pieces(&mut self) -> Result<Vec<Piece>> {
        let np = self.count("deflate pieces", 2)?;
        let mut pieces = Vec::with_capacity(np.min(1024));
        for _ in 0..np {
            let plain_len = self.varint("piece length")?;
            if plain_len > regzip::PIECE_PLAIN_MAX as u64 {
                return Err(self.bad(format!("a deflate piece of {plain_len} bytes is over the {}-byte limit", regzip::PIECE_PLAIN_MAX)));
            }
            let clen = self.varint("corrections length")?;
            let corrections = self.bytes(clen, "corrections")?.to_vec();
            pieces.push(Piece { plain_len, corrections });
        }
        Ok(pieces)
    }
    /// A zlib version string: length, then at most `ZLIB_VERSION_MAX` printable bytes.
    fn zlib_version(&mut self) -> Result<String> {
        let vlen = self.varint("zlib version length")?;
        if vlen > ZLIB_VERSION_MAX {
            return Err(self.bad(format!("zlib version of {vlen} bytes (at most {ZLIB_VERSION_MAX})")));
        }
        let v = self.bytes(vlen, "zlib version")?;
        if !v.iter().all(|b| b.is_ascii_graphic()) {
            return Err(self.bad("zlib version is not printable ASCII".into()));
        }
        Ok(String::from_utf8_lossy(v).into_owned())
    }
    /// A zlib replay's seams: count, then per seam the plain and body offsets (as steps from the
    /// seam before), the primed bit count and bits. Seams are at least `SEAM_MIN` plain bytes
    /// apart (and from the start), leave `MARGIN` plain bytes after the last, and move forward
    /// in the body; a primed byte holds only its bits.
    fn seams(&mut self, plain_len: u64) -> Result<Vec<Seam>> {
        let n = self.count("zlib seams", 4)?;
        if n == 0 {
            return Err(self.bad("a zlib replay with seams lists none".into()));
        }
        let mut seams = Vec::with_capacity(n);
        let (mut u, mut q) = (0u64, 0u64);
        for i in 1..=n {
            let du = self.varint("seam plain step")?;
            let dq = self.varint("seam body step")?;
            let bits = self.byte("seam bits")?;
            let value = self.byte("seam byte")?;
            u = u.checked_add(du).ok_or_else(|| self.bad(format!("seam {i}: plain offset overflows")))?;
            q = q.checked_add(dq).ok_or_else(|| self.bad(format!("seam {i}: body offset overflows")))?;
            if du < SEAM_MIN || dq == 0 {
                return Err(self.bad(format!("seam {i} is {du} plain bytes and {dq} body bytes after the one before (at least {SEAM_MIN} and 1)")));
            }
            if u.saturating_add(MARGIN) > plain_len {
                return Err(self.bad(format!("seam {i} at plain byte {u} is past the body's {plain_len} bytes (less {MARGIN})")));
            }
            if bits > 7 || u16::from(value) >> bits != 0 {
                return Err(self.bad(format!("seam {i}: {bits} primed bits of {value:#04x}")));
            }
            seams.push(Seam { plain_at: u, byte_at: q, bits, value });
        }
        Ok(seams)
    }
    /// A count of items that each take at least `min_bytes` of the record: more than the rest
    /// could hold is an error before anything is allocated.
    fn count(&mut self, field: &str, min_bytes: u64) -> Result<usize> {
        let n = self.varint(field)?;
        let left = (self.b.len() - self.at) as u64;
        if n > left / min_bytes {
            return Err(self.bad(format!("{field}: count {n} does not fit in the {left} bytes left")));
        }
        Ok(n as usize)
    }
}

/// What [`analyze`] found out about a blob.
#[derive(Debug)]
pub struct Analysis {
    /// The proven record, or `None` when the blob cannot be rebuilt exactly (then see `why_not`).
    pub rebuild: Option<Rebuild>,
    /// Who wrote the blob, as far as its bytes tell: e.g. "gzip (zlib/GNU gzip/pigz)",
    /// "gzip (Go compress/gzip)", "gzip (klauspost pgzip)", "zstd (libzstd)", "zstd (other)",
    /// "plain".
    pub producer: String,
    /// One line saying why there is no record, naming the producer.
    pub why_not: Option<String>,
    /// A zlib replay stopped matching part-way (after plain bytes were handed on): analysing the
    /// blob again with [`analyze_without_replay`] may still find a record.
    pub diverged: bool,
}

impl Analysis {
    pub(super) fn exact(rebuild: Rebuild, producer: String) -> Analysis {
        Analysis { rebuild: Some(rebuild), producer, why_not: None, diverged: false }
    }
    pub(super) fn not_exact(producer: String, why: &str) -> Analysis {
        let why_not = Some(format!("{producer}: {why}"));
        Analysis { rebuild: None, producer, why_not, diverged: false }
    }
}

/// Streams the compressed blob `r` once: hands every piece of its decompressed stream, in order,
/// to `plain`, and works out a [`Rebuild`] record that is proven exact (each part re-encoded and
/// compared with the original while it runs). Memory is bounded (tens of MiB, plus the record)
/// whatever the blob's size. `r` is always read to its end, so a verifying reader sees all of it.
///
/// A blob that cannot be rebuilt exactly (another encoder, bytes after the stream, a corrupt
/// stream, a preflate-rs prediction failure...) gives `Ok` with `rebuild: None` and `why_not`:
/// the caller then carries the blob whole and discards what `plain` got (which may stop short of
/// the whole stream). `Err` only for an error from `r` or from `plain`.
pub fn analyze(r: &mut dyn Read, plain: &mut dyn FnMut(&[u8]) -> Result<()>, what: &str) -> Result<Analysis> {
    analyze_with(r, plain, what, true)
}

/// [`analyze`] with gzip bodies given to preflate-rs only: for a blob whose zlib replay
/// `diverged`.
pub fn analyze_without_replay(r: &mut dyn Read, plain: &mut dyn FnMut(&[u8]) -> Result<()>, what: &str) -> Result<Analysis> {
    analyze_with(r, plain, what, false)
}

fn analyze_with(r: &mut dyn Read, plain: &mut dyn FnMut(&[u8]) -> Result<()>, what: &str, replay: bool) -> Result<Analysis> {
    let mut w = Window::new(r, what);
    let found = match Compression::sniff(w.fill(4)?) {
        Compression::Plain => {
            loop {
                let avail = w.fill(1)?;
                if avail.is_empty() {
                    break;
                }
                plain(avail)?;
                let n = avail.len();
                w.consume(n);
            }
            Analysis::exact(Rebuild::Plain, "plain".into())
        }
        Compression::Gzip => regzip::analyze(&mut w, plain, replay)?,
        Compression::Zstd => rezstd::analyze(&mut w, plain)?,
    };
    w.drain()?;
    Ok(found)
}

/// Rebuilds the compressed blob from its decompressed stream `plain` into `out`, streaming with
/// bounded memory; returns the bytes written. A `plain` shorter or longer than the record says,
/// or one that the record does not fit (a gzip CRC32, a zstd content size), is an error naming
/// `what`; a record for another stream of the same length can also give wrong bytes, which the
/// caller's digest check rejects.
pub fn rebuild(rec: &Rebuild, plain: &mut dyn Read, out: &mut dyn Write, what: &str) -> Result<u64> {
    match rec {
        Rebuild::Plain => io::copy(plain, &mut Out { out, what }).map_err(|e| Error::from_read(what, e)),
        Rebuild::Gzip { members } => regzip::rebuild(members, plain, out, what),
        Rebuild::Zstd(z) => rezstd::rebuild(z, plain, out, what),
    }
}

/// `out` with its write errors named as such (io::copy cannot tell them from read errors).
pub(super) struct Out<'a> {
    pub out: &'a mut dyn Write,
    pub what: &'a str,
}

impl Write for Out<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.out.write(b).map_err(|e| io::Error::new(e.kind(), Error::Other(format!("{}: writing the rebuilt blob: {e}", self.what))))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Out<'_> {
    pub fn put(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).map_err(|e| Error::Other(format!("{}: writing the rebuilt blob: {e}", self.what)))
    }
}

/// Fills `buf` from `r`; fewer bytes than asked is an error saying how many the plain stream
/// lacked.
pub(super) fn read_plain(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(Error::Other(format!("{what}: the plain stream ends {} bytes before the exact-rebuild record does", buf.len() - got))),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_read(what, e)),
        }
    }
    Ok(())
}

/// Errors unless `r` is at its end (the record has used up all the plain bytes it describes).
pub(super) fn expect_plain_end(r: &mut dyn Read, what: &str) -> Result<()> {
    let mut more = [0u8; 4096];
    let mut extra = 0u64;
    loop {
        match r.read(&mut more) {
            Ok(0) if extra == 0 => return Ok(()),
            Ok(0) => return Err(Error::Other(format!("{what}: the plain stream is {extra} bytes longer than the exact-rebuild record"))),
            Ok(n) if extra < 1 << 20 => extra += n as u64,
            Ok(_) => return Err(Error::Other(format!("{what}: the plain stream is over 1 MiB longer than the exact-rebuild record"))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_read(what, e)),
        }
    }
}

/// Bytes read from a blob and not yet used: the parsers look ahead (a whole gzip header, a
/// deflate slice) without a copy per look.
pub(super) struct Window<'a> {
    r: &'a mut dyn Read,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
    pub what: &'a str,
    /// Bytes consumed so far (the offset of `avail()[0]` in the blob).
    pub pos: u64,
}

/// How much a [`Window`] reads at a time.
const READ: usize = 1 << 20;

impl<'a> Window<'a> {
    pub fn new(r: &'a mut dyn Read, what: &'a str) -> Self {
        Window { r, buf: Vec::new(), start: 0, eof: false, what, pos: 0 }
    }

    /// The unused bytes, at least `n` of them unless the blob ends first.
    pub fn fill(&mut self, n: usize) -> Result<&[u8]> {
        while self.buf.len() - self.start < n && !self.eof {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let have = self.buf.len();
            self.buf.resize(have + (n - have).max(READ), 0);
            let got = loop {
                match self.r.read(&mut self.buf[have..]) {
                    Ok(k) => break k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.truncate(have);
                        return Err(Error::from_read(self.what, e));
                    }
                }
            };
            self.buf.truncate(have + got);
            self.eof = got == 0;
        }
        Ok(&self.buf[self.start..])
    }

    pub fn avail(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Whether the blob has no bytes left.
    pub fn at_end(&mut self) -> Result<bool> {
        Ok(self.fill(1)?.is_empty())
    }

    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.buf.len() - self.start, "consumed more than was read");
        self.start += n;
        self.pos += n as u64;
    }

    /// Reads the rest of the blob, discarding it.
    pub fn drain(&mut self) -> Result<()> {
        while !self.at_end()? {
            let n = self.avail().len();
            self.consume(n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn sample(n: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Runs of text-like bytes with some noise: compressible, not trivially.
                if (i / 4096) % 3 == 0 { x as u8 } else { b"the quick brown fox "[(i + (x % 3) as usize) % 20] }
            })
            .collect()
    }

    /// A plain callback that appends to `v`.
    fn collect(v: &mut Vec<u8>) -> impl FnMut(&[u8]) -> Result<()> + '_ {
        move |b| {
            v.extend_from_slice(b);
            Ok(())
        }
    }

    /// analyze, then rebuild from what `plain` got: returns (analysis, plain bytes, rebuilt blob).
    fn round(blob: &[u8]) -> (Analysis, Vec<u8>, Option<Vec<u8>>) {
        let mut got = Vec::new();
        let a = analyze(&mut &blob[..], &mut collect(&mut got), "test blob").unwrap();
        let rebuilt = a.rebuild.as_ref().map(|rec| {
            let mut enc = Vec::new();
            rec.encode(&mut enc);
            assert_eq!(enc.len() as u64, rec.side_bytes());
            let back = Rebuild::decode(&enc, "test record").unwrap();
            assert_eq!(&back, rec);
            let mut out = Vec::new();
            let n = rebuild(&back, &mut &got[..], &mut out, "test blob").unwrap();
            assert_eq!(n, out.len() as u64);
            out
        });
        (a, got, rebuilt)
    }

    #[test]
    fn plain_is_its_own_stream() {
        let data = sample(100_000);
        let (a, got, back) = round(&data);
        assert_eq!(a.rebuild, Some(Rebuild::Plain));
        assert_eq!(a.producer, "plain");
        assert!(got == data && back.unwrap() == data);
        let (a, got, back) = round(b"");
        assert!(a.rebuild == Some(Rebuild::Plain) && got.is_empty() && back.unwrap().is_empty());
    }

    #[test]
    fn zlib_gzip_is_rebuilt_exactly_at_every_level() {
        let data = sample(300_000);
        for level in [0, 1, 6, 9] {
            let blob = gz(&data, level);
            let (a, got, back) = round(&blob);
            assert!(a.rebuild.is_some(), "level {level}: {:?}", a.why_not);
            assert!(got == data, "level {level}: plain stream");
            assert!(back.unwrap() == blob, "level {level}: rebuilt blob");
        }
        // Empty input: one piece that is only the final block.
        let blob = gz(b"", 6);
        let (a, got, back) = round(&blob);
        assert!(a.rebuild.is_some() && got.is_empty() && back.unwrap() == blob, "{:?}", a.why_not);
    }

    #[test]
    fn multi_member_gzip_is_rebuilt_member_by_member() {
        let data = sample(120_000);
        let mut blob = gz(&data[..70_000], 6);
        blob.extend(gz(&data[70_000..], 1));
        blob.extend(gz(b"", 9));
        let (a, got, back) = round(&blob);
        let Some(Rebuild::Gzip { members }) = &a.rebuild else { panic!("{:?}", a.why_not) };
        assert_eq!(members.len(), 3);
        assert!(got == data && back.unwrap() == blob);
    }

    #[test]
    fn gzip_that_cannot_be_exact_says_why() {
        let data = sample(50_000);
        let blob = gz(&data, 6);
        let mut trailing = blob.clone();
        trailing.extend_from_slice(b"\0\0\0\0");
        let mut bad_crc = blob.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        let truncated = &blob[..blob.len() - 3];
        let mut corrupt = blob.clone();
        corrupt[20] ^= 0xff;
        corrupt[21] ^= 0xff;
        for (name, b, want) in [("trailing", &trailing[..], "after the gzip stream"), ("crc", &bad_crc[..], "CRC32"), ("truncated", truncated, "truncated"), ("corrupt", &corrupt[..], "")] {
            let mut read = 0;
            let mut counting = CountingReader(b, &mut read);
            let a = analyze(&mut counting, &mut |_| Ok(()), "test blob").unwrap();
            let why = a.why_not.unwrap_or_default();
            assert!(a.rebuild.is_none() && why.starts_with("gzip (") && why.contains(want), "{name}: {why}");
            assert_eq!(read, b.len(), "{name}: the blob is read to its end");
        }
    }

    struct CountingReader<'a>(&'a [u8], &'a mut usize);
    impl Read for CountingReader<'_> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(b)?;
            *self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn errors_from_the_reader_and_the_callback_are_errors() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let e = analyze(&mut Failing, &mut |_| Ok(()), "layer x").unwrap_err();
        assert!(e.to_string().contains("layer x") && e.to_string().contains("disk on fire"), "{e}");
        let blob = gz(&sample(10_000), 6);
        let e = analyze(&mut &blob[..], &mut |_| Err(Error::Other("sink full".into())), "layer x").unwrap_err();
        assert!(e.to_string().contains("sink full"), "{e}");
    }

    fn record_of(blob: &[u8]) -> (Rebuild, Vec<u8>) {
        let mut got = Vec::new();
        let a = analyze(&mut &blob[..], &mut collect(&mut got), "t").unwrap();
        (a.rebuild.unwrap(), got)
    }

    /// The preflate-rs record of a gzip blob (no zlib replay).
    fn preflate_record_of(blob: &[u8]) -> (Rebuild, Vec<u8>) {
        let mut got = Vec::new();
        let a = analyze_without_replay(&mut &blob[..], &mut collect(&mut got), "t").unwrap();
        let rec = a.rebuild.unwrap();
        let Rebuild::Gzip { members } = &rec else { panic!("not gzip") };
        assert!(members.iter().all(|m| matches!(m.body, GzBody::Pieces(_))));
        (rec, got)
    }

    /// gzip made by the C zlib linked here, the way Python's GzipFile or `zlib.compressobj`
    /// plus a hand-written header does: OS 255, XFL from the level.
    fn czlib_gz(data: &[u8], level: i32, mem: i32) -> Vec<u8> {
        let xfl = match level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        let mut blob = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255];
        super::super::rezlib::Deflater::new(level, mem).unwrap().run(data, true, &mut blob).unwrap();
        let mut crc = flate2::Crc::new();
        crc.update(data);
        blob.extend_from_slice(&crc.sum().to_le_bytes());
        blob.extend_from_slice(&(data.len() as u32).to_le_bytes());
        blob
    }

    #[test]
    fn zlib_made_gzip_is_replayed_with_its_level_and_memlevel() {
        let data = sample(3_000_000);
        for (level, mem) in [(1, 8), (4, 9), (6, 8), (6, 9), (9, 9)] {
            let blob = czlib_gz(&data, level, mem);
            let (a, got, back) = round(&blob);
            let Some(Rebuild::Gzip { members }) = &a.rebuild else { panic!("level {level}: {:?}", a.why_not) };
            let GzBody::Zlib(z) = &members[0].body else { panic!("level {level} memLevel {mem}: not replayed") };
            assert_eq!((z.level, z.mem_level, z.plain_len), (level as u8, mem as u8, data.len() as u64));
            assert_eq!(a.producer, "gzip (zlib, e.g. Python gzip)");
            assert!(got == data && back.unwrap() == blob, "level {level} memLevel {mem}");
            // The record is the parameters, not corrections: a few dozen bytes.
            assert!(a.rebuild.as_ref().unwrap().side_bytes() < 64);
        }
        // And the same blob through preflate-rs alone is exact too, with a bigger record.
        let blob = czlib_gz(&data, 6, 9);
        let (rec, plain) = preflate_record_of(&blob);
        let mut out = Vec::new();
        rebuild(&rec, &mut &plain[..], &mut out, "t").unwrap();
        assert!(out == blob);
    }

    #[test]
    fn a_member_of_each_kind_in_one_blob() {
        let data = sample(400_000);
        let mut blob = czlib_gz(&data[..250_000], 6, 8);
        // GNU-style OS byte and a zlib-rs body: replayed if the bytes happen to agree, else pieces.
        blob.extend(gz(&data[250_000..], 9));
        let (rec_p, _) = preflate_record_of(&blob);
        let (a, got, back) = round(&blob);
        assert!(got == data && back.unwrap() == blob, "{:?}", a.why_not);
        let Some(Rebuild::Gzip { members }) = &a.rebuild else { panic!() };
        assert!(matches!(members[0].body, GzBody::Zlib(_)));
        // A record that mixes kinds is written as kind 3, one of preflate pieces only as kind 1.
        let (mut mixed, mut pieces) = (Vec::new(), Vec::new());
        a.rebuild.as_ref().unwrap().encode(&mut mixed);
        rec_p.encode(&mut pieces);
        assert_eq!((mixed[1], pieces[1]), (TAG_GZIP_BODIES, TAG_GZIP));
        let Rebuild::Gzip { members: pm } = &rec_p else { panic!() };
        let mut one = members.clone();
        one[1] = pm[1].clone();
        let rec = Rebuild::Gzip { members: one };
        let mut enc = Vec::new();
        rec.encode(&mut enc);
        assert_eq!(Rebuild::decode(&enc, "t").unwrap(), rec);
        let mut out = Vec::new();
        rebuild(&rec, &mut &data[..], &mut out, "t").unwrap();
        assert!(out == blob);
    }

    #[test]
    fn a_zlib_replay_record_for_another_stream_is_refused() {
        let a = sample(300_000);
        let mut b = a.clone();
        b.reverse();
        let blob_a = czlib_gz(&a, 6, 8);
        let (rec_a, _) = record_of(&blob_a);
        let e = rebuild(&rec_a, &mut &b[..], &mut Vec::new(), "layer x").unwrap_err();
        assert!(e.to_string().contains("CRC32 or length"), "{e}");
        let e = rebuild(&rec_a, &mut &a[..a.len() - 1], &mut Vec::new(), "layer x").unwrap_err();
        assert!(e.to_string().contains("ends 1 bytes before"), "{e}");
        // Other parameters for the right bytes: other deflate bytes (the digest check's to catch).
        let Rebuild::Gzip { members } = &rec_a else { panic!() };
        let mut m = members.clone();
        let GzBody::Zlib(z) = &mut m[0].body else { panic!() };
        z.level = 5;
        let mut out = Vec::new();
        rebuild(&Rebuild::Gzip { members: m }, &mut &a[..], &mut out, "layer x").unwrap();
        assert!(out != blob_a);
    }

    /// A one-member kind 3 gzip record around `body` (a body kind and its fields).
    fn gz_record(body: &[u8]) -> Vec<u8> {
        let mut b = vec![FORMAT, TAG_GZIP_BODIES, 1, 10, 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        b.extend_from_slice(body);
        b.extend_from_slice(&[0; 8]);
        b
    }

    /// Every truncation of a good record is refused by name; every byte flipped (by `flip`) is
    /// refused or decoded, never a panic.
    fn truncations_refused_flips_survived(enc: &[u8], flip: u8) {
        for n in 0..enc.len() {
            let e = Rebuild::decode(&enc[..n], "layer x").unwrap_err().to_string();
            assert!(e.starts_with("layer x: exact-rebuild record:"), "{n}: {e}");
        }
        for i in 0..enc.len() {
            let mut b = enc.to_vec();
            b[i] ^= flip;
            let _ = Rebuild::decode(&b, "l");
        }
    }

    #[test]
    fn decode_refuses_bad_zlib_replay_records() {
        let (rec, _) = record_of(&czlib_gz(&sample(100_000), 6, 8));
        let mut good = Vec::new();
        rec.encode(&mut good);
        assert_eq!(good[1], TAG_GZIP_BODIES);
        truncations_refused_flips_survived(&good, 0x5a);
        for (body, want) in [
            (&[7u8][..], "unknown gzip body kind 7"),
            (&[BODY_ZLIB, 0, 8, 0, 0], "out of range"),
            (&[BODY_ZLIB, 6, 10, 0, 0], "out of range"),
            (&[BODY_ZLIB, 6, 8, 0, 33], "at most 32"),
            (&[BODY_ZLIB, 6, 8, 0, 2, b'1', 0], "not printable"),
        ] {
            let e = Rebuild::decode(&gz_record(body), "layer x").unwrap_err().to_string();
            assert!(e.contains(want), "{body:?}: {e}");
        }
    }

    #[test]
    fn a_big_zlib_body_is_proven_with_seams_that_round_trip_and_rebuild_it() {
        // Over twice the seam spacing, at the corpus's own settings (level 9, memLevel 9).
        let data = sample(10 << 20);
        let blob = czlib_gz(&data, 9, 9);
        let (a, got, back) = round(&blob);
        assert!(got == data && back.unwrap() == blob, "{:?}", a.why_not);
        let rec = a.rebuild.unwrap();
        let Rebuild::Gzip { members } = &rec else { panic!() };
        let GzBody::Zlib(z) = &members[0].body else { panic!("not replayed") };
        assert!(z.seams.len() >= 2, "{} seams", z.seams.len());
        let mut enc = Vec::new();
        rec.encode(&mut enc);
        assert_eq!(Rebuild::decode(&enc, "t").unwrap(), rec);
        truncations_refused_flips_survived(&enc, 0x21);
    }

    #[test]
    fn a_damaged_seamed_body_is_never_taken_as_exact() {
        // Bytes flipped before, at and after the first seams of a replayed body: the analysis
        // ends cleanly (not exact, or an exact record that gives back the damaged bytes).
        let data = sample(10 << 20);
        let blob = czlib_gz(&data, 9, 9);
        for at in [20, blob.len() / 7, blob.len() / 3, blob.len() / 2, blob.len() - 12] {
            let mut bad = blob.clone();
            bad[at] ^= 0x10;
            let (a, _, back) = round(&bad);
            if let Some(b) = back {
                assert!(b == bad, "flip at {at}: an exact record that gives other bytes");
            } else {
                assert!(a.why_not.is_some(), "flip at {at}");
            }
        }
    }

    #[test]
    fn pigz_records_round_trip_and_bad_ones_are_refused() {
        let rec = Rebuild::Gzip {
            members: vec![GzMember {
                header: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3],
                body: GzBody::Pigz(PigzReplay { level: 6, block: repigz::BLOCK, plain_len: 1_000_000, zlib: "1.3.1".into() }),
                trailer: [0; 8],
            }],
        };
        let mut enc = Vec::new();
        rec.encode(&mut enc);
        assert_eq!(Rebuild::decode(&enc, "t").unwrap(), rec);
        truncations_refused_flips_survived(&enc, 0x21);
        let mut small = vec![BODY_PIGZ, 6];
        put_varint(&mut small, u64::from(repigz::BLOCK_MIN) - 1);
        small.extend_from_slice(&[0, 0]);
        let mut big = vec![BODY_PIGZ, 6];
        put_varint(&mut big, u64::from(repigz::BLOCK_MAX) + 1);
        big.extend_from_slice(&[0, 0]);
        for (body, want) in [(vec![BODY_PIGZ, 0, 0x80, 0x80, 0x08, 0, 0], "pigz level 0"), (small, "job size"), (big, "job size")] {
            let e = Rebuild::decode(&gz_record(&body), "layer x").unwrap_err().to_string();
            assert!(e.starts_with("layer x: exact-rebuild record:") && e.contains(want), "{body:?}: {e}");
        }
    }

    #[test]
    fn decode_refuses_bad_zlib_seams() {
        // A body of 1,000,000 plain bytes, no version string, then the seams given.
        let member = |seams: &[u64]| {
            let mut b = vec![BODY_ZLIB_SEAMS, 6, 8];
            put_varint(&mut b, 1_000_000);
            b.push(0);
            for v in seams {
                put_varint(&mut b, *v);
            }
            gz_record(&b)
        };
        let min = SEAM_MIN;
        let good = member(&[2, min, 500, 3, 5, min, 400, 0, 0]);
        let Rebuild::Gzip { members } = Rebuild::decode(&good, "t").unwrap() else { panic!() };
        let GzBody::Zlib(z) = &members[0].body else { panic!() };
        assert_eq!(z.seams, vec![Seam { plain_at: min, byte_at: 500, bits: 3, value: 5 }, Seam { plain_at: 2 * min, byte_at: 900, bits: 0, value: 0 }]);
        for (seams, want) in [
            (&[0][..], "lists none"),
            (&[1, 100, 500, 0, 0], "at least"),
            (&[1, min, 0, 0, 0], "at least"),
            (&[2, min, 500, 0, 0, min - 1, 5, 0, 0], "at least"),
            (&[1, 1_000_000 - MARGIN + 1, 500, 0, 0], "past the body"),
            (&[1, min, 500, 8, 0], "primed bits"),
            (&[1, min, 500, 2, 4], "primed bits"),
            (&[1_000_000, min, 500, 0, 0], "does not fit"),
            (&[1, u64::MAX, 500, 0, 0], "past the body"),
        ] {
            let e = Rebuild::decode(&member(seams), "layer x").unwrap_err().to_string();
            assert!(e.starts_with("layer x: exact-rebuild record:") && e.contains(want), "{seams:?}: {e}");
        }
    }

    #[test]
    fn rebuild_refuses_a_plain_stream_of_the_wrong_length() {
        let data = sample(200_000);
        for blob in [gz(&data, 6), zst(&data, 3, 0, true)] {
            let (rec, plain) = record_of(&blob);
            let e = rebuild(&rec, &mut &plain[..plain.len() - 10], &mut Vec::new(), "layer x").unwrap_err();
            assert!(e.to_string().contains("ends 10 bytes before"), "{e}");
            let mut longer = plain.clone();
            longer.extend_from_slice(b"12345");
            let e = rebuild(&rec, &mut &longer[..], &mut Vec::new(), "layer x").unwrap_err();
            assert!(e.to_string().contains("longer than the exact-rebuild record"), "{e}");
        }
    }

    #[test]
    fn a_record_for_another_stream_fails_or_gives_other_bytes_never_panics() {
        let a = sample(200_000);
        let mut b = a.clone();
        b.reverse();
        let blob_a = gz(&a, 6);
        let (rec_a, _) = preflate_record_of(&blob_a);
        let (rec_b, plain_b) = preflate_record_of(&gz(&b, 9));
        // Same length, other content: the CRC32 check (or preflate) refuses it.
        let mut out = Vec::new();
        let r = rebuild(&rec_a, &mut &plain_b[..], &mut out, "layer x");
        assert!(r.is_err() || out != blob_a);
        // Pieces of b's record spliced into a's: other corrections for the same plain bytes.
        let (Rebuild::Gzip { members: ma }, Rebuild::Gzip { members: mb }) = (&rec_a, &rec_b) else { panic!() };
        let mut mixed = ma.clone();
        let (GzBody::Pieces(pa), GzBody::Pieces(pb)) = (&mut mixed[0].body, &mb[0].body) else { panic!() };
        for (p, q) in pa.iter_mut().zip(pb) {
            p.corrections = q.corrections.clone();
        }
        let mut out = Vec::new();
        let r = rebuild(&Rebuild::Gzip { members: mixed }, &mut &a[..], &mut out, "layer x");
        assert!(r.is_err() || out != blob_a);
        // Corrections cut short or flipped.
        for cut in [0usize, 1, 7] {
            let mut m = ma.clone();
            let GzBody::Pieces(pieces) = &mut m[0].body else { panic!() };
            for p in pieces {
                let n = p.corrections.len();
                p.corrections.truncate(n.min(cut));
            }
            let mut out = Vec::new();
            let r = rebuild(&Rebuild::Gzip { members: m }, &mut &a[..], &mut out, "layer x");
            assert!(r.is_err() || out != blob_a, "cut {cut}");
        }
    }

    #[test]
    fn decode_refuses_bad_records_with_a_clear_error() {
        let (rec, _) = record_of(&gz(&sample(50_000), 6));
        let mut good = Vec::new();
        rec.encode(&mut good);
        // Every truncation fails cleanly.
        for n in 0..good.len() {
            let e = Rebuild::decode(&good[..n], "layer x").unwrap_err().to_string();
            assert!(e.starts_with("layer x: exact-rebuild record:"), "{n}: {e}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(Rebuild::decode(&longer, "l").unwrap_err().to_string().contains("1 bytes after the record"));
        let cases: [(&[u8], &str); 10] = [
            (&[9, 0], "unknown format version 9"),
            (&[FORMAT, 7], "unknown kind 7"),
            (&[FORMAT, TAG_GZIP, 0xff, 0xff, 0xff, 0xff, 0x0f], "does not fit"),
            (&[FORMAT, TAG_GZIP, 0], "without members"),
            (&[FORMAT, TAG_GZIP, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0], "over the"),
            (&[FORMAT, TAG_GZIP, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], "over 64 bits"),
            (&[FORMAT, TAG_GZIP, 1, 3, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0], "not a valid header"),
            (&[FORMAT, TAG_ZSTD, 0x80, 0x01, 0, 0], "level out of range"),
            (&[FORMAT, TAG_ZSTD, 6, 0x10, 0], "unknown zstd flags"),
            (&[FORMAT, TAG_ZSTD, 6, 0, 0, 0xff, 0xff, 0xff, 0x0f], "libzstd version"),
        ];
        for (b, want) in cases {
            let e = Rebuild::decode(b, "layer x").unwrap_err().to_string();
            assert!(e.contains(want), "{b:?}: {e}");
        }
        // A piece promising more plain bytes than the writer ever puts in one.
        let mut big = vec![FORMAT, TAG_GZIP, 1, 10, 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1];
        put_varint(&mut big, 1 << 40);
        big.extend_from_slice(&[0; 9]);
        assert!(Rebuild::decode(&big, "l").unwrap_err().to_string().contains("over the"), "huge piece");
        // Flipping any byte never panics.
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x5a;
            let _ = Rebuild::decode(&b, "l");
        }
    }

    fn zst(data: &[u8], level: i32, workers: u32, size: bool) -> Vec<u8> {
        use zstd::stream::raw::CParameter;
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), level).unwrap();
        e.include_checksum(true).unwrap();
        if workers > 0 {
            e.set_parameter(CParameter::NbWorkers(workers)).unwrap();
        }
        if size {
            e.set_pledged_src_size(Some(data.len() as u64)).unwrap();
        }
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn libzstd_frames_are_rebuilt_exactly() {
        let data = sample(600_000);
        for (level, workers, size) in [(3, 1, true), (3, 0, true), (1, 0, false), (7, 1, false), (19, 0, true)] {
            let blob = zst(&data, level, workers, size);
            let (a, got, back) = round(&blob);
            let Some(Rebuild::Zstd(z)) = &a.rebuild else { panic!("level {level} workers {workers}: {:?}", a.why_not) };
            assert_eq!((z.level, z.content_size.is_some()), (level, size), "{z:?}");
            assert_eq!(a.producer, "zstd (libzstd)");
            assert!(got == data && back.unwrap() == blob, "level {level} workers {workers}");
        }
    }

    #[test]
    fn zstd_that_cannot_be_exact_says_why() {
        let data = sample(200_000);
        let one = zst(&data, 3, 0, true);
        let mut two = one.clone();
        two.extend(zst(&data, 3, 0, true));
        let mut trailing = one.clone();
        trailing.extend_from_slice(b"xyz");
        let truncated = &one[..one.len() - 5];
        // A frame no libzstd level makes: an empty raw block, then the data as a raw block.
        let mut raw = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, 5];
        raw.extend_from_slice(&[0, 0, 0, (5 << 3 | 1) as u8, 0, 0]); // raw 0 bytes; last, raw, 5 bytes
        raw.extend_from_slice(b"hello");
        for (name, b, want) in [("two", &two[..], "another zstd frame"), ("trailing", &trailing[..], "bytes after"), ("truncated", truncated, "truncated"), ("raw", &raw[..], "no libzstd level")] {
            let mut got = Vec::new();
            let a = analyze(&mut &b[..], &mut collect(&mut got), "t").unwrap();
            let why = a.why_not.unwrap_or_default();
            assert!(a.rebuild.is_none() && why.starts_with("zstd (other)") && why.contains(want), "{name}: {why}");
        }
    }

    #[test]
    fn a_zstd_record_from_another_libzstd_is_refused() {
        let (rec, plain) = record_of(&zst(&sample(100_000), 3, 0, true));
        let Rebuild::Zstd(z) = &rec else { panic!() };
        let other = Rebuild::Zstd(ZstdParams { libzstd: 10504, ..z.clone() });
        let e = rebuild(&other, &mut &plain[..], &mut Vec::new(), "layer x").unwrap_err();
        assert!(e.to_string().contains("needs libzstd 1.5.4, this build has"), "{e}");
    }

    #[test]
    fn zstd_records_round_trip() {
        for z in [
            ZstdParams { level: 3, checksum: true, content_size: Some(123_456_789), long: false, workers: 1, libzstd: 10507 },
            ZstdParams { level: 19, checksum: false, content_size: None, long: true, workers: 0, libzstd: 10504 },
            ZstdParams { level: -5, checksum: false, content_size: Some(0), long: false, workers: 0, libzstd: 1 },
        ] {
            let rec = Rebuild::Zstd(z);
            let mut b = Vec::new();
            rec.encode(&mut b);
            assert_eq!(Rebuild::decode(&b, "l").unwrap(), rec);
        }
    }
}

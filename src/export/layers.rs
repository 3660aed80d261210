//! Layers of a docker-archive: telling gzip, zstd and plain tar apart, the uncompressed size a
//! blob announces, and decompressing a layer (checked against its diff_id) into its reserved
//! place in the archive file or, when it does not fit there, into a spool file.
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::image::Descriptor;
use crate::source::Source;

/// One layer to write, once per diff_id; `image` names it in messages.
#[derive(Clone)]
pub(super) struct Layer {
    pub desc: Descriptor,
    pub diff_id: Digest,
    pub image: String,
}

impl Layer {
    pub fn what(&self) -> String {
        format!("{}: layer {}", self.image, self.desc.digest)
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The uncompressed size the blob announces: a plain tar's own size, gzip's ISIZE (the size
/// modulo 2^32 of the last member; see `gzip_hint`), zstd's frame content size (of the first
/// frame). Only a hint: the writer checks it against what decompression gives and copes when
/// it is wrong. `None` when the blob announces nothing usable or something implausible.
pub(super) fn size_hint(source: &dyn Source, desc: &Descriptor) -> Result<Option<u64>> {
    let c = desc.size;
    let head = source.read_at(desc, 0, c.min(18) as usize)?;
    // No compression format reaches a ratio beyond ~1032:1 (deflate's limit) for layer
    // data we could place; anything larger is treated as unknown rather than reserved.
    let plausible = |u: u64| u <= c.saturating_mul(1100).saturating_add(1 << 16);
    if head.starts_with(&GZIP_MAGIC) {
        if c < 18 {
            return Ok(None);
        }
        let tail = source.read_at(desc, c.saturating_sub(TAIL), c.min(TAIL) as usize)?;
        let isize = u32::from_le_bytes(tail[tail.len() - 4..].try_into().expect("4 bytes")) as u64;
        return Ok(gzip_hint(c, isize, ends_with_small_member(&tail)).filter(|&u| plausible(u)));
    }
    if head.starts_with(&ZSTD_MAGIC) {
        return Ok(zstd_content_size(&head).filter(|&u| plausible(u)));
    }
    Ok(Some(c))
}

/// How much of a gzip blob's end `size_hint` reads: ISIZE and room for a small last member.
const TAIL: u64 = 64;

/// Whether a gzip member starts in the last bytes of `tail` (eStargz ends with a 47 or 51 byte
/// footer member): then ISIZE is that member's, not the layer's.
fn ends_with_small_member(tail: &[u8]) -> bool {
    tail.windows(4).rev().skip(1).any(|w| w[..3] == [0x1f, 0x8b, 0x08] && w[3] & 0xe0 == 0)
}

/// The uncompressed size of a gzip blob of `c` bytes whose ISIZE (the size modulo 2^32) is
/// `isize`:
/// - ISIZE itself when it is not below the compressed size minus deflate's framing: every
///   layer under 4 GiB (a layer that is bigger and compresses well gets this too, which proves
///   too small when written; the writer copes);
/// - else the layer is over 4 GiB: `isize + k·2^32` when exactly one such size lies between
///   0.99× and 1.5× the compressed size, as for model weights and other data that compresses
///   poorly, which are the common reason for layers this big. A layer ending in a small gzip
///   member (eStargz) says nothing about its size that way: unknown, as for several sizes or
///   none in that band.
fn gzip_hint(c: u64, isize: u64, small_last_member: bool) -> Option<u64> {
    let floor = c.saturating_sub(c / 8192 + (1 << 16));
    if isize >= floor {
        return Some(isize);
    }
    if small_last_member {
        return None;
    }
    let (lo, hi) = (c - c / 100, c.saturating_add(c / 2));
    let first = isize + (lo.saturating_sub(isize)).div_ceil(1 << 32) * (1 << 32);
    (first <= hi && first.saturating_add(1 << 32) > hi).then_some(first)
}

/// Frame_Content_Size from a zstd frame header (RFC 8878 §3.1.1.1), if present.
fn zstd_content_size(h: &[u8]) -> Option<u64> {
    let fhd = *h.get(4)?;
    let single = fhd & 0x20 != 0;
    let fcs_len = match fhd >> 6 {
        0 if single => 1,
        0 => return None,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let did_len = [0usize, 1, 2, 4][(fhd & 3) as usize];
    let at = 5 + usize::from(!single) + did_len;
    let raw = h.get(at..at + fcs_len)?;
    let mut v = [0u8; 8];
    v[..fcs_len].copy_from_slice(raw);
    let n = u64::from_le_bytes(v);
    Some(if fcs_len == 2 { n + 256 } else { n })
}

/// Decompresses one layer (gzip, zstd or plain, told apart by their magic bytes) into `out`,
/// checking the result against the diff_id; returns its size. The compressed blob is read
/// unverified: every byte written is checked against the diff_id instead, which the verified
/// config names (and a damaged blob fails to inflate or to match).
pub(super) fn decompress_into(source: &dyn Source, layer: &Layer, stop: &AtomicBool, out: &mut dyn Write) -> Result<u64> {
    let what = layer.what();
    let mut src = BufReader::with_capacity(1 << 20, source.open_unverified(&layer.desc)?);
    let head = src.fill_buf().map_err(|e| Error::Other(format!("{what}: {e}")))?.to_vec();
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pump = |r: &mut dyn Read| -> Result<()> {
        loop {
            if stop.load(Ordering::Relaxed) || crate::cancel::requested() {
                return Err(Error::Interrupted);
            }
            let n = r.read(&mut buf).map_err(|e| Error::Other(format!("{what}: {e}")))?;
            if n == 0 {
                return Ok(());
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| Error::Other(format!("{what}: writing the archive: {e}")))?;
        }
    };
    if head.starts_with(&GZIP_MAGIC) {
        pump(&mut crate::gunzip::GzDecoder::new(&mut src))?;
    } else if head.starts_with(&ZSTD_MAGIC) {
        let mut d = zstd::stream::read::Decoder::with_buffer(&mut src).map_err(|e| Error::Other(format!("{what}: {e}")))?;
        d.window_log_max(31).map_err(|e| Error::Other(format!("{what}: {e}")))?;
        pump(&mut d)?;
    } else {
        pump(&mut src)?;
    }
    let size = h.len();
    let found = h.finish();
    if found != layer.diff_id {
        return Err(Error::Other(format!("{what}: uncompressed content does not match its diff_id: expected {}, got {found}", layer.diff_id)));
    }
    Ok(size)
}

/// Decompresses one layer into an unnamed spool file in `dir` (whatever ends the process, the
/// kernel frees it), rewound for the writer.
pub(super) fn spool_layer(source: &dyn Source, layer: &Layer, dir: &Path, stop: &AtomicBool) -> Result<(File, u64)> {
    let file = tempfile::tempfile_in(dir).at(dir)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let size = decompress_into(source, layer, stop, &mut out)?;
    let file = finish_spool(out, dir)?;
    Ok((file, size))
}

fn finish_spool(out: BufWriter<File>, dir: &Path) -> Result<File> {
    let mut file = out.into_inner().map_err(|e| Error::Other(format!("writing a spool file in {}: {}", dir.display(), e.error())))?;
    file.seek(std::io::SeekFrom::Start(0)).at(dir)?;
    Ok(file)
}

/// A layer's reserved place in the archive file: `cap` bytes from `start`. Writes go there
/// (positioned, so every worker writes its own place at once) until they would pass its end;
/// then what was written moves to a spool file and the rest follows it there.
pub(super) struct Region<'a> {
    file: &'a File,
    start: u64,
    cap: u64,
    pos: u64,
    drop_behind: crate::writeback::DropBehind,
    spill: Option<BufWriter<File>>,
    spool_dir: &'a Path,
}

/// Where a layer ended up.
pub(super) enum Placed {
    /// In its place, `size` bytes.
    InPlace(u64),
    /// In a spool file (rewound), `size` bytes: the hint was wrong.
    Spilled(File, u64),
}

impl<'a> Region<'a> {
    pub fn new(file: &'a File, start: u64, cap: u64, spool_dir: &'a Path) -> Region<'a> {
        Region { file, start, cap, pos: 0, drop_behind: crate::writeback::DropBehind::at(start), spill: None, spool_dir }
    }

    fn start_spill(&mut self) -> std::io::Result<()> {
        let mut spool = BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(self.spool_dir)?);
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0;
        while done < self.pos {
            let n = (self.pos - done).min(buf.len() as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], self.start + done)?;
            spool.write_all(&buf[..n])?;
            done += n as u64;
        }
        self.spill = Some(spool);
        Ok(())
    }

    /// Decompresses `layer` into this place (or a spool when it does not fit exactly).
    pub fn fill(mut self, source: &dyn Source, layer: &Layer, stop: &AtomicBool) -> Result<Placed> {
        let size = decompress_into(source, layer, stop, &mut self)?;
        if self.spill.is_none() && size == self.cap {
            return Ok(Placed::InPlace(size));
        }
        if self.spill.is_none() {
            self.start_spill().map_err(|e| Error::Other(format!("{}: spooling in {}: {e}", layer.what(), self.spool_dir.display())))?;
        }
        let file = finish_spool(self.spill.take().expect("spill"), self.spool_dir)?;
        Ok(Placed::Spilled(file, size))
    }
}

impl Write for Region<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.spill.is_none() && self.pos + buf.len() as u64 > self.cap {
            self.start_spill()?;
        }
        if let Some(s) = &mut self.spill {
            return s.write(buf);
        }
        self.file.write_all_at(buf, self.start + self.pos)?;
        self.pos += buf.len() as u64;
        self.drop_behind.kick_and_drop(self.file, self.start + self.pos);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.spill {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ends_with_small_member, gzip_hint, zstd_content_size};

    const G: u64 = 1 << 30;

    #[test]
    fn gzip_hint_unwraps_isize_for_big_layers_that_compress_poorly() {
        // Under 4 GiB: ISIZE as is, however well it compressed.
        assert_eq!(gzip_hint(1000, 5_000_000, false), Some(5_000_000));
        assert_eq!(gzip_hint(3 * G, 3 * G + 7, false), Some(3 * G + 7));
        // 4.5 GiB of random data, which pigz made 0.03 % bigger (measured here).
        assert_eq!(gzip_hint(4_833_313_026, 536_879_104, false), Some(4_831_846_400));
        // 10 GiB of model weights compressed 1.2:1 (8.33 GiB): ISIZE is 2 GiB.
        assert_eq!(gzip_hint(10 * G * 5 / 6, 2 * G, false), Some(10 * G));
        // Exactly 4 GiB of incompressible data: ISIZE 0.
        assert_eq!(gzip_hint(4 * G + 1000, 0, false), Some(4 * G));
        // 6 GiB compressed 2.5:1 (2.4 GiB), ISIZE 2 GiB: 6 GiB is outside the band: unknown.
        assert_eq!(gzip_hint(2 * G + 2 * G / 5, 2 * G, false), None);
        // 5 GiB of zeros (23 MB compressed): ISIZE 1 GiB is above the compressed size: used,
        // and found too small while writing.
        assert_eq!(gzip_hint(23_000_000, G, false), Some(G));
        // An eStargz layer ends in a footer member: its ISIZE (0) says nothing.
        assert_eq!(gzip_hint(5 * G, 0, true), None);
        // Two sizes in the band (a 20 GiB blob): unknown.
        assert_eq!(gzip_hint(20 * G, 3 * G, false), None);
    }

    #[test]
    fn a_small_last_gzip_member_is_seen() {
        let member = |data: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, data).unwrap();
            e.finish().unwrap()
        };
        let big = member(&vec![7u8; 100_000]);
        let tail = |b: &[u8]| b[b.len().saturating_sub(64)..].to_vec();
        assert!(!ends_with_small_member(&tail(&big)));
        let mut two = big.clone();
        two.extend(member(b""));
        assert!(ends_with_small_member(&tail(&two)));
    }

    #[test]
    fn zstd_frame_content_size_is_read_when_present() {
        for n in [0usize, 1, 255, 256, 300, 70000, 5_000_000] {
            let data = vec![7u8; n];
            let framed = zstd::bulk::compress(&data, 3).unwrap();
            assert_eq!(zstd_content_size(&framed), Some(n as u64), "{n} bytes");
        }
        // A streamed frame without the size.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, b"hello").unwrap();
        let framed = enc.finish().unwrap();
        assert_eq!(zstd_content_size(&framed), None);
    }
}

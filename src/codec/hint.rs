//! The uncompressed size a compressed layer announces in its own bytes (gzip ISIZE, zstd frame
//! content size), so a writer can reserve the right room before decompressing.
use super::Compression;

/// How much of a blob's start `size_hint` needs: a gzip member header, a zstd frame header.
pub const HEAD: u64 = 18;

/// The uncompressed size a blob of `c` bytes announces, from its first [`HEAD`] bytes and (for
/// gzip) its last [`TAIL`]: a plain tar's own size, gzip's ISIZE (the size modulo 2^32 of the
/// last member; see `gzip_hint`), zstd's frame content size (of the first frame). Only a hint.
/// `None` when the blob announces nothing usable or something implausible.
pub fn size_hint(c: u64, head: &[u8], tail: &[u8]) -> Option<u64> {
    // No compression format reaches a ratio beyond ~1032:1 (deflate's limit) for layer
    // data we could place; anything larger is treated as unknown rather than reserved.
    let plausible = |u: u64| u <= c.saturating_mul(1100).saturating_add(1 << 16);
    match Compression::sniff(head) {
        Compression::Gzip => {
            if c < HEAD || tail.len() < 4 {
                return None;
            }
            let isize = u32::from_le_bytes(tail[tail.len() - 4..].try_into().expect("4 bytes")) as u64;
            gzip_hint(c, isize, ends_with_small_member(tail)).filter(|&u| plausible(u))
        }
        Compression::Zstd => zstd_content_size(head).filter(|&u| plausible(u)),
        Compression::Plain => Some(c),
    }
}

/// How much of a gzip blob's end `size_hint` reads: ISIZE and room for a small last member.
pub const TAIL: u64 = 64;

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
pub(super) fn zstd_content_size(h: &[u8]) -> Option<u64> {
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

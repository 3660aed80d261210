//! Content-defined chunking: cuts a byte stream where its content says, so the same bytes are cut
//! the same way wherever they sit (in any layer, on any machine). A Gear rolling hash with
//! FastCDC's normalized chunking; the table and the parameters are part of the bundle format
//! (docs/design.md, "Bundle format version 2"): changing either changes every chunk.

/// The smallest chunk cut inside a stream (a stream's last chunk may be shorter).
pub const MIN: usize = 16 << 10;
/// The size chunks are cut at on average.
pub const AVG: usize = 64 << 10;
/// The largest chunk: a stream with no boundary is cut every MAX bytes.
pub const MAX: usize = 256 << 10;

/// Below AVG a boundary needs 18 zero bits (harder), above it 14 (easier): FastCDC's
/// normalization level 2, which pulls chunk sizes towards AVG. The top bits of the hash are
/// used: they depend on the last 64 bytes, the bottom ones only on the last few.
const MASK_S: u64 = !0u64 << (64 - 18);
const MASK_L: u64 = !0u64 << (64 - 14);

/// The Gear table: 256 values from splitmix64 seeded with 0x6f63_6962_756e_646c ("ocibundl").
const GEAR: [u64; 256] = gear_table();

const fn gear_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut state: u64 = 0x6f63_6962_756e_646c;
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
}

/// Scans `data` (a chunk's bytes from its start) from `from`, the rolling hash being `h` there:
/// the chunk's length if a boundary is found, else the hash at the end of `data`.
fn scan(data: &[u8], from: usize, mut h: u64) -> std::result::Result<usize, u64> {
    let end = data.len().min(MAX);
    let mut i = from.max(MIN);
    let mid = AVG.min(end);
    while i < mid {
        h = (h << 1).wrapping_add(GEAR[data[i] as usize]);
        if h & MASK_S == 0 {
            return Ok(i + 1);
        }
        i += 1;
    }
    while i < end {
        h = (h << 1).wrapping_add(GEAR[data[i] as usize]);
        if h & MASK_L == 0 {
            return Ok(i + 1);
        }
        i += 1;
    }
    if end == MAX { Ok(MAX) } else { Err(h) }
}

/// Where the first boundary of `data` (the start of a chunk) is: the chunk's length. `None`
/// when `data` ends before one is found (and is shorter than MAX).
pub fn boundary(data: &[u8]) -> Option<usize> {
    scan(data, MIN, 0).ok()
}

/// Cuts a stream given in pieces of any size: the same stream gives the same chunks however it
/// is split into pieces. Holds at most MAX bytes, and scans each byte once.
#[derive(Default)]
pub struct Cutter {
    buf: Vec<u8>,
    /// How far `buf` is scanned, and the rolling hash there.
    scanned: usize,
    h: u64,
}

impl Cutter {
    pub fn new() -> Cutter {
        Cutter { buf: Vec::with_capacity(MAX), scanned: 0, h: 0 }
    }

    /// Feeds the next bytes of the stream; `chunk` gets every chunk completed by them.
    pub fn push<E>(&mut self, mut data: &[u8], chunk: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        // Whole chunks straight from `data` while nothing is held.
        while self.buf.is_empty() {
            match boundary(data) {
                Some(n) => {
                    chunk(&data[..n])?;
                    data = &data[n..];
                }
                None => break,
            }
        }
        while !data.is_empty() {
            let take = (MAX - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            let mut start = 0;
            loop {
                let from = if start == 0 { self.scanned } else { MIN };
                let h = if start == 0 { self.h } else { 0 };
                match scan(&self.buf[start..], from, h) {
                    Ok(n) => {
                        chunk(&self.buf[start..start + n])?;
                        start += n;
                        self.scanned = 0;
                        self.h = 0;
                    }
                    Err(h) => {
                        self.scanned = (self.buf.len() - start).max(MIN.min(self.buf.len() - start));
                        self.h = if self.buf.len() - start > MIN { h } else { 0 };
                        break;
                    }
                }
            }
            self.buf.drain(..start);
        }
        Ok(())
    }

    /// Ends the stream: what is held is its last chunk.
    pub fn finish<E>(&mut self, chunk: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if !self.buf.is_empty() {
            chunk(&self.buf)?;
            self.buf.clear();
        }
        self.scanned = 0;
        self.h = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    fn cut_all(data: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut c = Cutter::new();
        for p in data.chunks(piece.max(1)) {
            c.push::<()>(p, &mut |x| {
                out.push(x.to_vec());
                Ok(())
            })
            .unwrap();
        }
        c.finish::<()>(&mut |x| {
            out.push(x.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn the_same_stream_cut_in_any_pieces_gives_the_same_chunks() {
        let data = noise(3 << 20, 1);
        let whole = cut_all(&data, data.len());
        assert_eq!(whole.concat(), data);
        for piece in [1usize, 1000, 65536, 300_001] {
            assert_eq!(cut_all(&data, piece), whole, "piece {piece}");
        }
        let sizes: Vec<usize> = whole.iter().map(|c| c.len()).collect();
        assert!(sizes[..sizes.len() - 1].iter().all(|&n| (MIN..=MAX).contains(&n)));
        let avg = data.len() / whole.len();
        assert!((AVG / 2..AVG * 2).contains(&avg), "average {avg}");
    }

    #[test]
    fn an_insertion_changes_only_the_chunks_around_it() {
        let data = noise(4 << 20, 2);
        let mut edited = data[..1 << 20].to_vec();
        edited.extend_from_slice(b"a few inserted bytes");
        edited.extend_from_slice(&data[1 << 20..]);
        let a = cut_all(&data, 1 << 16);
        let b = cut_all(&edited, 1 << 16);
        let shared = b.iter().filter(|c| a.contains(c)).count();
        assert!(shared + 3 >= a.len(), "{shared} of {} chunks shared", a.len());
    }

    #[test]
    fn the_table_is_fixed() {
        // Part of the format: a change here changes every chunk of every bundle.
        let bytes: Vec<u8> = GEAR.iter().flat_map(|g| g.to_le_bytes()).collect();
        assert_eq!(crate::digest::Digest::of(&bytes).to_string(), "sha256:128e95a3eab46211a2ea460a144ee286011e9f9d4f61a22f2b9314a8c36001df");
    }
}

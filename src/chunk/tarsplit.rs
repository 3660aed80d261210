//! Splits a layer's tar stream, given in pieces, into tar metadata (headers, PAX and GNU
//! long-name records, padding, end blocks: the exact bytes) and file payloads. Every byte comes
//! out once, in order, as one or the other, so concatenating them gives the stream back; a
//! stream that stops being a tar (bad checksum, not a tar at all) is payload from there on.
//! Exactness never depends on this parse being right: the recipe is checked against the
//! diff_id; only how much is deduplicated does.

/// What the splitter hands out, in stream order.
pub enum Piece<'a> {
    Meta(&'a [u8]),
    Data(&'a [u8]),
    /// The end of one file's payload (cut its last chunk).
    FileEnd,
}

const BLOCK: usize = 512;
/// PAX records bigger than this are kept as metadata without looking for a size in them.
const PAX_CAP: u64 = 1 << 20;

enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// A file's payload: bytes left, then padding.
    Data { left: u64, pad: u64 },
    /// Metadata payload (PAX, GNU long names, sparse extension blocks): bytes left, padding,
    /// and whether it is a PAX header whose `size` applies to the next entry.
    Meta { left: u64, pad: u64, pax: bool },
    /// No longer a tar: everything is one payload.
    Opaque,
}

pub struct TarSplit {
    state: State,
    held: Vec<u8>,
    /// A `size` from a PAX header, for the next entry.
    pax_size: Option<u64>,
    pax_buf: Vec<u8>,
    /// Old-GNU sparse extension blocks are coming; then this many bytes of data.
    sparse_data: Option<u64>,
}

impl Default for TarSplit {
    fn default() -> Self {
        Self::new()
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        // base-256 (GNU, for sizes of 8 GiB and more): big-endian, first byte's top bit set.
        if field[0] & 0x40 != 0 {
            return None;
        }
        let mut v: u64 = (field[0] & 0x3f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let s: Vec<u8> = field.iter().copied().skip_while(|&b| b == b' ').take_while(|&b| b != 0 && b != b' ').collect();
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

fn checksum_ok(h: &[u8]) -> bool {
    let Some(want) = octal(&h[148..156]) else { return false };
    let sum: u64 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { b' ' as u64 } else { b as u64 }).sum();
    sum == want
}

fn pad_of(n: u64) -> u64 {
    (BLOCK as u64 - n % BLOCK as u64) % BLOCK as u64
}

/// The `size` record of a PAX extended header, if any.
fn pax_size(records: &[u8]) -> Option<u64> {
    let mut rest = records;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp || len > rest.len() {
            return None;
        }
        let rec = &rest[sp + 1..len];
        if let Some(v) = rec.strip_prefix(b"size=") {
            let v = v.strip_suffix(b"\n").unwrap_or(v);
            return std::str::from_utf8(v).ok()?.parse().ok();
        }
        rest = &rest[len..];
    }
    None
}

impl TarSplit {
    pub fn new() -> TarSplit {
        TarSplit { state: State::Header, held: Vec::with_capacity(BLOCK), pax_size: None, pax_buf: Vec::new(), sparse_data: None }
    }

    /// Reads a complete header block: what follows it.
    fn header<E>(&mut self, out: &mut impl FnMut(Piece) -> Result<(), E>) -> Result<(), E> {
        let h: [u8; BLOCK] = self.held[..].try_into().expect("a whole block");
        self.held.clear();
        if let Some(size) = self.sparse_data {
            // An old-GNU sparse extension block (21 more sparse entries, then its own flag);
            // the file's data follows the last one.
            out(Piece::Meta(&h))?;
            if h[504] == 0 {
                self.sparse_data = None;
                self.start_data(size, out)?;
            }
            return Ok(());
        }
        if h.iter().all(|&b| b == 0) {
            return out(Piece::Meta(&h));
        }
        let size = if checksum_ok(&h) { octal(&h[124..136]) } else { None };
        let Some(size) = size.filter(|&s| s < (1 << 62)) else {
            // Not a tar header: everything from here is one payload.
            self.state = State::Opaque;
            return out(Piece::Data(&h));
        };
        let flag = h[156];
        out(Piece::Meta(&h))?;
        match flag {
            b'x' | b'g' | b'L' | b'K' => {
                self.state = if size == 0 { State::Header } else { State::Meta { left: size, pad: pad_of(size), pax: flag == b'x' && size <= PAX_CAP } };
                self.pax_buf.clear();
                Ok(())
            }
            _ => {
                let size = self.pax_size.take().unwrap_or(size);
                if flag == b'S' && h[482] != 0 {
                    self.sparse_data = Some(size);
                    return Ok(());
                }
                self.start_data(size, out)
            }
        }
    }

    fn start_data<E>(&mut self, size: u64, _out: &mut impl FnMut(Piece) -> Result<(), E>) -> Result<(), E> {
        self.state = if size == 0 { State::Header } else { State::Data { left: size, pad: pad_of(size) } };
        Ok(())
    }

    /// Feeds the next bytes of the stream.
    pub fn push<E>(&mut self, mut data: &[u8], out: &mut impl FnMut(Piece) -> Result<(), E>) -> Result<(), E> {
        while !data.is_empty() {
            match &mut self.state {
                State::Opaque => {
                    out(Piece::Data(data))?;
                    return Ok(());
                }
                State::Header => {
                    let take = (BLOCK - self.held.len()).min(data.len());
                    self.held.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.held.len() == BLOCK {
                        self.header(out)?;
                    }
                }
                State::Data { left, pad } => {
                    if *left > 0 {
                        let n = (*left).min(data.len() as u64) as usize;
                        *left -= n as u64;
                        let done = *left == 0;
                        out(Piece::Data(&data[..n]))?;
                        data = &data[n..];
                        if done {
                            out(Piece::FileEnd)?;
                        }
                    } else {
                        let n = (*pad).min(data.len() as u64) as usize;
                        *pad -= n as u64;
                        if *pad == 0 {
                            self.state = State::Header;
                        }
                        out(Piece::Meta(&data[..n]))?;
                        data = &data[n..];
                    }
                }
                State::Meta { left, pad, pax } => {
                    if *left > 0 {
                        let n = (*left).min(data.len() as u64) as usize;
                        *left -= n as u64;
                        if *pax {
                            self.pax_buf.extend_from_slice(&data[..n]);
                            if *left == 0 {
                                self.pax_size = pax_size(&self.pax_buf);
                            }
                        }
                        out(Piece::Meta(&data[..n]))?;
                        data = &data[n..];
                    } else {
                        let n = (*pad).min(data.len() as u64) as usize;
                        *pad -= n as u64;
                        out(Piece::Meta(&data[..n]))?;
                        data = &data[n..];
                    }
                    if let State::Meta { left: 0, pad: 0, .. } = self.state {
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends the stream: a partial header block is metadata; a payload cut short ends its file.
    pub fn finish<E>(&mut self, out: &mut impl FnMut(Piece) -> Result<(), E>) -> Result<(), E> {
        if !self.held.is_empty() {
            out(Piece::Meta(&self.held))?;
            self.held.clear();
        }
        if matches!(self.state, State::Opaque | State::Data { left: 1.., .. }) {
            out(Piece::FileEnd)?;
        }
        self.state = State::Header;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `tar` fed in pieces of `piece` bytes: (everything in order, the file payloads).
    fn split(tar: &[u8], piece: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let (mut all, mut files, mut cur) = (Vec::new(), Vec::new(), Vec::new());
        let mut s = TarSplit::new();
        let mut f = |p: Piece| -> Result<(), ()> {
            match p {
                Piece::Meta(b) => all.extend_from_slice(b),
                Piece::Data(b) => {
                    all.extend_from_slice(b);
                    cur.extend_from_slice(b);
                }
                Piece::FileEnd => files.push(std::mem::take(&mut cur)),
            }
            Ok(())
        };
        for p in tar.chunks(piece) {
            s.push(p, &mut f).unwrap();
        }
        s.finish(&mut f).unwrap();
        (all, files)
    }

    fn sample() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let add = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], kind: tar::EntryType| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, data).unwrap();
        };
        add(&mut b, "etc/hello", b"hello world\n", tar::EntryType::Regular);
        add(&mut b, "empty", b"", tar::EntryType::Regular);
        add(&mut b, &format!("{}/long-name", "d".repeat(150)), &vec![7u8; 100_000], tar::EntryType::Regular);
        add(&mut b, "dir/.wh..wh..opq", b"", tar::EntryType::Regular);
        b.append_pax_extensions([("path", b"pax/named/file".as_slice()), ("mtime", b"1.5".as_slice())]).unwrap();
        add(&mut b, "short", &vec![9u8; 513], tar::EntryType::Regular);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", "etc/hello").unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn every_byte_comes_out_once_and_payloads_are_the_files() {
        let tar = sample();
        for piece in [1, 7, 512, 4096, tar.len()] {
            let (all, files) = split(&tar, piece);
            assert!(all == tar, "piece {piece}");
            let sizes: Vec<usize> = files.iter().map(|f| f.len()).collect();
            assert_eq!(sizes, vec![12, 100_000, 513], "piece {piece}");
            assert_eq!(files[0], b"hello world\n");
        }
    }

    #[test]
    fn a_stream_that_is_not_a_tar_is_one_payload() {
        let junk: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8 + 1).collect();
        let (all, files) = split(&junk, 100);
        assert!(all == junk);
        assert_eq!(files.len(), 1);
        assert!(files[0] == junk);
        // A tar cut short mid-file: still every byte, the cut file ended.
        let tar = sample();
        let cut = &tar[..2000];
        let (all, _) = split(cut, 333);
        assert!(all == cut);
    }

    #[test]
    fn base256_sizes_and_pax_sizes_are_read() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[4..].copy_from_slice(&(9u64 << 30).to_be_bytes());
        assert_eq!(octal(&f), Some(9 << 30));
        assert_eq!(pax_size(b"20 size=12345678901\n"), Some(12345678901));
        assert_eq!(pax_size(b"18 path=a/b/c/d/e\n11 size=77\n"), Some(77));
        assert_eq!(octal(b"0000644\0"), Some(0o644));
        assert_eq!(octal(b"12x\0"), None);
    }
}

//! Layer compression: telling gzip, zstd and plain tar apart by their bytes, decompressing each
//! as a stream (gzip through ISA-L or zlib-rs, see `gunzip`), and the sizes they announce
//! (`hint`). Shared by every reader of layer contents (docker-archive export today).
use std::io::{self, BufRead, Read};

pub mod gunzip;
pub mod hint;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a layer blob is compressed, as its first bytes say (media types can lie; bytes cannot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    /// Anything else: read as it is (an uncompressed tar, or garbage the diff_id check catches).
    Plain,
}

impl Compression {
    /// Tells the compression from a blob's first bytes (4 are enough).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::Plain
        }
    }
}

/// A reader of the decompressed stream. zstd frames may use windows up to 2 GiB (what
/// `zstd --long=31` writes); the decoder's memory is bounded by the window, not the layer.
pub fn decoder<'a, R: BufRead + 'a>(c: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::Gzip => Box::new(gunzip::GzDecoder::new(r)),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
            d.window_log_max(31)?;
            Box::new(d)
        }
        Compression::Plain => Box::new(r),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_is_told_apart_and_decodes_to_the_same_bytes() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut gz, &data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::bulk::compress(&data, 3).unwrap();
        for (blob, want) in [(&gz, Compression::Gzip), (&zs, Compression::Zstd), (&data, Compression::Plain)] {
            assert_eq!(Compression::sniff(blob), want);
            let mut out = Vec::new();
            decoder(want, &blob[..]).unwrap().read_to_end(&mut out).unwrap();
            assert!(out == data, "{want:?} round trip");
        }
        assert_eq!(Compression::sniff(&[0x1f]), Compression::Plain);
    }
}

//! Layer compression: telling gzip, zstd and plain tar apart by their bytes, decompressing each
//! as a stream (gzip through ISA-L or zlib-rs, see `gunzip`), their exact rebuild (`exact`), and the sizes they announce
//! (`hint`), and the one inflate-and-check of a layer against its diff_id. Shared by every
//! reader of layer contents (docker-archive export, `verify --deep`).
use std::io::{self, BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::digest::{DiffId, Hasher};
use crate::error::{Error, Result};

pub mod exact;
pub mod gunzip;
pub mod hint;
mod regzip;
mod repigz;
mod rezlib;
mod rezstd;
mod segments;

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

/// Decompresses the layer `src` reads (gzip, zstd or plain, told apart by their first bytes)
/// into `out` and checks what it gives against `diff_id`; returns the uncompressed size. What
/// the decoder leaves unread is read to the end too, so a verifying `src` still checks the
/// blob's own digest. `stop` (or Ctrl-C) ends it as `Interrupted`; `what` names the layer.
pub fn inflate_checked(src: &mut dyn BufRead, diff_id: &DiffId, what: &str, stop: &AtomicBool, out: &mut dyn Write) -> Result<u64> {
    let head = src.fill_buf().map_err(|e| Error::Other(format!("{what}: {e}")))?.to_vec();
    let mut h = Hasher::new();
    let mut dec = decoder(Compression::sniff(&head), &mut *src).map_err(|e| Error::Other(format!("{what}: {e}")))?;
    pump(&mut *dec, what, stop, out, &mut |b| h.update(b))?;
    drop(dec);
    io::copy(src, &mut io::sink()).map_err(|e| Error::Other(format!("{what}: {e}")))?;
    let size = h.len();
    let found = DiffId(h.finish());
    if &found != diff_id {
        return Err(Error::DiffIdMismatch { what: what.to_string(), expected: diff_id.clone(), found });
    }
    Ok(size)
}

/// Copies `r` to `out` in 1 MiB steps, handing each step to `seen` too, until `r` ends or
/// `stop` (or a cancel) is raised; returns the bytes copied. Read errors name `what`, write
/// errors say they are the archive's.
pub fn pump(r: &mut dyn Read, what: &str, stop: &AtomicBool, out: &mut dyn Write, seen: &mut dyn FnMut(&[u8])) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) || crate::cancel::requested() {
            return Err(Error::Interrupted);
        }
        let n = r.read(&mut buf).map_err(|e| Error::Other(format!("{what}: {e}")))?;
        if n == 0 {
            return Ok(total);
        }
        seen(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::Other(format!("{what}: writing the archive: {e}")))?;
        total += n as u64;
    }
}

/// A reader of the decompressed stream. The decoder's memory is bounded by the zstd window,
/// not the layer, and the window by `limits::ZSTD_WINDOW_LOG` (a frame asking for more is an
/// error that names the cap).
pub fn decoder<'a, R: BufRead + 'a>(c: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::Gzip => Box::new(gunzip::GzDecoder::new(r)),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
            d.window_log_max(crate::limits::ZSTD_WINDOW_LOG)?;
            Box::new(ZstdCapped(d))
        }
        Compression::Plain => Box::new(r),
    })
}

/// The zstd decoder, with its "too much memory" error saying which cap refused the frame.
struct ZstdCapped<R>(R);

impl<R: Read> Read for ZstdCapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.to_string().contains("too much memory") {
                io::Error::new(io::ErrorKind::InvalidData, format!("zstd frame asks for a window over the {} MiB limit ({e})", (1u64 << crate::limits::ZSTD_WINDOW_LOG) >> 20))
            } else {
                e
            }
        })
    }
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

    #[test]
    fn a_zstd_frame_asking_for_a_window_over_the_cap_is_refused_naming_it() {
        use zstd::stream::raw::CParameter;
        let data = vec![5u8; 1 << 20];
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.set_parameter(CParameter::WindowLog(crate::limits::ZSTD_WINDOW_LOG + 1)).unwrap();
        e.set_parameter(CParameter::EnableLongDistanceMatching(true)).unwrap();
        io::Write::write_all(&mut e, &data).unwrap();
        let big = e.finish().unwrap();
        let err = decoder(Compression::Zstd, &big[..]).unwrap().read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("128 MiB limit"), "{err}");
        // At the cap it decodes.
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.set_parameter(CParameter::WindowLog(crate::limits::ZSTD_WINDOW_LOG)).unwrap();
        io::Write::write_all(&mut e, &data).unwrap();
        let ok = e.finish().unwrap();
        let mut out = Vec::new();
        decoder(Compression::Zstd, &ok[..]).unwrap().read_to_end(&mut out).unwrap();
        assert!(out == data);
    }
}

//! Measures exact rebuild (ocibundle::codec::exact) on compressed blobs:
//!   cargo run --release --example exact_rebuild -- BLOB...
//! Per blob: analyze (the decompressed stream goes to a temp file), then rebuild from that file
//! and compare the result's sha256 with the blob's. Prints producer, exact or why not, side bytes
//! (% of the blob), and MB/s of decompressed data for each step (MB = 10^6 bytes). Run it under
//! `/usr/bin/time -v` for the peak RSS.
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, Write};
use std::time::Instant;

use ocibundle::codec::exact::{analyze, rebuild};
use ocibundle::digest::Hasher;

/// A writer that only hashes.
struct HashOut(Hasher);
impl Write for HashOut {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for path in std::env::args().skip(1) {
        let size = std::fs::metadata(&path)?.len();
        let mut plain_file = BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
        let mut blob_hash = Hasher::new();
        let mut plain_len = 0u64;
        struct Tee<'a>(File, &'a mut Hasher);
        impl std::io::Read for Tee<'_> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.read(b)?;
                self.1.update(&b[..n]);
                Ok(n)
            }
        }
        let t = Instant::now();
        let a = analyze(&mut Tee(File::open(&path)?, &mut blob_hash), &mut |b| {
            plain_len += b.len() as u64;
            plain_file.write_all(b).map_err(|e| ocibundle::error::Error::Other(e.to_string()))
        }, &path)?;
        let ta = t.elapsed().as_secs_f64();
        let mb = plain_len as f64 / 1e6;
        println!("{path}: {size} bytes -> {plain_len} plain; producer {}", a.producer);
        println!("  analyze {ta:.2} s ({:.1} MB/s)", mb / ta);
        let Some(rec) = a.rebuild else {
            println!("  not exact: {}", a.why_not.unwrap_or_default());
            continue;
        };
        let side = rec.side_bytes();
        println!("  exact; side data {side} bytes ({:.3} % of the blob)", side as f64 * 100.0 / size as f64);
        let mut f = plain_file.into_inner()?;
        f.rewind()?;
        let mut out = HashOut(Hasher::new());
        let t = Instant::now();
        let n = rebuild(&rec, &mut BufReader::with_capacity(1 << 20, f), &mut out, &path)?;
        let tr = t.elapsed().as_secs_f64();
        let same = out.0.finish() == blob_hash.finish();
        println!("  rebuild {tr:.2} s ({:.1} MB/s), {n} bytes, {}", mb / tr, if same { "identical" } else { "DIFFERENT" });
    }
    Ok(())
}

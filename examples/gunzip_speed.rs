//! Measures gzip inflate speed per backend of ocibundle::codec::gunzip on one file (output discarded):
//!   cargo run --release --example gunzip_speed -- FILE.gz [RUNS]
//! Prints the best of RUNS (default 3) for bare flate2 MultiGzDecoder, GzDecoder forced to
//! zlib-rs, and GzDecoder as chosen (ISA-L when available). MB = 10^6 bytes of output.
use std::fs::File;
use std::io::{BufReader, Read};
use std::time::{Duration, Instant};

use ocibundle::codec::gunzip::{self, GzDecoder};

/// Builds the decoder under test around the opened file.
type Make = dyn Fn(BufReader<File>) -> Box<dyn Read>;

/// Output bytes and time of inflating the file through the reader `make` builds.
fn run(path: &str, make: &Make) -> std::io::Result<(u64, Duration)> {
    // The export path reads layers through a 1 MiB BufReader and 1 MiB buffers: do the same.
    let mut r = make(BufReader::with_capacity(1 << 20, File::open(path)?));
    let mut buf = vec![0u8; 1 << 20];
    let (start, mut total) = (Instant::now(), 0u64);
    loop {
        match r.read(&mut buf)? {
            0 => return Ok((total, start.elapsed())),
            n => total += n as u64,
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: gunzip_speed FILE.gz [RUNS]");
        std::process::exit(2);
    };
    let runs: u32 = args.next().map_or(3, |s| s.parse().expect("RUNS: a number"));
    let compressed = std::fs::metadata(&path)?.len();
    let cases: [(&str, &Make); 3] = [
        ("flate2 MultiGzDecoder (bare)", &|f| Box::new(flate2::read::MultiGzDecoder::new(f))),
        ("GzDecoder, OCIBUNDLE_GUNZIP=zlib-rs", &|f| {
            // SAFETY: this program is single-threaded.
            unsafe { std::env::set_var("OCIBUNDLE_GUNZIP", "zlib-rs") };
            let d = GzDecoder::new(f);
            unsafe { std::env::remove_var("OCIBUNDLE_GUNZIP") };
            assert_eq!(d.backend(), "zlib-rs");
            Box::new(d)
        }),
        ("GzDecoder, default", &|f| Box::new(GzDecoder::new(f))),
    ];
    println!("{path}: {compressed} bytes compressed; default backend: {}", gunzip::backend());
    for (name, make) in cases {
        let mut best: Option<(u64, Duration)> = None;
        for _ in 0..runs {
            let (n, t) = run(&path, make)?;
            best = Some(best.map_or((n, t), |(bn, bt)| (bn, bt.min(t))));
        }
        let (n, t) = best.expect("at least one run");
        let s = t.as_secs_f64();
        println!("{name:38} {n} bytes out in {s:.2} s: {:.0} MB/s out, {:.0} MB/s in", n as f64 / s / 1e6, compressed as f64 / s / 1e6);
    }
    Ok(())
}

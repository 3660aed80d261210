//! Exact rebuild (`codec::exact`) against the real producers of layer blobs: GNU gzip, pigz,
//! Python's zlib, Go's compress/gzip, klauspost pgzip (through skopeo), the zstd CLI, a plain
//! tar. Each blob goes through analyze → rebuild: the plain callback must get exactly the tar,
//! producers that can be exact must rebuild byte for byte, the others must say why, naming
//! the producer. A missing tool is skipped with a note (scripts/test.sh installs them).
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use ocibundle::codec::exact::{GzBody, Rebuild, analyze, analyze_without_replay, rebuild};

/// A deterministic tar of ~12 MB: files of text, binary-like records, zeros and random bytes in
/// turn, in five directories.
fn test_tar() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words: Vec<String> = (0..2000).map(|i| format!("w{}{}", i, "ab".repeat(i % 4))).collect();
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..48u64 {
        let n = 20_000 + (next() % 480_000) as usize;
        let data: Vec<u8> = match i % 4 {
            0 => {
                let mut t = String::new();
                while t.len() < n {
                    t.push_str(&words[(next() % 2000) as usize]);
                    t.push(if next() % 12 == 0 { '\n' } else { ' ' });
                }
                t.into_bytes()
            }
            1 => (0..n / 8).flat_map(|k| [(k as u32).to_le_bytes(), ((next() % 97) as u32).to_le_bytes()].concat()).collect(),
            2 => vec![0; n],
            _ => (0..n).map(|_| next() as u8).collect(),
        };
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, format!("d{}/f{i:03}", i % 5), &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

pub(crate) fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Runs `cmd` with `input` on stdin; its stdout.
pub(crate) fn filter(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd:?} failed");
    out.stdout
}

/// What a producer's blob must give.
enum Expect {
    Exact,
    /// Exact, every gzip member by a zlib replay (the encoder was zlib itself).
    Replayed,
    /// Exact by a pigz replay (pigz's jobs re-deflated by zlib).
    Pigz,
    /// Not exact, the reason naming this producer.
    Not(&'static str),
}

/// analyze → rebuild on `blob`; returns a line for the table.
fn check(name: &str, blob: &[u8], tar: &[u8], expect: Expect) -> String {
    let mut got = Vec::new();
    let t = std::time::Instant::now();
    let mut collect = |b: &[u8]| {
        got.extend_from_slice(b);
        Ok(())
    };
    let mut a = analyze(&mut &blob[..], &mut collect, name).unwrap();
    // As chunk::analyze does: a zlib replay that matched for a while and then did not means
    // another encoder (GNU gzip cuts some blocks short where zlib does not): read it again.
    let diverged = a.diverged.then(|| a.why_not.clone().unwrap_or_default());
    if a.diverged {
        got.clear();
        let mut collect = |b: &[u8]| {
            got.extend_from_slice(b);
            Ok(())
        };
        a = analyze_without_replay(&mut &blob[..], &mut collect, name).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let line = match &a.rebuild {
        Some(rec) => {
            assert!(got == tar, "{name}: the plain callback got {} bytes, not the tar's {}", got.len(), tar.len());
            let mut enc = Vec::new();
            rec.encode(&mut enc);
            let rec = Rebuild::decode(&enc, name).unwrap();
            let mut out = Vec::new();
            rebuild(&rec, &mut &got[..], &mut out, name).unwrap();
            assert!(out == blob, "{name}: rebuilt blob differs");
            let how = match rec {
                Rebuild::Gzip { members } if members.iter().all(|m| matches!(m.body, GzBody::Zlib(_))) => {
                    let seams: usize = members.iter().map(|m| if let GzBody::Zlib(z) = &m.body { z.seams.len() } else { 0 }).sum();
                    format!("zlib replay, {seams} seams")
                }
                Rebuild::Gzip { members } if members.iter().all(|m| matches!(m.body, GzBody::Pigz(_))) => "pigz replay".into(),
                Rebuild::Gzip { .. } => "preflate-rs".into(),
                _ => "re-encode".into(),
            };
            let how = match &diverged {
                Some(why) => format!("{how} after the replay diverged ({why})"),
                None => how.to_string(),
            };
            format!("{name}: exact by {how} ({}), side {} bytes ({:.3} %), analyze {:.1} MB/s", a.producer, enc.len(), enc.len() as f64 * 100.0 / blob.len() as f64, tar.len() as f64 / 1e6 / secs)
        }
        None => {
            assert!(tar.starts_with(&got), "{name}: the plain callback got bytes that are not the tar's start");
            format!("{name}: not exact: {}", a.why_not.clone().unwrap_or_default())
        }
    };
    match expect {
        Expect::Exact => assert!(a.rebuild.is_some(), "{name}: expected exact: {line}"),
        Expect::Pigz => assert!(line.contains("exact by pigz replay"), "{name}: expected a pigz replay: {line}"),
        // Levels 4-9 over ~12 MB of tar: seams every 4 MiB, so the rebuild above ran in segments.
        Expect::Replayed => assert!(line.contains("exact by zlib replay") && !line.contains(" 0 seams"), "{name}: expected a zlib replay with seams: {line}"),
        Expect::Not(label) => {
            let why = a.why_not.clone().unwrap_or_default();
            assert!(a.rebuild.is_none() && why.contains(label) && a.producer.contains(label), "{name}: expected not exact naming {label}: {line}");
        }
    }
    eprintln!("{line}");
    line
}

#[test]
fn exact_rebuild_of_every_real_producer() {
    let tar = test_tar();
    let dir = tempfile::tempdir().unwrap();
    check("plain tar", &tar, &tar, Expect::Exact);

    if have("gzip") {
        for level in ["-1", "-6", "-9"] {
            let blob = filter(Command::new("gzip").arg(level).arg("-n"), &tar);
            check(&format!("GNU gzip {level}"), &blob, &tar, Expect::Exact);
        }
        // From a file: FNAME and MTIME in the header.
        let f = dir.path().join("layer.tar");
        std::fs::write(&f, &tar).unwrap();
        let blob = filter(Command::new("gzip").arg("-c").arg(&f), b"");
        check("GNU gzip -6 (file, FNAME)", &blob, &tar, Expect::Exact);
    } else {
        eprintln!("note: no gzip: GNU gzip skipped");
    }
    if have("pigz") {
        for level in ["-1", "-6", "-9"] {
            let blob = filter(Command::new("pigz").arg(level), &tar);
            check(&format!("pigz {level}"), &blob, &tar, Expect::Pigz);
        }
        // A whole number of pigz's 128 KiB jobs: the last one is full and ends the stream.
        let even = &tar[..tar.len() / (128 << 10) * (128 << 10)];
        check("pigz -6 (whole jobs)", &filter(Command::new("pigz").arg("-6"), even), even, Expect::Pigz);
        // Independent jobs (no dictionaries) are another model: still exact, through preflate-rs.
        check("pigz -6 -i", &filter(Command::new("pigz").args(["-6", "-i"]), &tar), &tar, Expect::Exact);
    } else {
        eprintln!("note: no pigz (apt-get install pigz): pigz skipped");
    }
    if have("python3") {
        let zlib = "import sys,zlib; c=zlib.compressobj(6,zlib.DEFLATED,31); d=sys.stdin.buffer.read(); sys.stdout.buffer.write(c.compress(d)+c.flush())";
        check("Python zlib -6 (wbits 31)", &filter(Command::new("python3").args(["-c", zlib]), &tar), &tar, Expect::Replayed);
        let gzipfile = "import sys,gzip,io; b=io.BytesIO(); f=gzip.GzipFile(fileobj=b,mode='wb',compresslevel=6,mtime=0); f.write(sys.stdin.buffer.read()); f.close(); sys.stdout.buffer.write(b.getvalue())";
        check("Python gzip.GzipFile -6", &filter(Command::new("python3").args(["-c", gzipfile]), &tar), &tar, Expect::Replayed);
        // The corpus's writer: raw deflate at memLevel 9 behind a hand-written header, level 9.
        let corpus = "import sys,zlib; c=zlib.compressobj(9,zlib.DEFLATED,-15,9); d=sys.stdin.buffer.read(); sys.stdout.buffer.write(bytes([31,139,8,0,0,0,0,0,2,255])+c.compress(d)+c.flush()+zlib.crc32(d).to_bytes(4,'little')+len(d).to_bytes(4,'little'))";
        check("Python zlib -9 memLevel 9 (the corpus's writer)", &filter(Command::new("python3").args(["-c", corpus]), &tar), &tar, Expect::Replayed);
    } else {
        eprintln!("note: no python3: Python zlib skipped");
    }
    match go_gzip(dir.path()) {
        Some(gogz) => {
            for level in ["1", "-1", "9"] {
                let blob = filter(Command::new(&gogz).arg(level), &tar);
                // Level 1 is Go's own fast matcher, -1 (default, what BuildKit and Docker
                // write) and 9 its lazy one; all three use one-code distance tables, which
                // preflate-rs 0.7.6 refused until vendor/preflate-rs's patch.
                check(&format!("Go compress/gzip level {level}"), &blob, &tar, Expect::Exact);
            }
        }
        None => eprintln!("note: no go (apt-get install golang-go): Go compress/gzip skipped"),
    }
    match pgzip(dir.path(), &tar) {
        Some(blob) => {
            check("klauspost pgzip (skopeo --dest-compress)", &blob, &tar, Expect::Not("gzip (klauspost pgzip)"));
        }
        None => eprintln!("note: no skopeo: pgzip skipped"),
    }
    if have("zstd") {
        // The CLI's output is exact only when its libzstd is the one built in.
        let cli = String::from_utf8(filter(Command::new("zstd").arg("--version"), b"")).unwrap();
        let lib = zstd::zstd_safe::version_string();
        let same = cli.contains(&format!("v{lib},"));
        if !same {
            eprintln!("note: zstd CLI ({}) is not libzstd {lib}: its output is expected not exact", cli.trim());
        }
        let f = dir.path().join("layer.tar");
        std::fs::write(&f, &tar).unwrap();
        let small = &tar[..3 << 20];
        let fs = dir.path().join("small.tar");
        std::fs::write(&fs, small).unwrap();
        for (name, args, input, file) in [
            ("zstd -3 (file)", &["-3"][..], &tar[..], &f),
            ("zstd -3 (stdin)", &["-3"][..], &tar[..], &f),
            ("zstd -3 --single-thread", &["-3", "--single-thread"][..], &tar[..], &f),
            ("zstd -3 -T2", &["-3", "-T2"][..], &tar[..], &f),
            ("zstd -3 --long", &["-3", "--long"][..], &tar[..], &f),
            ("zstd -19 --single-thread (3 MB)", &["-19", "--single-thread"][..], small, &fs),
        ] {
            let mut cmd = Command::new("zstd");
            cmd.args(["-q", "-c"]).args(args);
            let blob = if name.contains("stdin") { filter(&mut cmd, input) } else { filter(cmd.arg(file), b"") };
            check(name, &blob, input, if same { Expect::Exact } else { Expect::Not("zstd (other)") });
        }
    } else {
        eprintln!("note: no zstd CLI: zstd producers skipped");
    }
}

/// Builds scripts/lib/gogz.go, a 20-line Go program that gzips stdin at the level its argument names.
pub(crate) fn go_gzip(dir: &Path) -> Option<std::path::PathBuf> {
    if !have("go") {
        return None;
    }
    let src = dir.join("gogz.go");
    std::fs::write(&src, include_str!("../../scripts/lib/gogz.go")).unwrap();
    let bin = dir.join("gogz");
    let ok = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .status()
        .unwrap()
        .success();
    assert!(ok, "go build failed");
    Some(bin)
}

/// An OCI layout holding `tar` as an uncompressed layer, copied by skopeo with
/// `--dest-compress` (pgzip) into a `dir:`; the compressed layer blob.
pub(crate) fn pgzip(dir: &Path, tar: &[u8]) -> Option<Vec<u8>> {
    use sha2::{Digest, Sha256};
    if !have("skopeo") {
        return None;
    }
    let src = dir.join("oci");
    let blobs = src.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let hex = hex::encode(Sha256::digest(b));
        std::fs::write(blobs.join(&hex), b).unwrap();
        (format!("sha256:{hex}"), b.len())
    };
    let (ld, ls) = put(tar);
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [ld]}, "config": {}});
    let (cd, cs) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}]});
    let (md, ms) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    std::fs::write(src.join("index.json"), index.to_string()).unwrap();
    std::fs::write(src.join("oci-layout"), r#"{"imageLayoutVersion": "1.0.0"}"#).unwrap();
    let dst = dir.join("dst");
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--dest-compress"])
        .arg(format!("oci:{}:t", src.display()))
        .arg(format!("dir:{}", dst.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_dir(&dst).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).find(|b| b.starts_with(&[0x1f, 0x8b]))
}

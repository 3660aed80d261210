//! Hostile docker-archives: each refused with one error line naming the archive and the member
//! at fault, nothing stored under any name, nothing written outside the store.
use std::path::{Path, PathBuf};

use super::*;
use crate::harness::fixtures::{Entry, tar_bytes};

/// One raw tar member: any name (even ones `tar::Builder` refuses), type flag, link target.
struct Raw<'a> {
    name: &'a str,
    kind: u8,
    link: &'a str,
    data: Vec<u8>,
}

fn file<'a>(name: &'a str, data: &[u8]) -> Raw<'a> {
    Raw { name, kind: b'0', link: "", data: data.to_vec() }
}

/// A tar with ustar headers written byte by byte.
fn raw_tar(members: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        let mut h = [0u8; 512];
        h[..m.name.len()].copy_from_slice(m.name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", m.data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = m.kind;
        h[157..157 + m.link.len()].copy_from_slice(m.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&m.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn sha(data: &[u8]) -> String {
    crate::harness::cmd::sha256(data)
}

/// A valid one-image archive's parts: (layer tar, config JSON, manifest.json) for `layer_path`.
fn parts(layer_path: &str) -> (Vec<u8>, Vec<u8>, String) {
    let layer = tar_bytes(&[Entry::File("etc/hello", b"hello from a docker-archive\n".to_vec(), 0o644)]);
    let config = format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#, sha(&layer)).into_bytes();
    let cfg_name = format!("{}.json", sha(&config).trim_start_matches("sha256:"));
    let manifest = format!(r#"[{{"Config":"{cfg_name}","RepoTags":["example.com/app:1"],"Layers":["{layer_path}"]}}]"#);
    (layer, config, manifest)
}

fn cfg_name(config: &[u8]) -> String {
    format!("{}.json", sha(config).trim_start_matches("sha256:"))
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Asserts the import fails naming every `want`, and that the store holds no reference and no
/// blob afterwards.
fn refused(env: &Env, archive: &Path, want: &[&str]) {
    let line = env.fails(&["import", &format!("docker-archive:{}", s(archive))]);
    for w in want.iter().chain(&[s(archive)]) {
        assert!(line.contains(w), "{line:?} should name {w:?}");
    }
    assert!(stored_refs(env).is_empty(), "{line}: a reference was stored");
    let blobs = env.store().join("blobs/sha256");
    let n = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(n, 0, "{line}: blobs were stored");
}

#[test]
fn a_well_formed_archive_imports_and_is_the_baseline_for_the_hostile_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, config, manifest) = parts("abc/layer.tar");
    let good = raw_tar(&[file("manifest.json", manifest.as_bytes()), file(&cfg_name(&config), &config), file("abc/layer.tar", &layer)]);
    let env = Env::new();
    let doc = import_json(&env, &write(dir.path(), "good.tar", &good));
    assert_eq!(doc["images"][0]["reference"], "example.com/app:1");
    assert_eq!(doc["images"][0]["image_id"], sha(&config).as_str());
    // The layer is stored as it was, named by its diff_id.
    assert!(env.blob_path(&sha(&layer)).is_file());
    env.ok(&["store", "fsck"]);
}

#[test]
fn hostile_member_names_links_and_duplicates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, config, manifest) = parts("abc/layer.tar");
    let cfg = cfg_name(&config);
    let m = file("manifest.json", manifest.as_bytes());
    let c = file(&cfg, &config);
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("traversal", raw_tar(&[file("manifest.json", manifest.as_bytes()), file(&cfg, &config), file("abc/layer.tar", &layer), file("../../evil", b"x")]), vec!["../../evil", "`..`"]),
        ("absolute", raw_tar(&[file("/etc/cron.d/evil", b"x"), file("manifest.json", manifest.as_bytes())]), vec!["/etc/cron.d/evil", "absolute"]),
        ("duplicate", raw_tar(&[file("manifest.json", manifest.as_bytes()), file(&cfg, &config), file("abc/layer.tar", &layer), file("./manifest.json", b"[]")]), vec!["manifest.json", "twice"]),
        (
            "symlink-out",
            raw_tar(&[file("manifest.json", manifest.as_bytes()), file(&cfg, &config), Raw { name: "abc/layer.tar", kind: b'2', link: "/etc/passwd", data: vec![] }]),
            vec!["abc/layer.tar", "symlink out of the archive"],
        ),
        (
            "symlink-up",
            raw_tar(&[file("manifest.json", manifest.as_bytes()), file(&cfg, &config), Raw { name: "abc/layer.tar", kind: b'2', link: "../../../etc/passwd", data: vec![] }]),
            vec!["abc/layer.tar", "symlink out of the archive"],
        ),
        (
            "hardlink",
            raw_tar(&[file("manifest.json", manifest.as_bytes()), file(&cfg, &config), file("other", &layer), Raw { name: "abc/layer.tar", kind: b'1', link: "other", data: vec![] }]),
            vec!["abc/layer.tar", "not a regular file"],
        ),
        ("manifest-names-passwd", raw_tar(&[file("manifest.json", manifest.replace("abc/layer.tar", "../../etc/passwd").as_bytes()), c, file("abc/layer.tar", &layer)]), vec!["../../etc/passwd", "`..`"]),
        ("no-manifest", raw_tar(&[file(&cfg, &config)]), vec!["manifest.json", "missing"]),
        ("not-a-tar", b"this is not a tar archive at all, just some bytes that go on for a while".repeat(20), vec![]),
    ];
    drop(m);
    for (name, data, want) in cases {
        let env = Env::new();
        let p = write(dir.path(), &format!("{name}.tar"), &data);
        refused(&env, &p, &want);
        // Nothing appeared beside the archive or above it.
        assert!(!dir.path().join("evil").exists() && !Path::new("/etc/cron.d/evil").exists(), "{name}");
    }
}

#[test]
fn wrong_content_and_truncation_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, config, manifest) = parts("abc/layer.tar");
    let cfg = cfg_name(&config);
    // A layer that is not what the config's diff_id says.
    let other = tar_bytes(&[Entry::File("etc/hello", b"something else\n".to_vec(), 0o644)]);
    let bad_layer = raw_tar(&[file("manifest.json", manifest.as_bytes()), file(&cfg, &config), file("abc/layer.tar", &other)]);
    refused(&Env::new(), &write(dir.path(), "bad-layer.tar", &bad_layer), &["abc/layer.tar", "diff_id", &sha(&layer)]);
    // A config whose name is not its digest.
    let wrong_name = format!("{}.json", "0".repeat(64));
    let bad_cfg = raw_tar(&[file("manifest.json", manifest.replace(&cfg, &wrong_name).as_bytes()), file(&wrong_name, &config), file("abc/layer.tar", &layer)]);
    refused(&Env::new(), &write(dir.path(), "bad-config.tar", &bad_cfg), &[&wrong_name, "digest mismatch"]);
    // Cut inside the layer.
    let good = raw_tar(&[file("manifest.json", manifest.as_bytes()), file(&cfg, &config), file("abc/layer.tar", &layer)]);
    let cut = &good[..good.len() - 1024 - 600];
    refused(&Env::new(), &write(dir.path(), "cut.tar", cut), &["truncated"]);
}

#[test]
fn a_100_mb_manifest_json_is_refused_by_its_size_within_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    // A header declaring 100 MB, then a sparse file of that length: never read, only measured.
    let mut head = raw_tar(&[file("manifest.json", b"")]);
    head.truncate(512);
    head[124..135].copy_from_slice(format!("{:011o}", 100_000_000u64).as_bytes());
    head[148..156].copy_from_slice(b"        ");
    let sum: u32 = head.iter().map(|&b| b as u32).sum();
    head[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let p = write(dir.path(), "huge.tar", &head);
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(512 + 100_000_256 + 1024).unwrap();
    let env = Env::new();
    refused(&env, &p, &["manifest.json", "100000000 bytes", "limit"]);
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kib=%M"])
        .arg(env!("CARGO_BIN_EXE_ocibundle"))
        .args(["--store", s(&env.store()), "import", &format!("docker-archive:{}", s(&p))])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let kib: u64 = err.lines().find_map(|l| l.strip_prefix("maxrss_kib=")).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("no maxrss in {err}"));
    assert!(kib < 64 * 1024, "import of a 100 MB manifest.json peaked at {kib} KiB");
}

/// `ocibundle ARGS` under GNU time: (success, peak RSS in KiB).
fn peak_rss(args: &[&str]) -> (bool, u64) {
    let out = std::process::Command::new("/usr/bin/time").args(["-f", "maxrss_kib=%M"]).arg(env!("CARGO_BIN_EXE_ocibundle")).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let kib = err.lines().find_map(|l| l.strip_prefix("maxrss_kib=")).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("no maxrss in {err}"));
    (out.status.success(), kib)
}

#[test]
fn a_gzip_bomb_layer_is_streamed_within_64_mib() {
    use std::io::Write;
    use sha2::Digest as _;
    // A layer of 4 GiB of zeros in one tar member, gzipped to about 4 MB; its diff_id is right,
    // so the import must inflate all of it to check it, in bounded memory.
    const SIZE: u64 = 4 << 30;
    let mut tar_head = raw_tar(&[file("zeros", b"")]);
    tar_head.truncate(512);
    tar_head[124..135].copy_from_slice(format!("{SIZE:011o}").as_bytes());
    tar_head[148..156].copy_from_slice(b"        ");
    let sum: u32 = tar_head.iter().map(|&b| b as u32).sum();
    tar_head[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    // Written as gzip members (legal, and what pigz-style writers emit): the tar header, one
    // 64 MiB run of zeros compressed once and repeated, the end-of-archive blocks.
    let member = |b: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(b).unwrap();
        gz.finish().unwrap()
    };
    let run = vec![0u8; 64 << 20];
    let run_gz = member(&run);
    let mut diff = sha2::Sha256::new();
    let mut layer = member(&tar_head);
    diff.update(&tar_head);
    for _ in 0..SIZE / run.len() as u64 {
        layer.extend_from_slice(&run_gz);
        diff.update(&run);
    }
    layer.extend_from_slice(&member(&[0u8; 1024]));
    diff.update([0u8; 1024]);
    assert!(layer.len() < 8 << 20, "the bomb is {} bytes", layer.len());
    let diff_id = format!("sha256:{}", hex::encode(diff.finalize()));
    let config = format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#).into_bytes();
    let cfg = cfg_name(&config);
    let manifest = format!(r#"[{{"Config":"{cfg}","RepoTags":["example.com/bomb:1"],"Layers":["bomb/layer.tar"]}}]"#);
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bomb.tar", &raw_tar(&[file("manifest.json", manifest.as_bytes()), file(&cfg, &config), file("bomb/layer.tar", &layer)]));
    let env = Env::new();
    let src = format!("docker-archive:{}", s(&p));
    let (ok, kib) = peak_rss(&["--store", s(&env.store()), "import", &src]);
    assert!(ok, "the bomb's diff_id is right: the import must succeed");
    assert!(kib < 64 * 1024, "import of a 4 GiB gzip bomb peaked at {kib} KiB");
    // Stored as the archive holds it: the small gzip blob, not 4 GiB.
    let stored: u64 = std::fs::read_dir(env.store().join("blobs/sha256")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(stored < 16 << 20, "the store holds {stored} bytes");
    let (ok, kib) = peak_rss(&["verify", "--deep", &src]);
    assert!(ok && kib < 64 * 1024, "verify --deep of the bomb: ok={ok}, peak {kib} KiB");
}

/// Issue 11, "partial success is kept, for import and push too": of an archive with a good and
/// a bad image, import stores the good one and push pushes it; both exit 1 naming the bad one.
#[test]
fn a_bad_image_does_not_cost_the_good_one_in_import_and_push() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, config, _) = parts("good/layer.tar");
    let cfg = cfg_name(&config);
    // The bad image's config names a diff_id its layer does not have.
    let bad_layer = tar_bytes(&[Entry::File("etc/hello", b"not what the config says\n".to_vec(), 0o644)]);
    let bad_config = format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#, "1".repeat(64)).into_bytes();
    let bad_cfg = cfg_name(&bad_config);
    let manifest = format!(
        r#"[{{"Config":"{cfg}","RepoTags":["example.com/good:1"],"Layers":["good/layer.tar"]}},{{"Config":"{bad_cfg}","RepoTags":["example.com/bad:1"],"Layers":["bad/layer.tar"]}}]"#
    );
    let p = write(dir.path(), "two.tar", &raw_tar(&[
        file("manifest.json", manifest.as_bytes()), file(&cfg, &config), file("good/layer.tar", &layer), file(&bad_cfg, &bad_config), file("bad/layer.tar", &bad_layer),
    ]));
    let src = format!("docker-archive:{}", s(&p));

    let env = Env::new();
    let line = env.fails(&["import", &src]);
    assert!(line.contains("1 of 2 images failed (1 stored") && line.contains("example.com/bad:1") && line.contains("bad/layer.tar"), "{line}");
    assert_eq!(stored_refs(&env), ["example.com/good:1"]);
    env.ok(&["store", "fsck"]);

    let reg = crate::harness::registry::Registry::start(crate::harness::registry::Variant::Plain);
    let to = format!("{}/mirror", reg.host());
    let line = Env::new().fails(&["push", "--from", &src, "--all", "--to", &to]);
    assert!(line.contains("1 of 2 images failed (1 pushed") && line.contains("example.com/bad:1"), "{line}");
    let good = env.json(&["store", "ls"])["images"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(reg.content_digest("mirror/good", "1"), good, "the good image was pushed");
}

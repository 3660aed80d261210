//! Fetch tests against a real registry (docker-registry + skopeo/umoci as peers): fixtures, auth, TLS, multi-arch, concurrency.
//!
//! Each test starts its own registry, so they run in parallel. Expected values always come
//! from the registry (`skopeo inspect --raw docker://…`, `Docker-Content-Digest`), and the
//! resulting store is checked with skopeo (`oci:STORE:REF`, which splits at the first colon,
//! so `oci:/store:127.0.0.1:PORT/test/simple:v1` is the syntax) and umoci.
//! umoci 0.4.7 takes `--image STORE:127.0.0.1:PORT/test/simple:v1` fine, but it cannot unpack
//! zstd layers ("blob is not correct mediatype") nor Docker schema2 manifests: those two
//! fixtures are checked with skopeo only.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::harness::cmd::{sha256, tool, Env};
use crate::harness::fixtures::{
    self, push, push_one, PushMode, Pushed, MT_DOCKER_MANIFEST, MT_INDEX, MT_LAYER_ZSTD, MT_MANIFEST,
};
use crate::harness::registry::{Cert, Registry, Variant};

// ---------------------------------------------------------------------------------------------
// helpers

/// The manifest the registry serves for `reference`, parsed, and its digest.
fn served(reg: &Registry, reference: &str) -> (Value, String) {
    let raw = reg.raw_manifest(reference);
    let v: Value = serde_json::from_slice(&raw).expect("registry manifest is JSON");
    (v, sha256(&raw))
}

/// `HOST/REPO@DIGEST` for a pushed fixture and another digest (e.g. a child manifest).
fn at(p: &Pushed, digest: &str) -> String {
    let host = p.reference.split('/').next().unwrap();
    format!("{host}/{}@{digest}", p.repo)
}

/// The store's index.json.
fn store_index(env: &Env) -> Value {
    let s = fs::read(env.store().join("index.json")).expect("store has index.json");
    serde_json::from_slice(&s).expect("store index.json is JSON")
}

/// index.json entries whose ref name is `reference`.
fn index_entries(env: &Env, reference: &str) -> Vec<Value> {
    store_index(env)["manifests"]
        .as_array()
        .expect("index.json has manifests")
        .iter()
        .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .cloned()
        .collect()
}

/// Asserts index.json has exactly one entry for `reference`, pointing at `digest`.
fn assert_index_points(env: &Env, reference: &str, digest: &str, media_type: &str) {
    let e = index_entries(env, reference);
    assert_eq!(e.len(), 1, "index.json entries for {reference}: {}", store_index(env));
    assert_eq!(e[0]["digest"], digest, "index.json entry for {reference}");
    assert_eq!(e[0]["mediaType"], media_type, "index.json entry for {reference}");
}


/// Asserts the blob is in the store with the right content.
fn assert_blob(env: &Env, digest: &str) {
    let data = fs::read(env.blob_path(digest)).unwrap_or_else(|e| panic!("blob {digest} not in store: {e}"));
    assert_eq!(sha256(&data), digest, "stored blob content");
}

/// `oci:STORE:REF`
fn oci(env: &Env, reference: &str) -> String {
    format!("oci:{}:{reference}", env.store().display())
}

/// skopeo reads the stored manifest with the registry's digest and can copy the image out.
fn assert_skopeo_reads(env: &Env, reference: &str, digest: &str, all: bool) {
    let raw = Command::new("skopeo").args(["inspect", "--raw", &oci(env, reference)]).output().unwrap();
    assert!(raw.status.success(), "skopeo inspect --raw {}: {}", oci(env, reference), String::from_utf8_lossy(&raw.stderr));
    assert_eq!(sha256(&raw.stdout), digest, "digest of the manifest skopeo reads from the store");
    let out = tempfile::tempdir().unwrap();
    let dest = format!("dir:{}", out.path().join("img").display());
    let mut args = vec!["copy", "--quiet"];
    if all {
        args.push("--all");
    }
    let src = oci(env, reference);
    args.push(&src);
    args.push(&dest);
    tool("skopeo", &args);
    assert!(out.path().join("img/manifest.json").exists(), "skopeo copy wrote no manifest.json");
}

/// `umoci unpack --image STORE:REF` into a new bundle; returns (bundle tempdir, rootfs).
fn umoci_unpack(env: &Env, reference: &str) -> (tempfile::TempDir, PathBuf) {
    let b = tempfile::tempdir().unwrap();
    let bundle = b.path().join("bundle");
    let image = format!("{}:{reference}", env.store().display());
    tool("umoci", &["unpack", "--image", &image, bundle.to_str().unwrap()]);
    let rootfs = bundle.join("rootfs");
    (b, rootfs)
}

fn as_u64(v: &Value, what: &str) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{what} is not an unsigned number: {v}"))
}

/// Asserts one JSON `manifests[]` entry matches the manifest the registry serves.
fn assert_manifest_json(m: &Value, served: &Value, digest: &str, platform: &str) {
    assert_eq!(m["digest"], digest, "manifest digest in {m}");
    assert_eq!(m["media_type"], served["mediaType"], "manifest media_type in {m}");
    assert_eq!(m["platform"], platform, "platform in {m}");
    let c = &m["config"];
    assert_eq!(c["digest"], served["config"]["digest"], "config digest");
    assert_eq!(c["size"], served["config"]["size"], "config size");
    assert_eq!(c["media_type"], served["config"]["mediaType"], "config media_type");
    let got = m["layers"].as_array().unwrap_or_else(|| panic!("no layers array in {m}"));
    let want = served["layers"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "layer count in {m}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["digest"], w["digest"], "layer digest");
        assert_eq!(g["size"], w["size"], "layer size");
        assert_eq!(g["media_type"], w["mediaType"], "layer media_type");
    }
}

/// Sum of config + layer sizes of a served manifest, and their count.
fn blob_total(served: &Value) -> (u64, u64) {
    let mut n = 1;
    let mut bytes = as_u64(&served["config"]["size"], "config size");
    for l in served["layers"].as_array().unwrap() {
        n += 1;
        bytes += as_u64(&l["size"], "layer size");
    }
    (n, bytes)
}

fn assert_counts(img: &Value, fetched: (u64, u64), present: (u64, u64)) {
    let got = (
        (as_u64(&img["blobs_fetched"], "blobs_fetched"), as_u64(&img["bytes_fetched"], "bytes_fetched")),
        (as_u64(&img["blobs_present"], "blobs_present"), as_u64(&img["bytes_present"], "bytes_present")),
    );
    assert_eq!(got, (fetched, present), "((blobs, bytes) fetched, (blobs, bytes) present) in {img}");
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// One image of a successful single-image `fetch --json`, checked against the top-level totals.
fn single_image(doc: &Value, reference: &str) -> Value {
    let imgs = doc["images"].as_array().unwrap_or_else(|| panic!("no images array: {doc}"));
    assert_eq!(imgs.len(), 1, "images: {doc}");
    let img = imgs[0].clone();
    assert_eq!(img["reference"], reference, "reference in {img}");
    for k in ["blobs_fetched", "bytes_fetched", "blobs_present", "bytes_present"] {
        assert_eq!(doc[k], img[k], "top-level {k} equals the only image's");
    }
    img
}

/// Fetches one fixture into a fresh Env with --json and checks JSON, index.json, blobs and
/// skopeo against what the registry serves. Returns the env and the image JSON.
fn fetch_and_check_image(reg: &Registry, p: &Pushed, extra: &[&str]) -> (Env, Value) {
    let env = Env::new();
    let (served_m, digest) = served(reg, &p.reference);
    assert_eq!(digest, p.digest, "skopeo's raw manifest hashes to the Docker-Content-Digest");
    let mut args = vec!["fetch"];
    args.extend_from_slice(extra);
    args.push(&p.reference);
    let doc = env.json(&args);
    let img = single_image(&doc, &p.reference);
    assert_eq!(img["digest"], digest, "digest in {img}");
    assert_eq!(img["media_type"], served_m["mediaType"], "media_type in {img}");
    assert!(img.get("index_digest").is_none_or(Value::is_null), "index_digest for a plain image: {img}");
    let ms = img["manifests"].as_array().unwrap_or_else(|| panic!("no manifests in {img}"));
    assert_eq!(ms.len(), 1, "manifests in {img}");
    assert_manifest_json(&ms[0], &served_m, &digest, "linux/amd64");
    let (n, bytes) = blob_total(&served_m);
    assert_counts(&img, (n, bytes), (0, 0));

    assert!(env.store().join("oci-layout").exists(), "store has oci-layout");
    assert_index_points(&env, &p.reference, &digest, served_m["mediaType"].as_str().unwrap());
    assert_blob(&env, &digest);
    assert_blob(&env, served_m["config"]["digest"].as_str().unwrap());
    for l in served_m["layers"].as_array().unwrap() {
        assert_blob(&env, l["digest"].as_str().unwrap());
    }
    assert_layers_match_diff_ids(&env, &served_m);
    // containers/image's oci: transport only sees index.json entries of OCI media types, so
    // skopeo cannot read a stored Docker schema2 manifest (kept byte-exact, digest unchanged).
    if served_m["mediaType"] == MT_MANIFEST {
        assert_skopeo_reads(&env, &p.reference, &digest, false);
    }
    (env, img)
}

/// Every stored layer decompresses (gzip or zstd, by media type) to the diff_id its config names.
fn assert_layers_match_diff_ids(env: &Env, manifest: &Value) {
    use std::io::Read;
    let cfg: Value = serde_json::from_slice(&fs::read(env.blob_path(manifest["config"]["digest"].as_str().unwrap())).unwrap())
        .expect("config is JSON");
    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().expect("config has rootfs.diff_ids");
    assert_eq!(layers.len(), diff_ids.len(), "layers vs diff_ids");
    for (l, want) in layers.iter().zip(diff_ids) {
        let data = fs::read(env.blob_path(l["digest"].as_str().unwrap())).unwrap();
        let mt = l["mediaType"].as_str().unwrap();
        let tar = if mt.ends_with("zstd") {
            zstd::decode_all(&data[..]).unwrap()
        } else {
            assert!(mt.ends_with("gzip"), "unexpected layer media type {mt}");
            let mut v = Vec::new();
            flate2::read::GzDecoder::new(&data[..]).read_to_end(&mut v).unwrap();
            v
        };
        assert_eq!(sha256(&tar), *want, "diff_id of layer {}", l["digest"]);
    }
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).map(|m| m.file_type().is_symlink()).unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// harness

/// Harness check: every fixture pushes to every registry variant and the registry serves it.
#[test]
fn harness_pushes_fixtures_to_every_variant() {
    for v in [Variant::Plain, Variant::Auth, Variant::Tls, Variant::AuthTls] {
        let reg = Registry::start(v);
        let f = fixtures::push_all(&reg);
        for p in [&f.simple, &f.schema2, &f.zstd, &f.multi, &f.shared] {
            let (m, digest) = served(&reg, &p.reference);
            assert_eq!(digest, p.digest, "{v:?} {}", p.reference);
            let want = if p.repo == "test/schema2" {
                MT_DOCKER_MANIFEST
            } else if p.repo == "test/multi" {
                MT_INDEX
            } else {
                MT_MANIFEST
            };
            assert_eq!(m["mediaType"], want, "{v:?} {}", p.reference);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// plain registry: each fixture

#[test]
fn fetch_simple_gives_a_valid_oci_layout() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "simple");
    let (env, img) = fetch_and_check_image(&reg, &p, &[]);
    assert_eq!(img["media_type"], MT_MANIFEST);

    // umoci unpacks it: files, symlink, hard link, whiteout applied.
    let (_b, rootfs) = umoci_unpack(&env, &p.reference);
    assert_eq!(fs::read_to_string(rootfs.join("etc/hostname")).unwrap(), "fixture\n");
    assert_eq!(fs::read_to_string(rootfs.join("etc/motd")).unwrap(), "simple v1\n");
    assert!(is_symlink(&rootfs.join("bin/hi")), "bin/hi is a symlink");
    assert_eq!(fs::read_link(rootfs.join("bin/hi")).unwrap(), Path::new("hello"));
    use std::os::unix::fs::MetadataExt;
    let a = fs::metadata(rootfs.join("bin/hello")).unwrap();
    let b = fs::metadata(rootfs.join("bin/hello2")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "bin/hello2 is a hard link to bin/hello");
    assert_eq!(a.mode() & 0o777, 0o755);
    assert!(!rootfs.join("etc/x").exists(), "etc/x is whited out");
    assert!(!rootfs.join("etc/.wh.x").exists(), "whiteout marker is not a file");
}

#[test]
fn fetch_simple_text_output() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "simple");
    let (served_m, digest) = served(&reg, &p.reference);
    let (_, bytes) = blob_total(&served_m);
    let env = Env::new();
    let out = env.ok(&["fetch", &p.reference]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines, vec![format!("{} {digest} fetched {bytes} present 0", p.reference)], "stdout: {out}");
    let again = env.ok(&["fetch", &p.reference]);
    let lines: Vec<&str> = again.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines, vec![format!("{} {digest} fetched 0 present {bytes}", p.reference)], "stdout: {again}");
}

#[test]
fn fetch_schema2_keeps_docker_manifest() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "schema2");
    let (env, img) = fetch_and_check_image(&reg, &p, &[]);
    assert_eq!(img["media_type"], MT_DOCKER_MANIFEST);
    assert_eq!(img["digest"], reg.content_digest(&p.repo, &p.tag), "digest equals Docker-Content-Digest");
    // The stored manifest is the registry's bytes, untouched (skopeo cannot read it: see above).
    let stored = fs::read(env.blob_path(&p.digest)).unwrap();
    assert_eq!(stored, reg.raw_manifest(&p.reference), "stored schema2 manifest bytes");
    assert_eq!(img["manifests"][0]["config"]["media_type"], crate::harness::fixtures::MT_DOCKER_CONFIG);
}

#[test]
fn fetch_zstd_layer() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "zstd");
    // Checks skopeo and each layer against its diff_id (umoci 0.4.7 cannot unpack zstd).
    let (_env, img) = fetch_and_check_image(&reg, &p, &[]);
    let layers = img["manifests"][0]["layers"].as_array().unwrap();
    assert!(layers.iter().any(|l| l["media_type"] == MT_LAYER_ZSTD), "a zstd layer in {img}");
}

#[test]
fn repeat_fetch_fetches_nothing() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "simple");
    let (env, _) = fetch_and_check_image(&reg, &p, &[]);
    let (served_m, digest) = served(&reg, &p.reference);
    let (n, bytes) = blob_total(&served_m);
    let doc = env.json(&["fetch", &p.reference]);
    let img = single_image(&doc, &p.reference);
    assert_eq!(img["digest"], digest);
    assert_counts(&img, (0, 0), (n, bytes));
    assert_index_points(&env, &p.reference, &digest, MT_MANIFEST);
}

#[test]
fn shared_layer_is_present_after_simple() {
    let reg = Registry::start(Variant::Plain);
    let simple = push_one(&reg, "simple");
    let shared = push_one(&reg, "shared");
    let (env, _) = fetch_and_check_image(&reg, &simple, &[]);
    let (sm, _) = served(&reg, &simple.reference);
    let (hm, hdigest) = served(&reg, &shared.reference);
    let common = &sm["layers"][0];
    assert_eq!(hm["layers"][0]["digest"], common["digest"], "fixtures share the first layer");
    let common_size = as_u64(&common["size"], "size");
    let (n, bytes) = blob_total(&hm);

    let doc = env.json(&["fetch", &shared.reference]);
    let img = single_image(&doc, &shared.reference);
    assert_eq!(img["digest"], hdigest);
    assert_counts(&img, (n - 1, bytes - common_size), (1, common_size));
    // Both references are in the store and readable.
    assert_index_points(&env, &simple.reference, &simple.digest, MT_MANIFEST);
    assert_index_points(&env, &shared.reference, &hdigest, MT_MANIFEST);
    assert_skopeo_reads(&env, &shared.reference, &hdigest, false);
    assert_skopeo_reads(&env, &simple.reference, &simple.digest, false);
}

#[test]
fn shared_layer_in_one_run_counts_fetched_once() {
    let reg = Registry::start(Variant::Plain);
    let simple = push_one(&reg, "simple");
    let shared = push_one(&reg, "shared");
    let (sm, _) = served(&reg, &simple.reference);
    let (hm, _) = served(&reg, &shared.reference);
    let common_size = as_u64(&sm["layers"][0]["size"], "size");
    let (sn, sbytes) = blob_total(&sm);
    let (hn, hbytes) = blob_total(&hm);

    let env = Env::new();
    let doc = env.json(&["fetch", &simple.reference, &shared.reference]);
    let imgs = doc["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 2, "{doc}");
    assert_eq!(imgs[0]["reference"], simple.reference);
    assert_eq!(imgs[1]["reference"], shared.reference);
    assert_counts(&imgs[0], (sn, sbytes), (0, 0));
    assert_counts(&imgs[1], (hn - 1, hbytes - common_size), (1, common_size));
    assert_counts(&doc, (sn + hn - 1, sbytes + hbytes - common_size), (1, common_size));
}

// ---------------------------------------------------------------------------------------------
// multi-arch

/// (index JSON, index digest, amd64 child digest, arm64 child digest)
fn served_index(reg: &Registry, p: &Pushed) -> (Value, String, String, String) {
    let (idx, digest) = served(reg, &p.reference);
    assert_eq!(idx["mediaType"], MT_INDEX);
    let child = |arch: &str| {
        idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("no {arch} in {idx}"))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (child("amd64"), child("arm64"));
    (idx, digest, a, b)
}

fn fetch_one_platform(reg: &Registry, p: &Pushed, args: &[&str], want_arm: bool) {
    let (_, index_digest, amd, arm) = served_index(reg, p);
    let (chosen, other, platform) = if want_arm { (&arm, &amd, "linux/arm64/v8") } else { (&amd, &arm, "linux/amd64") };
    let (cm, _) = served(reg, &at(p, chosen));
    let (om, _) = served(reg, &at(p, other));

    let env = Env::new();
    let mut a = vec!["fetch"];
    a.extend_from_slice(args);
    a.push(&p.reference);
    let doc = env.json(&a);
    let img = single_image(&doc, &p.reference);
    assert_eq!(img["digest"], *chosen, "digest is the {platform} child: {img}");
    assert_eq!(img["index_digest"], index_digest, "index_digest: {img}");
    assert_eq!(img["media_type"], MT_MANIFEST);
    let ms = img["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 1, "one platform kept: {img}");
    assert_manifest_json(&ms[0], &cm, chosen, platform);
    assert_counts(&img, blob_total(&cm), (0, 0));

    assert_index_points(&env, &p.reference, chosen, MT_MANIFEST);
    for l in cm["layers"].as_array().unwrap() {
        assert_blob(&env, l["digest"].as_str().unwrap());
    }
    for l in om["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        assert!(!env.blob_path(d).exists(), "layer {d} of the other platform was stored");
    }
    assert_skopeo_reads(&env, &p.reference, chosen, false);
    let (_b, rootfs) = umoci_unpack(&env, &p.reference);
    let want = if want_arm { "arm64 v8\n" } else { "amd64\n" };
    assert_eq!(fs::read_to_string(rootfs.join("etc/arch")).unwrap(), want);
}

#[test]
fn multi_default_platform_is_linux_amd64() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "multi");
    fetch_one_platform(&reg, &p, &[], false);
}

#[test]
fn multi_platform_arm64_v8() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "multi");
    fetch_one_platform(&reg, &p, &["--platform", "linux/arm64/v8"], true);
}

#[test]
fn multi_platform_arm64_without_variant() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "multi");
    fetch_one_platform(&reg, &p, &["--platform", "linux/arm64"], true);
}

#[test]
fn multi_platform_explicit_amd64() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "multi");
    fetch_one_platform(&reg, &p, &["--platform", "linux/amd64"], false);
}

#[test]
fn multi_unknown_platform_fails() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "multi");
    let env = Env::new();
    let line = env.fails(&["fetch", "--platform", "linux/s390x", &p.reference]);
    assert!(line.contains(&p.reference), "error line names the image: {line}");
    assert!(index_entries(&env, &p.reference).is_empty() || !env.store().join("index.json").exists());
}

#[test]
fn multi_all_platforms_keeps_index_and_children() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "multi");
    let (_, index_digest, amd, arm) = served_index(&reg, &p);
    let (am, _) = served(&reg, &at(&p, &amd));
    let (rm, _) = served(&reg, &at(&p, &arm));

    let env = Env::new();
    let doc = env.json(&["fetch", "--all-platforms", &p.reference]);
    let img = single_image(&doc, &p.reference);
    assert_eq!(img["digest"], index_digest, "digest is the index: {img}");
    assert_eq!(img["media_type"], MT_INDEX);
    assert!(img.get("index_digest").is_none_or(Value::is_null), "no index_digest when nothing was picked: {img}");
    let ms = img["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2, "both children: {img}");
    let find = |d: &str| ms.iter().find(|m| m["digest"] == d).unwrap_or_else(|| panic!("no {d} in {img}"));
    assert_manifest_json(find(&amd), &am, &amd, "linux/amd64");
    assert_manifest_json(find(&arm), &rm, &arm, "linux/arm64/v8");
    let ((an, ab), (rn, rb)) = (blob_total(&am), blob_total(&rm));
    assert_counts(&img, (an + rn, ab + rb), (0, 0));

    assert_index_points(&env, &p.reference, &index_digest, MT_INDEX);
    for d in [&index_digest, &amd, &arm] {
        assert_blob(&env, d);
    }
    for m in [&am, &rm] {
        assert_blob(&env, m["config"]["digest"].as_str().unwrap());
        for l in m["layers"].as_array().unwrap() {
            assert_blob(&env, l["digest"].as_str().unwrap());
        }
    }
    assert_layers_match_diff_ids(&env, &am);
    assert_layers_match_diff_ids(&env, &rm);
    assert_skopeo_reads(&env, &p.reference, &index_digest, true);
}

// ---------------------------------------------------------------------------------------------
// references

#[test]
fn digest_pinned_reference() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "simple");
    let pinned = p.pinned();
    let env = Env::new();
    let doc = env.json(&["fetch", &pinned]);
    let img = single_image(&doc, &pinned);
    assert_eq!(img["digest"], p.digest);
    assert_index_points(&env, &pinned, &p.digest, MT_MANIFEST);
    assert_skopeo_reads(&env, &pinned, &p.digest, false);
}

#[test]
fn digest_pinned_to_a_wrong_digest_fails() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "simple");
    let bogus = at(&p, &sha256(b"no such manifest"));
    let env = Env::new();
    let line = env.fails(&["fetch", &bogus]);
    assert!(line.contains(&bogus), "error line names the reference: {line}");
}

#[test]
fn unknown_tag_and_unknown_repository_fail() {
    let reg = Registry::start(Variant::Plain);
    let p = push_one(&reg, "simple");
    let env = Env::new();
    for r in [format!("{}/test/simple:nope", reg.host()), format!("{}/test/nothere:v1", reg.host())] {
        let line = env.fails(&["fetch", &r]);
        assert!(line.contains(&r), "error line names the reference {r}: {line}");
        if env.store().join("index.json").exists() {
            assert!(index_entries(&env, &r).is_empty(), "no index.json entry for failed {r}");
        }
    }
    // The store still works for a good reference afterwards.
    env.ok(&["fetch", &p.reference]);
    assert_index_points(&env, &p.reference, &p.digest, MT_MANIFEST);
}

#[test]
fn images_file_with_comments_and_blank_lines() {
    let reg = Registry::start(Variant::Plain);
    let simple = push_one(&reg, "simple");
    let zstd = push_one(&reg, "zstd");
    let env = Env::new();
    let list = env.path().join("images.txt");
    fs::write(
        &list,
        format!("# images for the test\n\n   \n{}\n  # indented comment\n\n{}   # trailing comment\n\n", simple.reference, zstd.reference),
    )
    .unwrap();
    let doc = env.json(&["fetch", "--images", list.to_str().unwrap()]);
    let refs: Vec<&Value> = doc["images"].as_array().unwrap().iter().map(|i| &i["reference"]).collect();
    assert_eq!(refs, vec![&Value::from(simple.reference.clone()), &Value::from(zstd.reference.clone())], "{doc}");
    assert_index_points(&env, &simple.reference, &simple.digest, MT_MANIFEST);
    assert_index_points(&env, &zstd.reference, &zstd.digest, MT_MANIFEST);
}

#[test]
fn images_from_stdin() {
    let reg = Registry::start(Variant::Plain);
    let simple = push_one(&reg, "simple");
    let env = Env::new();
    let mut child = env
        .cmd()
        .args(["fetch", "--json", "--images", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("# from stdin\n\n{}\n", simple.reference).as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "fetch --images - failed: {}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    single_image(&doc, &simple.reference);
    assert_index_points(&env, &simple.reference, &simple.digest, MT_MANIFEST);
}

// ---------------------------------------------------------------------------------------------
// htpasswd registry

fn assert_no_secret(o: &Output, secrets: &[&str]) {
    let all = text(o);
    for s in secrets {
        assert!(!all.contains(s), "a password appears in the output:\n{all}");
    }
}

#[test]
fn auth_without_creds_fails() {
    let reg = Registry::start(Variant::Auth);
    let p = push_one(&reg, "simple");
    let env = Env::new();
    let line = env.fails(&["fetch", &p.reference]);
    assert!(line.contains(&p.reference), "error line names the image: {line}");
    assert!(!line.contains(&reg.pass), "{line}");
}

#[test]
fn auth_with_creds() {
    let reg = Registry::start(Variant::Auth);
    let p = push_one(&reg, "simple");
    let creds = reg.creds();
    let (env, _) = fetch_and_check_image(&reg, &p, &["--creds", &creds]);
    let o = env.run(&["fetch", "--creds", &creds, &p.reference]);
    assert!(o.status.success(), "{}", text(&o));
    assert_no_secret(&o, &[&reg.pass]);
}

#[test]
fn auth_wrong_password_fails_without_leaking_it() {
    let reg = Registry::start(Variant::Auth);
    let p = push_one(&reg, "simple");
    let env = Env::new();
    let wrong = "Wr0ng-pa55-b8e21d";
    let creds = format!("{}:{wrong}", reg.user);
    let line = env.fails(&["fetch", "--creds", &creds, &p.reference]);
    assert!(line.contains(&p.reference), "error line names the image: {line}");
    let o = env.run(&["fetch", "--creds", &creds, &p.reference]);
    assert_eq!(o.status.code(), Some(1));
    assert_no_secret(&o, &[wrong, &reg.pass]);
    let o = env.run(&["fetch", "--json", "--creds", &creds, &p.reference]);
    assert_eq!(o.status.code(), Some(1));
    assert_no_secret(&o, &[wrong, &reg.pass]);
}

#[test]
fn auth_with_authfile_from_skopeo_login() {
    let reg = Registry::start(Variant::Auth);
    let p = push_one(&reg, "simple");
    let env = Env::new();
    let authfile = env.path().join("auth.json");
    tool(
        "skopeo",
        &["login", "--authfile", authfile.to_str().unwrap(), "--tls-verify=false", "-u", &reg.user, "-p", &reg.pass, &reg.host()],
    );
    let o = env.run(&["fetch", "--json", "--authfile", authfile.to_str().unwrap(), &p.reference]);
    assert!(o.status.success(), "fetch --authfile failed: {}", text(&o));
    assert_no_secret(&o, &[&reg.pass]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(single_image(&doc, &p.reference)["digest"], p.digest);
    assert_skopeo_reads(&env, &p.reference, &p.digest, false);
}

fn docker_config(reg: &Registry) -> String {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(reg.creds());
    serde_json::json!({"auths": {reg.host(): {"auth": auth}}}).to_string()
}

#[test]
fn auth_with_docker_config_in_home() {
    let reg = Registry::start(Variant::Auth);
    let p = push_one(&reg, "simple");
    let env = Env::new();
    let cfg = env.path().join("home/.docker/config.json");
    fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    fs::write(&cfg, docker_config(&reg)).unwrap();
    let doc = env.json(&["fetch", &p.reference]);
    assert_eq!(single_image(&doc, &p.reference)["digest"], p.digest);
    assert_skopeo_reads(&env, &p.reference, &p.digest, false);
}

#[test]
fn auth_with_registry_auth_file_env() {
    let reg = Registry::start(Variant::Auth);
    let p = push_one(&reg, "simple");
    let env = Env::new();
    let f = env.path().join("elsewhere.json");
    fs::write(&f, docker_config(&reg)).unwrap();
    let o = env.cmd().args(["fetch", "--json", &p.reference]).env("REGISTRY_AUTH_FILE", &f).output().unwrap();
    assert!(o.status.success(), "fetch with REGISTRY_AUTH_FILE failed: {}", text(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(single_image(&doc, &p.reference)["digest"], p.digest);
}

#[test]
fn auth_with_xdg_runtime_auth_json() {
    let reg = Registry::start(Variant::Auth);
    let p = push_one(&reg, "simple");
    let env = Env::new();
    let f = env.path().join("home/run/containers/auth.json");
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    fs::write(&f, docker_config(&reg)).unwrap();
    let doc = env.json(&["fetch", &p.reference]);
    assert_eq!(single_image(&doc, &p.reference)["digest"], p.digest);
}

// ---------------------------------------------------------------------------------------------
// TLS registry

#[test]
fn tls_without_cert_dir_fails() {
    let reg = Registry::start(Variant::Tls);
    let p = push_one(&reg, "simple");
    let env = Env::new();
    let line = env.fails(&["fetch", &p.reference]);
    let l = line.to_lowercase();
    assert!(l.contains("certificate") || l.contains("tls"), "error line mentions certificate/TLS: {line}");
    assert!(line.contains(&p.reference), "error line names the image: {line}");
}

#[test]
fn tls_with_cert_dir() {
    let reg = Registry::start(Variant::Tls);
    let p = push_one(&reg, "simple");
    let cd = reg.cert_dir();
    fetch_and_check_image(&reg, &p, &["--cert-dir", cd.to_str().unwrap()]);
}

/// Same as `tls_with_cert_dir` with a CA-signed server certificate instead of a self-signed one.
#[test]
fn tls_with_cert_dir_ca_signed_server_cert() {
    let reg = Registry::start_with(Variant::Tls, Cert::CaSigned);
    let p = push_one(&reg, "simple");
    let cd = reg.cert_dir();
    fetch_and_check_image(&reg, &p, &["--cert-dir", cd.to_str().unwrap()]);
    let env = Env::new();
    let line = env.fails(&["fetch", &p.reference]);
    assert!(line.to_lowercase().contains("certificate"), "error line mentions the certificate: {line}");
}

#[test]
fn tls_verify_false() {
    let reg = Registry::start(Variant::Tls);
    let p = push_one(&reg, "simple");
    fetch_and_check_image(&reg, &p, &["--tls-verify=false"]);
}

#[test]
fn auth_tls_with_creds_and_cert_dir() {
    let reg = Registry::start(Variant::AuthTls);
    let p = push_one(&reg, "multi");
    let cd = reg.cert_dir();
    let creds = reg.creds();
    let env = Env::new();
    let o = env.run(&["fetch", "--json", "--all-platforms", "--creds", &creds, "--cert-dir", cd.to_str().unwrap(), &p.reference]);
    assert!(o.status.success(), "{}", text(&o));
    assert_no_secret(&o, &[&reg.pass]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let img = single_image(&doc, &p.reference);
    assert_eq!(img["digest"], p.digest);
    assert_skopeo_reads(&env, &p.reference, &p.digest, true);
    // Without creds it fails even with the right CA.
    let env2 = Env::new();
    let line = env2.fails(&["fetch", "--cert-dir", cd.to_str().unwrap(), &p.reference]);
    assert!(line.contains(&p.reference), "{line}");
}

// ---------------------------------------------------------------------------------------------
// concurrency

#[test]
fn two_concurrent_fetches_share_one_store() {
    let reg = Registry::start(Variant::Plain);
    let work = tempfile::tempdir().unwrap();
    let (layout, img) = fixtures::big_layout(&work.path().join("layout"), 24 << 20, 7);
    let digest = push(&reg, &layout, "big", "test/big:v1", PushMode::Oci);
    assert_eq!(digest, img.manifest.digest);
    let reference = format!("{}/test/big:v1", reg.host());

    let env = Env::new();
    let spawn = || {
        env.cmd()
            .args(["fetch", "--json", &reference])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ocibundle")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for o in [&a, &b] {
        assert!(o.status.success(), "concurrent fetch failed: {}", text(o));
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(single_image(&doc, &reference)["digest"], digest);
    }
    assert_index_points(&env, &reference, &digest, MT_MANIFEST);
    for l in &img.layers {
        assert_blob(&env, &l.digest);
    }
    assert_blob(&env, &img.config.as_ref().unwrap().digest);
    let fsck = env.json(&["store", "fsck"]);
    assert_eq!(fsck["problems"], Value::Array(vec![]), "fsck: {fsck}");
    assert!(as_u64(&fsck["refs_checked"], "refs_checked") >= 1, "fsck: {fsck}");
    // No partial download left behind by either process.
    let tmp = env.store().join(".ocibundle/tmp");
    if tmp.exists() {
        let left: Vec<_> = fs::read_dir(&tmp).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "leftover partial downloads: {left:?}");
    }
    assert_skopeo_reads(&env, &reference, &digest, false);
    let (_b, rootfs) = umoci_unpack(&env, &reference);
    assert_eq!(fs::metadata(rootfs.join("data/blob")).unwrap().len(), 24 << 20);
}

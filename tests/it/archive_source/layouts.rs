//! OCI layouts as a source: `oci:DIR[:REF]` and `oci-archive:FILE[:REF]` written by skopeo
//! (single images and a multi-platform index), and our own store read as a layout; every digest
//! kept. Broken layouts (unknown version, a symlinked or altered blob) refused in one line.
use super::*;
use crate::harness::cmd::tool;
use crate::harness::fixtures;
use crate::harness::registry::{Registry, Variant};

#[test]
fn skopeo_layouts_and_archives_import_with_every_digest_kept() {
    let reg = Registry::start(Variant::Plain);
    let simple = fixtures::push_one(&reg, "simple");
    let multi = fixtures::push_one(&reg, "multi");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("site-images");
    let archive = dir.path().join("simple.tar");
    tool("skopeo", &["copy", "-q", "--src-tls-verify=false", &format!("docker://{}", simple.reference), &format!("oci:{}:v1", s(&layout))]);
    tool("skopeo", &["copy", "-q", "--all", "--src-tls-verify=false", &format!("docker://{}", multi.reference), &format!("oci:{}:multi", s(&layout))]);
    tool("skopeo", &["copy", "-q", "--src-tls-verify=false", &format!("docker://{}", simple.reference), &format!("oci-archive:{}:v1", s(&archive))]);

    let env = Env::new();
    let doc = env.json(&["import", &format!("oci:{}", s(&layout))]);
    assert_eq!(
        images_by(&doc, "digest"),
        [("localhost/site-images:multi".to_string(), multi.digest.clone()), ("localhost/site-images:v1".to_string(), simple.digest.clone())],
        "{doc}"
    );
    env.ok(&["store", "fsck"]);
    // The index and every platform came along: skopeo reads them all back from the store.
    let raw = tool("skopeo", &["inspect", "--raw", &format!("oci:{}:localhost/site-images:multi", s(&env.store()))]);
    assert_eq!(crate::harness::cmd::sha256(raw.as_bytes()), multi.digest);

    // One image of the archive by its tag; its blobs are all present already.
    let doc = env.json(&["import", &format!("oci-archive:{}:v1", s(&archive))]);
    assert_eq!(doc["images"][0]["digest"], simple.digest.as_str());
    assert_eq!(doc["images"][0]["reference"], "localhost/simple:v1");
    assert_eq!(doc["blobs_imported"], 0, "{doc}");

    // Our own store is a layout too: full names are kept as they are.
    let env2 = Env::new();
    env2.ok(&["fetch", &simple.reference]);
    let env3 = Env::new();
    let doc = env3.json(&["import", &format!("oci:{}", s(&env2.store()))]);
    assert_eq!(doc["images"][0]["reference"], simple.reference.as_str());
    assert_eq!(doc["images"][0]["digest"], simple.digest.as_str());
}

#[test]
fn broken_layouts_are_refused_with_nothing_stored() {
    let reg = Registry::start(Variant::Plain);
    let simple = fixtures::push_one(&reg, "simple");
    let dir = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let l = dir.path().join(name);
        tool("skopeo", &["copy", "-q", "--src-tls-verify=false", &format!("docker://{}", simple.reference), &format!("oci:{}:v1", s(&l))]);
        l
    };
    let layer = simple.image.layers[0].digest.trim_start_matches("sha256:").to_string();
    let check = |l: &std::path::Path, want: &[&str]| {
        let env = Env::new();
        let line = env.fails(&["import", &format!("oci:{}", s(l))]);
        for w in want {
            assert!(line.contains(w), "{line:?} should name {w:?}");
        }
        assert!(stored_refs(&env).is_empty(), "{line}: a reference was stored");
    };

    let v9 = fresh("v9");
    std::fs::write(v9.join("oci-layout"), br#"{"imageLayoutVersion":"9.9.9"}"#).unwrap();
    check(&v9, &["oci-layout", "9.9.9"]);

    let link = fresh("link");
    let blob = link.join("blobs/sha256").join(&layer);
    std::fs::rename(&blob, dir.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &blob).unwrap();
    check(&link, &[&layer, "not a regular file"]);

    let altered = fresh("altered");
    let blob = altered.join("blobs/sha256").join(&layer);
    let mut data = std::fs::read(&blob).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 1;
    std::fs::write(&blob, &data).unwrap();
    check(&altered, &[&layer, "digest mismatch"]);

    let cut = fresh("cut");
    let blob = cut.join("blobs/sha256").join(&layer);
    std::fs::OpenOptions::new().write(true).open(&blob).unwrap().set_len(10).unwrap();
    check(&cut, &[&layer, "size mismatch"]);

    let none = fresh("none");
    check(std::path::Path::new(&format!("{}:nosuchtag", s(&none))), &["nosuchtag"]);
}

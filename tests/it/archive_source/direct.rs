//! Archives and layouts read directly, with no store in between: `bundle --from
//! docker-archive:FILE`, `size --from`, `push --from oci:DIR` and `export --from
//! oci-archive:FILE` take every Source, as `import` does (issue 9: a new format is a sibling).
use super::*;
use crate::harness::cmd::{sha256, tool};
use crate::harness::fixtures;
use crate::harness::peers::Podman;
use crate::harness::registry::{Registry, Variant};

#[test]
fn a_docker_archive_is_bundled_without_a_store_and_keeps_its_image_ids() {
    let reg = Registry::start(Variant::Plain);
    let simple = fixtures::push_one(&reg, "simple");
    let shared = fixtures::push_one(&reg, "shared");
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.tar");
    let b = dir.path().join("b.tar");
    tool("skopeo", &["copy", "-q", "--src-tls-verify=false", &format!("docker://{}", simple.reference), &format!("docker-archive:{}:example.com/team/simple:1", s(&a))]);
    tool("skopeo", &["copy", "-q", "--src-tls-verify=false", &format!("docker://{}", shared.reference), &format!("docker-archive:{}:example.com/team/shared:1", s(&b))]);

    // No store exists: the bundle is written straight from the archive.
    let env = Env::new();
    let bundle = dir.path().join("a.bundle");
    let from = format!("docker-archive:{}", s(&a));
    let size = env.json(&["size", "--from", &from, "--all"]);
    let out = env.json(&["bundle", "--from", &from, "--all", "-o", s(&bundle)]);
    assert!(!env.store().exists(), "bundle --from must not create a store");
    assert_eq!(out["bytes"], size["bundle_bytes"], "size predicts the bundle: {size}\n{out}");
    assert_eq!(std::fs::metadata(&bundle).unwrap().len(), out["bytes"].as_u64().unwrap());
    env.ok(&["verify", s(&bundle)]);

    // The bundle restores the archive's image: same image ID, and podman loads it.
    let env2 = Env::new();
    env2.ok(&["import", s(&bundle)]);
    let back = dir.path().join("back.tar");
    env2.ok(&["export", "--docker-archive", s(&back), "--all"]);
    let podman = Podman::new();
    podman.load(&back);
    let ids: Vec<String> = podman.images().into_iter().map(|(id, _)| id.trim_start_matches("sha256:").to_string()).collect();
    let want = simple.image.config.as_ref().unwrap().digest.trim_start_matches("sha256:").to_string();
    assert!(ids.contains(&want), "podman holds {ids:?}, want image ID {want}");

    // A second archive sharing a layer, bundled as a delta against the first bundle: only what
    // the first lacks is carried.
    let delta = dir.path().join("delta.bundle");
    let d = env.json(&["bundle", "--from", &format!("docker-archive:{}", s(&b)), "--all", "--since", s(&bundle), "-o", s(&delta)]);
    assert!(d["requires"].as_u64().unwrap() >= 1, "the base layer simple and shared share is left to the first bundle: {d}");
}

#[test]
fn an_oci_layout_is_pushed_and_exported_directly_with_its_digests() {
    let reg = Registry::start(Variant::Plain);
    let simple = fixtures::push_one(&reg, "simple");
    let multi = fixtures::push_one(&reg, "multi");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("site");
    tool("skopeo", &["copy", "-q", "--src-tls-verify=false", &format!("docker://{}", simple.reference), &format!("oci:{}:v1", s(&layout))]);
    tool("skopeo", &["copy", "-q", "--all", "--src-tls-verify=false", &format!("docker://{}", multi.reference), &format!("oci:{}:multi", s(&layout))]);

    // push --from oci:DIR: every digest kept, the index with all its platforms.
    let env = Env::new();
    let to = format!("{}/mirror", reg.host());
    env.ok(&["push", "--from", &format!("oci:{}", s(&layout)), "--all", "--to", &to]);
    for (tag, want) in [("v1", &simple.digest), ("multi", &multi.digest)] {
        let raw = tool("skopeo", &["inspect", "--raw", "--tls-verify=false", &format!("docker://{to}/site:{tag}")]);
        assert_eq!(&sha256(raw.as_bytes()), want, "{tag}: pushed manifest digest");
    }

    // export --from oci-archive:FILE --oci-layout: byte-identical, skopeo reads it back.
    let archive = dir.path().join("simple.tar");
    tool("skopeo", &["copy", "-q", "--src-tls-verify=false", &format!("docker://{}", simple.reference), &format!("oci-archive:{}:v1", s(&archive))]);
    let out = dir.path().join("out");
    env.ok(&["export", "--from", &format!("oci-archive:{}", s(&archive)), "--all", "--oci-layout", s(&out)]);
    let raw = tool("skopeo", &["inspect", "--raw", &format!("oci:{}:localhost/simple:v1", s(&out))]);
    assert_eq!(sha256(raw.as_bytes()), simple.digest);
    assert!(!env.store().exists(), "nothing went through a store");
}

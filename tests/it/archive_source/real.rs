//! docker-archives written by skopeo and podman: imported, then bundled and exported again,
//! with the image IDs (config digests) and diff_ids of the registry's images throughout.
use super::*;
use crate::harness::cmd::tool;
use crate::harness::fixtures;
use crate::harness::peers::Podman;
use crate::harness::registry::{Registry, Variant};

fn config_of(p: &fixtures::Pushed) -> String {
    p.image.config.as_ref().unwrap().digest.clone()
}

/// `(reference, image ID)` of two pushed fixtures, sorted as `images_by` sorts.
fn expected_ids(a: &fixtures::Pushed, b: &fixtures::Pushed) -> Vec<(String, String)> {
    let mut want = vec![(a.reference.clone(), config_of(a)), (b.reference.clone(), config_of(b))];
    want.sort();
    want
}

#[test]
fn podman_and_skopeo_archives_import_with_their_image_ids_and_round_trip() {
    let reg = Registry::start(Variant::Plain);
    let simple = fixtures::push_one(&reg, "simple");
    let shared = fixtures::push_one(&reg, "shared");
    let dir = tempfile::tempdir().unwrap();

    // podman: pull both, save them into one multi-image docker-archive.
    let podman = Podman::new();
    for p in [&simple, &shared] {
        podman.ok(&["pull", "-q", "--tls-verify=false", &p.reference]);
    }
    let multi = dir.path().join("podman-multi.tar");
    podman.ok(&["save", "-q", "-m", "--format", "docker-archive", "-o", s(&multi), &simple.reference, &shared.reference]);

    let env = Env::new();
    let doc = import_json(&env, &multi);
    assert_eq!(images_by(&doc, "image_id"), expected_ids(&simple, &shared), "references and image IDs from podman save -m:\n{doc}");
    assert!(doc["notes"].to_string().contains("new OCI manifest"), "{doc}");
    let mut refs = stored_refs(&env);
    refs.sort();
    let mut want_refs = vec![simple.reference.clone(), shared.reference.clone()];
    want_refs.sort();
    assert_eq!(refs, want_refs);
    env.ok(&["store", "fsck"]);
    // The store stays an OCI layout that skopeo reads, with the registry's diff_ids.
    let st = env.store();
    for p in [&simple, &shared] {
        let cfg = tool("skopeo", &["inspect", "--config", &format!("oci:{}:{}", s(&st), p.reference)]);
        let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
        let reg_cfg = tool("skopeo", &["inspect", "--config", "--tls-verify=false", &format!("docker://{}", p.reference)]);
        let reg_cfg: serde_json::Value = serde_json::from_str(&reg_cfg).unwrap();
        assert_eq!(cfg["rootfs"], reg_cfg["rootfs"], "{}: diff_ids", p.reference);
    }

    // skopeo: one image per archive; the shared layer is already in the store.
    let one = dir.path().join("skopeo-one.tar");
    tool("skopeo", &["copy", "-q", "--src-tls-verify=false", &format!("docker://{}", shared.reference), &format!("docker-archive:{}:example.com/team/shared:2", s(&one))]);
    let doc = import_json(&env, &one);
    assert_eq!(doc["images"][0]["reference"], "example.com/team/shared:2");
    assert_eq!(doc["images"][0]["image_id"], config_of(&shared).as_str());
    assert_eq!(doc["blobs_imported"], 0, "everything of shared was imported from podman's archive already: {doc}");

    // bundle -> import elsewhere -> docker-archive -> podman load: the same image IDs.
    let bundle = dir.path().join("b.bundle");
    env.ok(&["bundle", "-o", s(&bundle), "--all"]);
    let env2 = Env::new();
    env2.ok(&["import", s(&bundle)]);
    let out = dir.path().join("again.tar");
    env2.ok(&["export", "--docker-archive", s(&out), &simple.reference, &shared.reference]);
    let podman2 = Podman::new();
    podman2.load(&out);
    let mut ids: Vec<String> = podman2.images().into_iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    let mut want_ids: Vec<String> = [&simple, &shared].iter().map(|p| config_of(p).trim_start_matches("sha256:").to_string()).collect();
    want_ids.sort();
    assert_eq!(ids.iter().map(|i| i.trim_start_matches("sha256:").to_string()).collect::<Vec<_>>(), want_ids);
}

#[test]
fn docker_save_archives_import_with_their_image_ids() {
    let reg = Registry::start(Variant::Plain);
    let simple = fixtures::push_one(&reg, "simple");
    let shared = fixtures::push_one(&reg, "shared");
    let dir = tempfile::tempdir().unwrap();
    // Into a private dockerd through our own export (it has no registry access here), then out
    // again with the real `docker save`: the archive is docker's, not ours.
    let env = Env::new();
    env.ok(&["fetch", &simple.reference, &shared.reference]);
    let ours = dir.path().join("ours.tar");
    env.ok(&["export", "--docker-archive", s(&ours), &simple.reference, &shared.reference]);
    let docker = crate::harness::docker::Docker::start();
    docker.load(&ours);
    let saved = dir.path().join("docker-save.tar");
    docker.ok(&["save", "-o", s(&saved), &simple.reference, &shared.reference]);

    let env2 = Env::new();
    let doc = import_json(&env2, &saved);
    assert_eq!(images_by(&doc, "image_id"), expected_ids(&simple, &shared), "references and image IDs from docker save:\n{doc}");
    env2.ok(&["store", "fsck"]);
    // skopeo reads the imported store and finds docker's diff_ids.
    for p in [&simple, &shared] {
        let cfg: serde_json::Value = serde_json::from_str(&tool("skopeo", &["inspect", "--config", &format!("oci:{}:{}", s(&env2.store()), p.reference)])).unwrap();
        let layers = docker.ok(&["image", "inspect", "--format", "{{json .RootFS.Layers}}", &p.reference]);
        let layers: serde_json::Value = serde_json::from_str(layers.trim()).unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"], layers, "{}", p.reference);
    }
}

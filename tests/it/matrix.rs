//! The one suite every Source and Sink runs: the same five fixture images (OCI gzip, Docker
//! schema2, zstd, a multi-platform index, a shared base layer) go from the registry into the
//! store, out into a bundle, an OCI layout, an OCI archive and a docker-archive, and back from
//! each of them into a store, a registry and a bundle. Every form passes `verify` (digests,
//! sizes, diff_ids, completeness; `--deep` inflates every layer), and every path that keeps
//! digests gives the registry's digests back, and the same bundle, byte for byte.
use std::collections::BTreeMap;

use crate::harness::cmd::{s, sha256, Env};
use crate::harness::fixtures::{self, Pushed};
use crate::harness::registry::{Registry, Variant};

/// `reference -> digest` of every image `store ls --json` lists.
fn stored(env: &Env) -> BTreeMap<String, String> {
    let v = env.json(&["store", "ls"]);
    v["images"].as_array().unwrap_or_else(|| panic!("store ls: {v}")).iter().map(|i| (i["reference"].as_str().unwrap().to_string(), i["digest"].as_str().unwrap().to_string())).collect()
}

fn all(fx: &fixtures::Fixtures) -> [&Pushed; 5] {
    [&fx.simple, &fx.schema2, &fx.zstd, &fx.multi, &fx.shared]
}

#[test]
fn every_source_and_sink_keeps_the_same_images() {
    let reg = Registry::start(Variant::Plain);
    let fx = fixtures::push_all(&reg);
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);

    // registry -> store (every platform, so the index travels whole).
    let env = Env::new();
    let mut args = vec!["fetch", "--all-platforms"];
    args.extend(all(&fx).iter().map(|x| x.reference.as_str()));
    env.ok(&args);
    let want: BTreeMap<String, String> = all(&fx).iter().map(|x| (x.reference.clone(), x.digest.clone())).collect();
    assert_eq!(stored(&env), want, "the store holds the registry's digests");

    // store -> every sink.
    let (bundle, layout, archive, docker) = (p("all.bundle"), p("layout"), p("all.oci.tar"), p("all.docker.tar"));
    env.ok(&["bundle", "--all", "-o", s(&bundle)]);
    env.ok(&["export", "--all", "--oci-layout", s(&layout)]);
    env.ok(&["export", "--all", "--oci-archive", s(&archive)]);
    env.ok(&["export", "--all", "--docker-archive", s(&docker)]);

    // Every form passes the one check, layers inflated against their diff_ids.
    let sources = [
        s(&bundle).to_string(),
        format!("oci:{}", s(&layout)),
        format!("oci-archive:{}", s(&archive)),
        format!("docker-archive:{}", s(&docker)),
        format!("oci:{}", s(&env.store())),
    ];
    for src in &sources {
        let v = env.json(&["verify", "--deep", src]);
        assert_eq!(v["ok"], true, "verify --deep {src}: {v}");
        assert!(v["blobs_checked"].as_u64().unwrap() >= 10, "verify {src} checked too little: {v}");
    }

    // Back from each digest-keeping form: into a store, into a registry, into a bundle.
    let bundle_bytes = std::fs::read(&bundle).unwrap();
    for (i, src) in sources.iter().enumerate().filter(|(_, s)| !s.starts_with("docker-archive:")) {
        let back = Env::new();
        back.ok(&["import", src]);
        assert_eq!(stored(&back), want, "import {src}");
        back.ok(&["store", "fsck"]);

        let to = format!("{}/copy{i}", reg.host());
        env.ok(&["push", "--from", src, "--all", "--to", &to]);
        for x in all(&fx) {
            let target = format!("{to}/{}:{}", x.repo, x.tag);
            assert_eq!(reg.content_digest(&format!("copy{i}/{}", x.repo), &x.tag), x.digest, "push --from {src}: {target}");
            let raw = reg.raw_manifest(&target);
            assert_eq!(sha256(&raw), x.digest, "push --from {src}: {target} bytes");
        }

        let again = p(&format!("again-{i}.bundle"));
        env.ok(&["bundle", "--from", src, "--all", "-o", s(&again)]);
        if std::fs::read(&again).unwrap() != bundle_bytes {
            let (a, b) = (env.json(&["inspect", s(&bundle)]), env.json(&["inspect", s(&again)]));
            panic!("bundle --from {src} differs from the bundle of the store:\n{a}\n---\n{b}");
        }
    }

    // The docker-archive keeps image IDs and diff_ids (one platform, layers uncompressed):
    // imported, its images have the registry's configs; bundled directly, it verifies.
    let back = Env::new();
    let doc = back.json(&["import", &format!("docker-archive:{}", s(&docker))]);
    let ids: BTreeMap<String, String> = doc["images"].as_array().unwrap().iter().map(|i| (i["reference"].as_str().unwrap().to_string(), i["image_id"].as_str().unwrap().to_string())).collect();
    for x in [&fx.simple, &fx.zstd, &fx.shared] {
        let config = x.image.config.as_ref().unwrap().digest.clone();
        assert_eq!(ids.get(&x.reference), Some(&config), "docker-archive image ID of {}: {doc}", x.reference);
    }
    let from_docker = p("from-docker.bundle");
    env.ok(&["bundle", "--from", &format!("docker-archive:{}", s(&docker)), "--all", "-o", s(&from_docker)]);
    let v = env.json(&["verify", "--deep", s(&from_docker)]);
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn verify_names_a_layer_that_does_not_match_its_diff_id() {
    // A docker-archive whose layer bytes are right for their digest but not for the config's
    // diff_id: verify (any source) refuses it, naming the blob.
    let reg = Registry::start(Variant::Plain);
    let simple = fixtures::push_one(&reg, "simple");
    let env = Env::new();
    env.ok(&["fetch", &simple.reference]);
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path().join("l");
    env.ok(&["export", "--oci-layout", s(&dir), &simple.reference]);
    // Swap the config's first diff_id for another digest, and re-point the manifest at it.
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(format!("blobs/sha256/{}", &simple.digest[7..]))).unwrap()).unwrap();
    let cfg_digest = m["config"]["digest"].as_str().unwrap().to_string();
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(format!("blobs/sha256/{}", &cfg_digest[7..]))).unwrap()).unwrap();
    cfg["rootfs"]["diff_ids"][0] = serde_json::Value::String(format!("sha256:{}", "0".repeat(64)));
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    let new_cfg = sha256(&cfg_bytes);
    std::fs::write(dir.join(format!("blobs/sha256/{}", &new_cfg[7..])), &cfg_bytes).unwrap();
    let mut m2 = m.clone();
    m2["config"]["digest"] = serde_json::Value::String(new_cfg.clone());
    m2["config"]["size"] = serde_json::json!(cfg_bytes.len());
    let m2_bytes = serde_json::to_vec(&m2).unwrap();
    let new_m = sha256(&m2_bytes);
    std::fs::write(dir.join(format!("blobs/sha256/{}", &new_m[7..])), &m2_bytes).unwrap();
    let mut idx: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    idx["manifests"][0]["digest"] = serde_json::Value::String(new_m);
    idx["manifests"][0]["size"] = serde_json::json!(m2_bytes.len());
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();

    let src = format!("oci:{}", s(&dir));
    // Without --deep the gzip layer's digest is right: only inflating it finds the lie.
    env.ok(&["verify", &src]);
    let out = env.run(&["verify", "--deep", &src]);
    assert!(!out.status.success(), "verify --deep accepted a layer whose diff_id is wrong");
    let err = crate::harness::cmd::text(&out);
    let layer = &m["layers"][0]["digest"].as_str().unwrap();
    assert!(err.contains(layer) && err.contains("diff_id"), "the error names the layer and its diff_id: {err}");
}

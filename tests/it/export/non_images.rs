//! Owns the docker-archive tests of what is not a container image (issue 11): an OCI artifact
//! (model files, empty config) is left out of `--all` with a note and refused by name; a layer
//! media type docker would not know is refused, never guessed at.
use super::*;
use ocibundle::image::Descriptor;

/// Stores `blobs` (media type, bytes) and a manifest over them in `env`'s store as `name`:
/// the first blob is the config, the rest layers.
fn put_image(env: &Env, name: &str, blobs: &[(&str, Vec<u8>)], artifact_type: Option<&str>) {
    let store = ocibundle::Store::open(env.store()).unwrap();
    let desc = |mt: &str, data: &[u8]| Descriptor { media_type: mt.into(), digest: ocibundle::Digest::of(data), size: data.len() as u64, platform: None, annotations: None };
    for (_, data) in blobs {
        store.put_bytes(&ocibundle::Digest::of(data), data).unwrap();
    }
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc(blobs[0].0, &blobs[0].1),
        "layers": blobs[1..].iter().map(|(mt, d)| desc(mt, d)).collect::<Vec<_>>(),
    });
    if let Some(t) = artifact_type {
        m["artifactType"] = t.into();
    }
    let bytes = serde_json::to_vec(&m).unwrap();
    let d = desc("application/vnd.oci.image.manifest.v1+json", &bytes);
    store.put_bytes(&d.digest, &bytes).unwrap();
    store.set_refs(&[(name.to_string(), d)]).unwrap();
}

fn tar_names(archive: &Path) -> Vec<String> {
    let mut a = tar::Archive::new(fs::File::open(archive).unwrap());
    a.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect()
}

#[test]
fn artifacts_are_left_out_of_all_and_refused_by_name() {
    let reg = Registry::start(Variant::Plain);
    let simple = crate::harness::fixtures::push_one(&reg, "simple");
    let env = Env::new();
    env.ok(&["fetch", &simple.reference]);
    let model = "example.com/models/tiny:1";
    put_image(&env, model, &[("application/vnd.oci.empty.v1+json", b"{}".to_vec()), ("application/vnd.example.gguf", b"GGUF weights".to_vec())], Some("application/vnd.example.model"));

    let out = env.path().join("all.tar");
    let o = env.run(&["export", "--docker-archive", s(&out), "--all"]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(model) && err.contains("not a container image"), "no note about the artifact:\n{err}");
    let manifest: Value = serde_json::from_slice(&{
        let mut a = tar::Archive::new(fs::File::open(&out).unwrap());
        let mut e = a.entries().unwrap().map(|e| e.unwrap()).find(|e| e.path().unwrap().to_str() == Some("manifest.json")).unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut v).unwrap();
        v
    })
    .unwrap();
    assert_eq!(manifest.as_array().unwrap().len(), 1, "only the image: {manifest}");
    assert!(!tar_names(&out).iter().any(|n| n.contains(&hex_of(&sha256(b"GGUF weights")).to_string())), "the model file went into the archive");

    let line = fails(&env, &["export", "--docker-archive", s(&env.path().join("m.tar")), model]);
    assert!(line.contains(model) && line.contains("application/vnd.oci.empty.v1+json") && line.contains("not a container image"), "{line}");
    assert!(!env.path().join("m.tar").exists());
}

#[test]
fn an_unknown_layer_media_type_is_refused_by_name() {
    let env = Env::new();
    let layer = crate::harness::fixtures::tar_bytes(&[crate::harness::fixtures::Entry::File("x", b"x".to_vec(), 0o644)]);
    let config = format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#, sha256(&layer)).into_bytes();
    let name = "example.com/odd/layer:1";
    put_image(&env, name, &[("application/vnd.oci.image.config.v1+json", config), ("application/x-evil-layer", layer)], None);
    let line = fails(&env, &["export", "--docker-archive", s(&env.path().join("e.tar")), name]);
    assert!(line.contains(name) && line.contains("application/x-evil-layer"), "{line}");
    assert!(!env.path().join("e.tar").exists());
}

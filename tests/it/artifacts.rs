//! Owns the tests of artifacts (issue 12, "Model files and other artifacts"): `store add` of
//! local files, `export --files` and `export --ollama`, and artifacts pushed by other tools
//! (crafted by hand with curl, an unknown config type) fetched, bundled, imported, verified,
//! exported and pushed like images. Expected values come from the files the test wrote, the
//! bytes it pushed and their sha256, and docs/design.md ("Artifacts").
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use serde_json::{json, Value};

use crate::harness::cmd::{files_under, s, sha256, Env};
use crate::harness::fixtures::noise;
use crate::harness::registry::{Registry, Variant};

/// A model directory: weights (3 MiB of noise, more than one 1 MiB copy buffer), a nested
/// tokenizer, an empty file, and a Hugging Face-style snapshot link into its own blobs.
fn model_dir(root: &Path) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = vec![
        ("model.gguf".into(), noise(7, 3 << 20)),
        ("tokenizer/tokenizer.json".into(), br#"{"vocab":{}}"#.to_vec()),
        ("empty.txt".into(), Vec::new()),
        ("blobs/abc123".into(), b"{\"hidden_size\":8}".to_vec()),
    ];
    for (p, data) in &files {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }
    fs::create_dir_all(root.join("snapshots/main")).unwrap();
    symlink("../../blobs/abc123", root.join("snapshots/main/config.json")).unwrap();
    let mut want = files;
    want.push(("snapshots/main/config.json".into(), b"{\"hidden_size\":8}".to_vec()));
    want.sort();
    want
}

/// Every file under `dir` as (path below dir, bytes), sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = files_under(dir).into_iter().map(|p| (p.strip_prefix(dir).unwrap().display().to_string(), fs::read(&p).unwrap())).collect();
    v.sort();
    v
}

fn manifest_of(env: &Env, reference: &str) -> Value {
    let index: Value = serde_json::from_slice(&fs::read(env.store().join("index.json")).unwrap()).unwrap();
    let d = index["manifests"].as_array().unwrap().iter().find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference).unwrap_or_else(|| panic!("{reference} not in {index}"));
    serde_json::from_slice(&fs::read(env.blob_path(d["digest"].as_str().unwrap())).unwrap()).unwrap()
}

#[test]
fn artifacts_store_add_packs_files_deterministically_and_export_files_restores_them() {
    let env = Env::new();
    let src = env.path().join("llama");
    let want = model_dir(&src);
    let r = "registry.lan/models/llama:q4";
    let added = env.json(&["store", "add", r, s(&src), "--annotation", "org.opencontainers.image.description=test model"]);
    let m = manifest_of(&env, r);
    assert_eq!(m["artifactType"], "application/vnd.ocibundle.files.v1");
    assert_eq!(m["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
    assert_eq!(m["config"]["digest"], sha256(b"{}"));
    assert_eq!(m["annotations"]["org.opencontainers.image.description"], "test model");
    let titles: Vec<&str> = m["layers"].as_array().unwrap().iter().map(|l| l["annotations"]["org.opencontainers.image.title"].as_str().unwrap()).collect();
    assert_eq!(titles, want.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), "one layer per file, sorted by path");
    for (l, (_, data)) in m["layers"].as_array().unwrap().iter().zip(&want) {
        assert_eq!(l["digest"], sha256(data), "uncompressed: the layer is the file");
        assert_eq!(l["mediaType"], "application/octet-stream");
    }
    // Same files, another store, new mtimes: the same manifest digest.
    let env2 = Env::new();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(src.join("empty.txt"), b"").unwrap();
    let again = env2.json(&["store", "add", r, s(&src), "--annotation", "org.opencontainers.image.description=test model"]);
    assert_eq!(again["digest"], added["digest"]);
    env.ok(&["store", "fsck"]);

    let out = env.path().join("restored");
    env.ok(&["export", "--files", s(&out), r]);
    assert_eq!(tree(&out), want);
    // An existing output is refused, then replaced with --force.
    let e = env.fails(&["export", "--files", s(&out), r]);
    assert!(e.contains("exists"), "{e}");
    env.ok(&["export", "--files", s(&out), r, "--force"]);
    assert_eq!(tree(&out), want);

    // A ModelPack model: ModelPack layer and config types, its config lists the layers.
    let mp = env.json(&["store", "add", "registry.lan/models/llama:mp", s(&src), "--artifact-type", "application/vnd.cncf.model.manifest.v1+json"]);
    let m = manifest_of(&env, "registry.lan/models/llama:mp");
    assert_eq!(m["config"]["mediaType"], "application/vnd.cncf.model.config.v1+json");
    let types: Vec<&str> = m["layers"].as_array().unwrap().iter().map(|l| l["mediaType"].as_str().unwrap()).collect();
    assert!(types.contains(&"application/vnd.cncf.model.weight.v1.raw") && types.contains(&"application/vnd.cncf.model.weight.config.v1.raw"), "{types:?}");
    let cfg: Value = serde_json::from_slice(&fs::read(env.blob_path(m["config"]["digest"].as_str().unwrap())).unwrap()).unwrap();
    assert_eq!(cfg["modelfs"]["diffIds"].as_array().unwrap().len(), want.len());
    assert_ne!(mp["digest"], added["digest"]);

    // A layer that rotted in the store: the export names it and leaves nothing behind.
    let gguf = sha256(&want.iter().find(|(p, _)| p == "model.gguf").unwrap().1);
    let mut bytes = fs::read(env.blob_path(&gguf)).unwrap();
    bytes[1 << 20] ^= 1;
    fs::write(env.blob_path(&gguf), bytes).unwrap();
    let work = env.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let e = env.fails(&["export", "--files", s(&work.join("out")), r]);
    assert!(e.contains(&gguf) && e.contains("model.gguf") && e.contains(r), "{e}");
    assert!(fs::read_dir(&work).unwrap().next().is_none(), "nothing written");
}

#[test]
fn artifacts_store_add_refuses_escaping_links_special_files_and_clashes() {
    let env = Env::new();
    let src = env.path().join("d");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("ok.bin"), b"x").unwrap();
    let outside = env.path().join("secret");
    fs::write(&outside, b"secret").unwrap();
    type Make<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Make, &str)> = vec![
        ("escape", Box::new(|| symlink(&outside, src.join("sub/link")).unwrap()), "leads out of"),
        ("dir link", Box::new(|| symlink(".", src.join("sub/link")).unwrap()), "symlink to a directory"),
        ("fifo", Box::new(|| assert!(std::process::Command::new("mkfifo").arg(src.join("sub/link")).status().unwrap().success())), "FIFO"),
    ];
    for (what, make, want) in cases {
        make();
        let e = env.fails(&["store", "add", "registry.lan/x/y:1", s(&src)]);
        assert!(e.contains(want) && e.contains("sub/link"), "{what}: {e}");
        fs::remove_file(src.join("sub/link")).unwrap();
    }
    // Two files that would have one title.
    let other = env.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("ok.bin"), b"y").unwrap();
    let e = env.fails(&["store", "add", "registry.lan/x/y:1", s(&src), s(&other)]);
    assert!(e.contains("ok.bin") && e.contains("both"), "{e}");
    let e = env.fails(&["store", "add", "registry.lan/x/y@sha256:0000000000000000000000000000000000000000000000000000000000000000", s(&src)]);
    assert!(e.contains("tag"), "{e}");
    let e = env.fails(&["store", "add", "registry.lan/x/y:1", s(&src), "--annotation", "novalue"]);
    assert!(e.contains("KEY=VALUE"), "{e}");
    // Nothing was named: no reference.
    let ls = env.run(&["store", "ls"]);
    assert!(String::from_utf8_lossy(&ls.stdout).trim().is_empty(), "{ls:?}");
}

/// Writes an artifact straight into the store (an OCI layout) with the given layer titles.
fn hand_made(env: &Env, reference: &str, titles: &[&str]) {
    let seed = env.path().join("seed.txt");
    fs::write(&seed, b"seed").unwrap();
    env.ok(&["store", "add", "registry.lan/seed/x:1", s(&seed)]);
    let blobs = env.store().join("blobs/sha256");
    let put = |data: &[u8]| {
        let d = sha256(data);
        fs::write(blobs.join(&d[7..]), data).unwrap();
        d
    };
    let cfg = put(b"{}");
    let layers: Vec<Value> = titles
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let data = format!("layer {i}");
            json!({"mediaType": "application/octet-stream", "digest": put(data.as_bytes()), "size": data.len(), "annotations": {"org.opencontainers.image.title": t}})
        })
        .collect();
    let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": "application/vnd.example", "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cfg, "size": 2}, "layers": layers})).unwrap();
    let md = put(&m);
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": m.len(), "annotations": {"org.opencontainers.image.ref.name": reference}}]});
    fs::write(env.store().join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn artifacts_export_files_refuses_titles_that_escape_and_writes_nothing() {
    for (titles, want) in [
        (vec!["ok", "../escaped"], "leads out of"),
        (vec!["/tmp/abs-escaped"], "absolute"),
        (vec!["a/../../escaped"], "leads out of"),
        (vec!["same", "same"], "two layers"),
        (vec!["a", "a/b"], "below the file"),
    ] {
        let env = Env::new();
        hand_made(&env, "registry.lan/evil/x:1", &titles);
        let out = env.path().join("work/out");
        fs::create_dir_all(env.path().join("work")).unwrap();
        let e = env.fails(&["export", "--files", s(&out), "registry.lan/evil/x:1"]);
        assert!(e.contains(want) && e.contains("registry.lan/evil/x:1") && (e.contains("layer sha256:") || want == "two layers"), "{titles:?}: {e}");
        assert!(files_under(&env.path().join("work")).is_empty(), "{titles:?}: something was written");
        assert!(!env.path().join("escaped").exists() && !Path::new("/tmp/abs-escaped").exists());
    }
}

#[test]
fn artifacts_pushed_by_others_are_fetched_bundled_imported_verified_and_exported() {
    let reg = Registry::start(Variant::Plain);
    let site = Registry::start(Variant::Plain);
    let connected = Env::new();

    // 1. Made by ocibundle, pushed with ocibundle.
    let src = connected.path().join("chart");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("mychart-1.0.0.tgz"), noise(3, 200_000)).unwrap();
    let ours = format!("{}/charts/mychart:1.0.0", reg.host());
    let added = connected.json(&["store", "add", &ours, s(&src)]);
    connected.ok(&["push", &ours, "--to", &reg.host()]);
    assert_eq!(reg.content_digest("charts/mychart", "1.0.0"), added["digest"].as_str().unwrap());

    // 2. Crafted by hand: a config of a type nobody knows, whose bytes are not JSON at all.
    let config = b"\x00\x01 not json, not an image config".to_vec();
    let layer = noise(4, 100_000);
    let cd = reg.curl_put_blob("vendor/thing", &config);
    let ld = reg.curl_put_blob("vendor/thing", &layer);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.example.thing.config.v1+binary", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.example.thing.layer.v1", "digest": ld, "size": layer.len(), "annotations": {"org.opencontainers.image.title": "thing.dat"}}],
    }))
    .unwrap();
    let theirs_digest = reg.curl_put_manifest("vendor/thing", "v1", "application/vnd.oci.image.manifest.v1+json", &m);
    let theirs = format!("{}/vendor/thing:v1", reg.host());

    // Fetched into a fresh store: digests kept, the unknown config carried, not parsed.
    let fetcher = Env::new();
    let f = fetcher.json(&["fetch", &ours, &theirs]);
    let digests: Vec<&str> = f["images"].as_array().unwrap().iter().map(|i| i["digest"].as_str().unwrap()).collect();
    assert_eq!(digests, [added["digest"].as_str().unwrap(), theirs_digest.as_str()]);
    assert_eq!(fs::read(fetcher.blob_path(&cd)).unwrap(), config);
    fetcher.ok(&["store", "fsck"]);

    // Bundled, verified, imported on the other side; exported as files and as a layout; pushed.
    let bundle = fetcher.path().join("site.bundle");
    fetcher.ok(&["bundle", "-o", s(&bundle), "--all"]);
    fetcher.ok(&["verify", s(&bundle)]);
    fetcher.ok(&["verify", "--deep", s(&bundle)]);
    let offline = Env::new();
    offline.ok(&["import", s(&bundle)]);
    offline.ok(&["store", "fsck"]);
    let out = offline.path().join("thing");
    offline.ok(&["export", "--files", s(&out), &theirs]);
    assert_eq!(tree(&out), vec![("thing.dat".to_string(), layer.clone())]);
    let out = offline.path().join("chart-out");
    offline.ok(&["export", "--files", s(&out), "--from", s(&bundle), &ours]);
    assert_eq!(tree(&out), tree(&src));
    let layout = offline.path().join("layout");
    offline.ok(&["export", "--oci-layout", s(&layout), "--all"]);
    offline.ok(&["verify", &format!("oci:{}", s(&layout))]);
    assert_eq!(fs::read(layout.join("blobs/sha256").join(&theirs_digest[7..])).unwrap(), m, "manifest bytes kept");
    // A docker-archive of an artifact: one clear line naming it.
    let e = offline.fails(&["export", "--docker-archive", s(&offline.path().join("x.tar")), &theirs]);
    assert!(e.contains("vendor/thing:v1") && e.contains("not a container image"), "{e}");
    assert!(!offline.path().join("x.tar").exists());
    offline.ok(&["push", "--all", "--to", &site.host()]);
    assert_eq!(site.content_digest("vendor/thing", "v1"), theirs_digest);
    assert_eq!(site.content_digest("charts/mychart", "1.0.0"), added["digest"].as_str().unwrap());
}

#[test]
fn artifacts_export_ollama_writes_its_models_directory_and_refuses_what_does_not_fit() {
    let reg = Registry::start(Variant::Plain);
    let (manifest, blobs) = crate::airgap::push_ollama_model(&reg, "library/tiny", "1b");
    crate::airgap::push_ollama_model(&reg, "flat", "1b");
    let env = Env::new();
    let model = format!("{}/library/tiny:1b", reg.host());
    let flat = format!("{}/flat:1b", reg.host());
    env.ok(&["fetch", &model, &flat]);
    let dir = env.path().join("ollama");
    let out = env.json(&["export", "--ollama", s(&dir), &model]);
    assert_eq!(out["models"][0]["ollama_name"], format!("{}/library/tiny:1b", reg.host()));
    assert_eq!(fs::read(dir.join("manifests").join(reg.host()).join("library/tiny/1b")).unwrap(), manifest);
    let names: Vec<String> = fs::read_dir(dir.join("blobs")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), blobs.len(), "{names:?}");
    for (d, data) in &blobs {
        assert_eq!(&fs::read(dir.join("blobs").join(format!("sha256-{}", &d[7..]))).unwrap(), data);
    }
    // Into a directory that has them: kept, not written again.
    let again = env.json(&["export", "--ollama", s(&dir), &model]);
    assert_eq!(again["models"][0]["blobs_present"], blobs.len());
    // What Ollama could not name, and what is not an Ollama model: one line each.
    let e = env.fails(&["export", "--ollama", s(&dir), &flat]);
    assert!(e.contains("HOST/NAMESPACE/MODEL:TAG") && e.contains("flat:1b"), "{e}");
    let src = env.path().join("f.txt");
    fs::write(&src, b"x").unwrap();
    env.ok(&["store", "add", "registry.lan/x/files:1", s(&src)]);
    let e = env.fails(&["export", "--ollama", s(&dir), "registry.lan/x/files:1"]);
    assert!(e.contains("not an Ollama model"), "{e}");
    // A blob that rotted in the store: named, and nothing of it or of the model appears.
    let fresh = env.path().join("ollama2");
    let (big, _) = &blobs[1];
    let mut bytes = fs::read(env.blob_path(big)).unwrap();
    bytes[100] ^= 1;
    fs::write(env.blob_path(big), bytes).unwrap();
    let e = env.fails(&["export", "--ollama", s(&fresh), &model]);
    assert!(e.contains(&big[..20]) && e.contains("library/tiny:1b"), "{e}");
    assert!(!fresh.join("blobs").join(format!("sha256-{}", &big[7..])).exists() && !fresh.join("manifests").exists());
    assert!(files_under(&fresh).iter().all(|p| !p.to_string_lossy().contains(".tmp-")), "{:?}", files_under(&fresh));
    // export --files of a rotted layer: the same, nothing left.
    let e = env.fails(&["export", "--files", s(&env.path().join("files-out")), &model]);
    assert!(e.contains("no layer has a title"), "{e}");
}

#[test]
fn artifacts_two_models_sharing_files_carry_them_once() {
    let env = Env::new();
    let (a, b) = (env.path().join("base"), env.path().join("tuned"));
    for d in [&a, &b] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("tokenizer.json"), noise(21, 300_000)).unwrap();
    }
    fs::write(a.join("weights.gguf"), noise(22, 200_000)).unwrap();
    fs::write(b.join("weights.gguf"), noise(23, 200_000)).unwrap();
    env.ok(&["store", "add", "registry.lan/m/base:1", s(&a)]);
    env.ok(&["store", "add", "registry.lan/m/tuned:1", s(&b)]);
    let size = env.json(&["size", "--all"]);
    let carried = size["carried_bytes"].as_u64().unwrap();
    let per_image = size["sum_per_image_bytes"].as_u64().unwrap();
    assert_eq!(per_image - carried, 300_000 + 2, "the shared tokenizer (and the empty config) once: {size}");
}

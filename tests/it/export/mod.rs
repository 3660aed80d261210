//! Owns the `ocibundle export` tests: docker-archive, OCI layout and OCI archive checked by their real consumers (docker load, podman load, containerd `ctr images import`, skopeo, umoci, a second registry), from the store and from bundles, and the error contract.
//!
//! Each test starts its own registry and, where needed, its own podman storage and dockerd or containerd
//! daemon (harness/peers.rs, harness/docker.rs), so tests run in parallel. Expected values come from the registry
//! (manifest digests, config blobs and their diff_ids) and from docs/cli.md; none from the
//! export code. No test asserts on timing.
//!
//! Naming facts these tests pin down (podman 4.3, containerd 1.6, docker 20.10, skopeo 1.9):
//! - podman load of a docker-archive keeps a RepoTag that has a registry host as is
//!   (`127.0.0.1:PORT/test/simple:v1`, `docker.io/library/redis:7`) and puts `localhost/`
//!   before one without: docker's familiar `redis:7` would load as `localhost/redis:7`. So
//!   ocibundle writes RepoTags fully qualified, as skopeo does (docker shows them familiar),
//!   and podman loads `docker.io/library/redis:7`. The same holds with and without the
//!   Docker 25 `oci-layout`/`index.json` beside `manifest.json`. An entry without RepoTags
//!   loads as `<none>:<none>`. The image ID is always the config digest.
//! - podman load of an OCI archive names the image by its index.json annotation (a bare
//!   `v1` would become `localhost/v1:latest`), keeps the manifest digest, and refuses an
//!   archive holding more than one image ("more than one image in oci, choose an image").
//! - `docker load` (dockerd 20.10) shows RepoTags in the familiar form (`redis:7`,
//!   `myorg/app:2`; a name with a registry host as is), lists an image without RepoTags as
//!   `<none>:<none>` and prints its `Loaded image ID:` only when no image of the archive has a
//!   name. Its image ID is the config digest and its layers the config's diff_ids.
//! - `ctr images import` of an archive with `oci-layout` uses index.json and names each image
//!   by `io.containerd.image.name`, a digest-pinned name included; in the `k8s.io` namespace
//!   the CRI plugin adds a `sha256:<config digest>` name (the image ID) for each image,
//!   asynchronously. An arm64-only image imports on this amd64 host without `--all-platforms`.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::bundles::store_refs;
use crate::harness::cmd::{Env, fails, hex_of, s, sha256, text, tool};
use crate::harness::fixtures::{
    self, Compression, Entry, Fixtures, LayoutWriter, MT_CONFIG, MT_INDEX, MT_MANIFEST, tar_bytes,
};
use crate::harness::docker::Docker;
use crate::harness::peers::{Containerd, Podman};
use crate::harness::registry::{Registry, Variant};

mod docker_archive;
mod oci;
mod from_bundle;
mod errors;
mod layer_forms;
mod non_images;

/// Names in `dir` (sorted), e.g. to see that a failed export left nothing behind.
fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}


/// What the registry says one image (one platform) is.
#[derive(Clone, Debug)]
struct Expect {
    /// Full reference as fetched/exported.
    reference: String,
    /// Config digest = image ID.
    image_id: String,
    /// Compressed layer digests as the registry serves them.
    layer_digests: Vec<String>,
    /// The config's rootfs.diff_ids.
    diff_ids: Vec<String>,
    /// `os/arch[/variant]` from the config.
    platform: String,
}

/// Reads manifest `reference` (`HOST/REPO:TAG` or `HOST/REPO@DIGEST`) from the registry and
/// its config blob (over HTTP, checked against its digest).
fn expect_from_registry(reg: &Registry, reference: &str, exported_as: &str) -> Expect {
    let raw = reg.raw_manifest(reference);
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_ne!(
        m["mediaType"], MT_INDEX,
        "{reference} is an index; pass a child"
    );
    let config_digest = m["config"]["digest"].as_str().unwrap().to_string();
    let (host_repo, _) = reference
        .split_once('@')
        .or_else(|| reference.rsplit_once(':'))
        .unwrap();
    let repo = host_repo.split_once('/').unwrap().1;
    let out = Command::new("curl")
        .args(["-s", "-f", "--max-time", "10", "--noproxy", "*"])
        .arg(format!("{}/v2/{repo}/blobs/{config_digest}", reg.url()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl config blob {config_digest} of {repo}: {}",
        out.status
    );
    assert_eq!(
        sha256(&out.stdout),
        config_digest,
        "config blob from the registry"
    );
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut platform = format!(
        "{}/{}",
        config["os"].as_str().unwrap(),
        config["architecture"].as_str().unwrap()
    );
    if let Some(v) = config["variant"].as_str() {
        platform = format!("{platform}/{v}");
    }
    Expect {
        reference: exported_as.to_string(),
        image_id: config_digest,
        layer_digests: m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect(),
        diff_ids: config["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_string())
            .collect(),
        platform,
    }
}

/// The registry's child manifest reference of `index_ref` for `platform` (`os/arch[/variant]`).
fn child_ref(reg: &Registry, index_ref: &str, platform: &str) -> String {
    let idx: Value = serde_json::from_slice(&reg.raw_manifest(index_ref)).unwrap();
    let d = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            let p = &m["platform"];
            let mut s = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p["variant"].as_str() {
                s = format!("{s}/{v}");
            }
            s == platform
        })
        .unwrap_or_else(|| panic!("no {platform} in {idx}"));
    let (host_repo, _) = index_ref.rsplit_once(':').unwrap();
    format!("{host_repo}@{}", d["digest"].as_str().unwrap())
}

/// A registry with every fixture pushed, and an env whose store holds simple, schema2, zstd
/// and shared (host platform) and multi (`--all-platforms`).
struct Setup {
    reg: Registry,
    fx: Fixtures,
    env: Env,
    out: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let reg = Registry::start(Variant::Plain);
        let fx = fixtures::push_all(&reg);
        let env = Env::new();
        env.ok(&[
            "fetch",
            &fx.simple.reference,
            &fx.schema2.reference,
            &fx.zstd.reference,
            &fx.shared.reference,
        ]);
        env.ok(&["fetch", "--all-platforms", &fx.multi.reference]);
        Setup {
            reg,
            fx,
            env,
            out: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.out.path().join(name)
    }
    /// The four single-platform fixtures.
    fn four(&self) -> [&str; 4] {
        [
            &self.fx.simple.reference,
            &self.fx.schema2.reference,
            &self.fx.zstd.reference,
            &self.fx.shared.reference,
        ]
    }
    fn expect(&self, reference: &str) -> Expect {
        expect_from_registry(&self.reg, reference, reference)
    }
    fn expect_four(&self) -> Vec<Expect> {
        self.four().iter().map(|r| self.expect(r)).collect()
    }
}

/// A tar read into memory: entries in order (name, type, data).
struct Tar {
    entries: Vec<(String, tar::EntryType, Vec<u8>)>,
}

impl Tar {
    fn read(data: &[u8]) -> Tar {
        let mut a = tar::Archive::new(data);
        let mut entries = Vec::new();
        for e in a.entries().expect("tar entries") {
            let mut e = e.expect("tar entry");
            let name = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let t = e.header().entry_type();
            let mut d = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut d).unwrap();
            entries.push((name, t, d));
        }
        Tar { entries }
    }
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, d)| &d[..])
    }
    fn must(&self, name: &str) -> &[u8] {
        self.get(name)
            .unwrap_or_else(|| panic!("no {name} in the archive; entries: {:?}", self.names()))
    }
    fn json(&self, name: &str) -> Value {
        serde_json::from_slice(self.must(name))
            .unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
    }
    fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|(n, _, _)| n.as_str()).collect()
    }
    /// sha256 of every regular file's content -> how many entries have it.
    fn content_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (_, t, d) in &self.entries {
            if t.is_file() {
                *m.entry(sha256(d)).or_insert(0) += 1;
            }
        }
        m
    }
}

/// The tag of a tagged reference (`…:v1` -> `v1`); None for a digest-only one.
fn tag_of(reference: &str) -> Option<&str> {
    if reference.contains('@') {
        return None;
    }
    let last = reference.rsplit('/').next().unwrap();
    last.split_once(':').map(|(_, t)| t)
}

/// Checks a docker-archive against docs/cli.md and the registry: for each (image, RepoTags)
/// one manifest.json entry whose Config hashes to the image ID, Layers as many as diff_ids and
/// each hashing to its diff_id; every diff_id stored once, uncompressed; `repositories`;
/// `oci-layout`; index.json naming every reference (`io.containerd.image.name` = full name,
/// `org.opencontainers.image.ref.name` = tag) and pointing at a manifest of the config and the
/// uncompressed layers. Returns the parsed archive.
fn check_docker_archive(data: &[u8], want: &[(Expect, Vec<String>)]) -> Tar {
    let t = Tar::read(data);
    let names = t.names();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "duplicate entry names in the archive: {names:?}"
    );
    assert_eq!(
        t.json("oci-layout")["imageLayoutVersion"],
        "1.0.0",
        "oci-layout"
    );
    let counts = t.content_counts();

    let mf = t.json("manifest.json");
    let mf = mf
        .as_array()
        .unwrap_or_else(|| panic!("manifest.json is not an array: {mf}"));
    let mut used_entries = BTreeSet::new();
    for (e, tags) in want {
        // The manifest.json entry of this image: its Config hashes to the image ID.
        let hits: Vec<(usize, &Value)> = mf
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                m["Config"]
                    .as_str()
                    .and_then(|c| t.get(c))
                    .map(sha256)
                    .as_deref()
                    == Some(e.image_id.as_str())
            })
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "manifest.json entries whose Config is {} ({}): {mf:?}",
            e.image_id,
            e.reference
        );
        let (i, m) = hits[0];
        used_entries.insert(i);
        let mut got_tags: Vec<String> = m["RepoTags"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        got_tags.sort();
        let mut want_tags = tags.clone();
        want_tags.sort();
        assert_eq!(got_tags, want_tags, "RepoTags of {} in {m}", e.reference);
        let layers = m["Layers"]
            .as_array()
            .unwrap_or_else(|| panic!("no Layers in {m}"));
        assert_eq!(
            layers.len(),
            e.diff_ids.len(),
            "manifest.json Layers vs the config's rootfs.diff_ids for {}: {m}",
            e.reference
        );
        for (l, d) in layers.iter().zip(&e.diff_ids) {
            let l = l.as_str().unwrap();
            assert_eq!(
                sha256(t.must(l)),
                *d,
                "layer file {l} of {} hashes to its diff_id",
                e.reference
            );
            assert_eq!(
                counts.get(d),
                Some(&1),
                "diff_id {d} is stored exactly once"
            );
        }
        for c in &e.layer_digests {
            if !e.diff_ids.contains(c) {
                assert_eq!(
                    counts.get(c),
                    None,
                    "compressed layer blob {c} of {} is in the archive (layers must be uncompressed)",
                    e.reference
                );
            }
        }
        // `repositories` maps each tag to the image's top layer (none for an image without
        // layers, as docker's own save does).
        let repos = t.json("repositories");
        for tag in tags.iter().filter(|_| !e.diff_ids.is_empty()) {
            let (name, tg) = tag.rsplit_once(':').unwrap();
            assert!(
                repos[name][tg].is_string(),
                "repositories has no {name} -> {tg}: {repos}"
            );
        }

        // index.json (Docker >= 25 layout) for containerd.
        let idx = t.json("index.json");
        let entries: Vec<&Value> = idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["annotations"]["io.containerd.image.name"] == e.reference.as_str())
            .collect();
        assert_eq!(
            entries.len(),
            1,
            "index.json entries named {}: {idx}",
            e.reference
        );
        let d = entries[0];
        if let Some(tg) = tag_of(&e.reference) {
            assert_eq!(
                d["annotations"]["org.opencontainers.image.ref.name"], tg,
                "ref.name of {} in {d}",
                e.reference
            );
        }
        let md = d["digest"].as_str().unwrap();
        let mbytes = t.must(&format!("blobs/sha256/{}", hex_of(md)));
        assert_eq!(
            sha256(mbytes),
            md,
            "index.json's manifest blob for {}",
            e.reference
        );
        assert_eq!(
            d["size"],
            mbytes.len(),
            "index.json descriptor size for {}",
            e.reference
        );
        let man: Value = serde_json::from_slice(mbytes).unwrap();
        assert_eq!(
            man["config"]["digest"],
            e.image_id.as_str(),
            "config of the index.json manifest of {}: {man}",
            e.reference
        );
        let ml: Vec<&str> = man["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert_eq!(
            ml, e.diff_ids,
            "layers of the index.json manifest of {} are the uncompressed diff_ids: {man}",
            e.reference
        );
        for l in &ml {
            assert!(
                t.get(&format!("blobs/sha256/{}", hex_of(l))).is_some(),
                "index.json manifest layer {l} not in blobs/"
            );
        }
    }
    assert_eq!(
        used_entries.len(),
        mf.len(),
        "manifest.json has entries for images not exported: {mf:?}"
    );
    t
}

/// The `export --json` document, checked against `want` and the written file size; for a
/// docker-archive, `manifest_digest` is the manifest its index.json names (`archive`).
fn check_json(
    doc: &Value,
    output: &Path,
    format: &str,
    want: &[(Expect, Vec<String>)],
    archive: Option<&Tar>,
) {
    assert_eq!(doc["format"], format, "{doc}");
    let bytes = if output.is_dir() {
        // For a layout: the contract does not say; just a number.
        assert!(doc["bytes"].is_u64(), "{doc}");
        None
    } else {
        Some(fs::metadata(output).unwrap().len())
    };
    if let Some(b) = bytes {
        assert_eq!(
            doc["bytes"],
            b,
            "bytes = size of {}: {doc}",
            output.display()
        );
    }
    let imgs = doc["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images: {doc}"));
    assert_eq!(imgs.len(), want.len(), "{doc}");
    for (e, tags) in want {
        let i = imgs
            .iter()
            .find(|i| i["reference"] == e.reference.as_str())
            .unwrap_or_else(|| panic!("{} not in {doc}", e.reference));
        assert_eq!(i["image_id"], e.image_id.as_str(), "{i}");
        assert_eq!(i["repo_tags"], json!(tags), "{i}");
        assert_eq!(i["platform"], e.platform.as_str(), "{i}");
        assert_eq!(i["layers"], e.diff_ids.len(), "{i}");
        if let Some(t) = archive {
            let idx = t.json("index.json");
            let d = idx["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["annotations"]["io.containerd.image.name"] == e.reference.as_str())
                .unwrap_or_else(|| panic!("{} not in index.json: {idx}", e.reference));
            assert_eq!(
                i["manifest_digest"], d["digest"],
                "manifest_digest of {} = the archive's index.json entry",
                e.reference
            );
        }
    }
}

/// (image ID, name) pairs podman 4.3 lists after loading the docker-archive `want`: a RepoTag
/// with a registry host is kept, one without gets `localhost/` (libimage's NormalizeName:
/// `redis:7` -> `localhost/redis:7`, not docker's `docker.io/library/redis:7`); untagged
/// images show as `<none>:<none>`.
fn podman_expect(want: &[(Expect, Vec<String>)]) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for (e, tags) in want {
        if tags.is_empty() {
            v.push((e.image_id.clone(), "<none>:<none>".to_string()));
        }
        for t in tags {
            let first = t.split('/').next().unwrap();
            let has_host = t.contains('/')
                && (first.contains('.') || first.contains(':') || first == "localhost");
            let name = if has_host {
                t.clone()
            } else {
                format!("localhost/{t}")
            };
            v.push((e.image_id.clone(), name));
        }
    }
    v.sort();
    v.dedup();
    v
}

fn with_tags(es: Vec<Expect>) -> Vec<(Expect, Vec<String>)> {
    es.into_iter()
        .map(|e| {
            let t = vec![e.reference.clone()];
            (e, t)
        })
        .collect()
}

/// Every file under `dir/blobs/sha256` hashes to its name; returns the digests.
fn layout_blobs(dir: &Path) -> BTreeSet<String> {
    let mut v = BTreeSet::new();
    for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let name = format!("sha256:{}", e.file_name().to_string_lossy());
        assert_eq!(
            sha256(&fs::read(e.path()).unwrap()),
            name,
            "blob file {} of the layout",
            e.path().display()
        );
        v.insert(name);
    }
    v
}

const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// A store written by hand (the registry never sees these: no fetch can make some of them):
/// `gz` = [gzip T1], `zst` = [zstd T1, gzip T2], `raw` = [plain T1, plain T2],
/// `twice` = [gzip T1, gzip T2, gzip T1], `empty` = no layers, and `gz` also as tag `v2`.
fn layer_forms_store(host: &str) -> (Env, Vec<(Expect, Vec<String>)>) {
    let env = Env::new();
    let mut w = LayoutWriter::new(&env.store());
    let t1 = tar_bytes(&[
        Entry::Dir("usr/"),
        Entry::File("usr/one", fixtures::noise(71, 4000), 0o644),
        Entry::Symlink("usr/uno", "one"),
    ]);
    let t2 = tar_bytes(&[
        Entry::Dir("usr/"),
        Entry::File("usr/two", b"second layer\n".to_vec(), 0o600),
    ]);
    let g1 = w.layer_from_tar(&t1, Compression::Gzip);
    let z1 = w.layer_from_tar(&t1, Compression::Zstd);
    let g2 = w.layer_from_tar(&t2, Compression::Gzip);
    let r1 = (w.blob(&t1, MT_LAYER_TAR), sha256(&t1));
    let r2 = (w.blob(&t2, MT_LAYER_TAR), sha256(&t2));
    assert_eq!(g1.1, z1.1, "same diff_id");
    assert_ne!(g1.0.digest, z1.0.digest, "different blobs");
    let images = [
        ("gz", vec![g1.clone()]),
        ("raw", vec![r1, r2]),
        ("twice", vec![g1.clone(), g2.clone(), g1.clone()]),
        ("zst", vec![z1, g2]),
        ("empty", vec![]),
    ];
    let mut want = Vec::new();
    let mut tags = Vec::new();
    for (name, layers) in &images {
        let img = w.image(layers, "linux/amd64", name);
        let reference = format!("{host}/forms/{name}:v1");
        let e = Expect {
            reference: reference.clone(),
            image_id: img.config.as_ref().unwrap().digest.clone(),
            layer_digests: layers.iter().map(|(b, _)| b.digest.clone()).collect(),
            diff_ids: layers.iter().map(|(_, d)| d.clone()).collect(),
            platform: "linux/amd64".into(),
        };
        tags.push((reference.clone(), img.clone()));
        if *name == "gz" {
            tags.push((format!("{host}/forms/{name}:v2"), img));
        }
        want.push((e, vec![reference]));
    }
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    for (t, img) in &tags {
        w.tag(t, img);
    }
    w.finish();
    (env, want)
}

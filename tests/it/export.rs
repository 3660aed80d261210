//! Owns the `ocibundle export` tests: docker-archive, OCI layout and OCI archive checked by their real consumers (podman load, containerd `ctr images import`, skopeo, umoci, a second registry), from the store and from bundles, and the error contract.
//!
//! Each test starts its own registry and, where needed, its own podman storage and containerd
//! daemon (harness/peers.rs), so tests run in parallel. Expected values come from the registry
//! (manifest digests, config blobs and their diff_ids) and from docs/cli.md; none from the
//! export code. No test asserts on timing.
//!
//! Naming facts these tests pin down (podman 4.3, containerd 1.6, skopeo 1.9):
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
use crate::harness::cmd::{Env, fails, s, sha256, text, tool};
use crate::harness::fixtures::{
    self, Compression, Entry, Fixtures, LayoutWriter, MT_CONFIG, MT_INDEX, MT_MANIFEST, tar_bytes,
};
use crate::harness::peers::{Containerd, Podman};
use crate::harness::registry::{Registry, Variant};

// ---------------------------------------------------------------------------------------------
// helpers

/// Names in `dir` (sorted), e.g. to see that a failed export left nothing behind.
fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

fn hex(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
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
        let mbytes = t.must(&format!("blobs/sha256/{}", hex(md)));
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
                t.get(&format!("blobs/sha256/{}", hex(l))).is_some(),
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

// ---------------------------------------------------------------------------------------------
// 1. docker-archive into podman

#[test]
fn docker_archive_loads_into_podman() {
    let st = Setup::new();
    let out = st.path("four.tar");
    let mut args = vec!["export", "--docker-archive", s(&out)];
    args.extend(st.four());
    let doc = st.env.json(&args);
    // Private-registry RepoTags are the full names (docker's familiar form keeps a host).
    let want = with_tags(st.expect_four());
    let data = fs::read(&out).unwrap();
    let t = check_docker_archive(&data, &want);
    check_json(&doc, &out, "docker-archive", &want, Some(&t));
    // simple and shared share their first layer blob: one layer file for both.
    assert_eq!(
        st.fx.simple.image.layers[0].digest,
        st.fx.shared.image.layers[0].digest
    );

    let podman = Podman::new();
    let mut loaded = podman.load(&out);
    loaded.sort();
    let mut want_loaded: Vec<String> = st.four().iter().map(|r| r.to_string()).collect();
    want_loaded.sort();
    assert_eq!(loaded, want_loaded, "podman load printed these names");
    assert_eq!(
        podman.images(),
        podman_expect(&want),
        "podman images after load (ID = config digest)"
    );

    // multi, arm64 picked from the index, in a separate archive.
    let arm = st.path("arm64.tar");
    let doc = st.env.json(&[
        "export",
        "--docker-archive",
        s(&arm),
        "--platform",
        "linux/arm64",
        &st.fx.multi.reference,
    ]);
    let mut e = expect_from_registry(
        &st.reg,
        &child_ref(&st.reg, &st.fx.multi.reference, "linux/arm64/v8"),
        &st.fx.multi.reference,
    );
    assert_eq!(e.platform, "linux/arm64/v8");
    let want_arm = vec![(e.clone(), vec![st.fx.multi.reference.clone()])];
    let t = check_docker_archive(&fs::read(&arm).unwrap(), &want_arm);
    check_json(&doc, &arm, "docker-archive", &want_arm, Some(&t));
    podman.remove_all();
    assert_eq!(podman.load(&arm), vec![st.fx.multi.reference.clone()]);
    assert_eq!(
        podman.images(),
        podman_expect(&want_arm),
        "podman images after loading the arm64 archive"
    );
    let arch = podman.ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}}",
        &st.fx.multi.reference,
    ]);
    assert_eq!(arch.trim(), "linux/arm64", "podman sees the arm64 config");

    // `--docker-archive -` straight into `podman load` (stdin).
    podman.remove_all();
    let mut producer = st.env.cmd();
    producer.args([
        "export",
        "--docker-archive",
        "-",
        &st.fx.zstd.reference,
        &st.fx.schema2.reference,
    ]);
    let mut loaded = podman.load_from(&mut producer);
    loaded.sort();
    assert_eq!(
        loaded,
        vec![
            st.fx.schema2.reference.clone(),
            st.fx.zstd.reference.clone()
        ],
        "podman load from the pipe"
    );
    let want_two = with_tags(vec![
        st.expect(&st.fx.schema2.reference),
        st.expect(&st.fx.zstd.reference),
    ]);
    assert_eq!(
        podman.images(),
        podman_expect(&want_two),
        "podman images after loading from the pipe"
    );

    // A one-image OCI archive loads into podman under its full name with the registry's
    // manifest digest (podman refuses OCI archives holding more than one image).
    podman.remove_all();
    let oa = st.path("simple-oci.tar");
    st.env
        .ok(&["export", "--oci-archive", s(&oa), &st.fx.simple.reference]);
    assert_eq!(
        podman.load(&oa),
        vec![st.fx.simple.reference.clone()],
        "podman load of the OCI archive"
    );
    let got = podman.ok(&["images", "--no-trunc", "--format", "{{.ID}} {{.Digest}}"]);
    let simple = st.expect(&st.fx.simple.reference);
    assert_eq!(
        got.trim(),
        format!("{} {}", simple.image_id, st.fx.simple.digest),
        "podman's ID and digest of the OCI archive image"
    );

    // Without --platform: the host's (linux/amd64), and a note on stderr says so.
    let amd = st.path("amd64.tar");
    let o = st.env.run(&[
        "export",
        "--docker-archive",
        s(&amd),
        &st.fx.multi.reference,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("linux/amd64"),
        "no note naming the platform picked: {}",
        text(&o)
    );
    e = expect_from_registry(
        &st.reg,
        &child_ref(&st.reg, &st.fx.multi.reference, "linux/amd64"),
        &st.fx.multi.reference,
    );
    check_docker_archive(
        &fs::read(&amd).unwrap(),
        &[(e, vec![st.fx.multi.reference.clone()])],
    );
}

// ---------------------------------------------------------------------------------------------
// 1b. docker's familiar names, digest-only references, aliases of one image

/// Adds `name` to the store's index.json as another name for the manifest `target` already
/// has (what fetching the same image under that name would give).
fn alias_in_store(env: &Env, target: &str, name: &str) {
    let p = env.store().join("index.json");
    let mut idx: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    let ms = idx["manifests"].as_array_mut().unwrap();
    let mut d = ms
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == target)
        .unwrap_or_else(|| panic!("{target} not in the store"))
        .clone();
    d["annotations"]["org.opencontainers.image.ref.name"] = json!(name);
    ms.push(d);
    ms.sort_by(|a, b| {
        a["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .cmp(&b["annotations"]["org.opencontainers.image.ref.name"].as_str())
    });
    fs::write(&p, serde_json::to_vec(&idx).unwrap()).unwrap();
}

#[test]
fn docker_archive_familiar_names_and_digest_only_refs() {
    let st = Setup::new();
    // docker.io names without talking to docker.io: aliases in the store's index.json.
    alias_in_store(
        &st.env,
        &st.fx.simple.reference,
        "docker.io/library/redis:7",
    );
    alias_in_store(&st.env, &st.fx.shared.reference, "docker.io/myorg/app:2");
    let pinned = st.fx.schema2.pinned();
    st.env.ok(&["fetch", &pinned]);
    let v = st.env.json(&["store", "fsck"]);
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(0),
        "the aliased store is sound: {v}"
    );

    let out = st.path("names.tar");
    let doc = st.env.json(&[
        "export",
        "--docker-archive",
        s(&out),
        "docker.io/library/redis:7",
        "myorg/app:2",
        &pinned,
    ]);
    let want = vec![
        (
            expect_from_registry(
                &st.reg,
                &st.fx.simple.reference,
                "docker.io/library/redis:7",
            ),
            vec!["docker.io/library/redis:7".to_string()],
        ),
        (
            expect_from_registry(&st.reg, &st.fx.shared.reference, "docker.io/myorg/app:2"),
            vec!["docker.io/myorg/app:2".to_string()],
        ),
        (expect_from_registry(&st.reg, &pinned, &pinned), vec![]),
    ];
    let t = check_docker_archive(&fs::read(&out).unwrap(), &want);
    check_json(&doc, &out, "docker-archive", &want, Some(&t));

    let podman = Podman::new();
    podman.load(&out);
    assert_eq!(
        podman.images(),
        podman_expect(&want),
        "podman names: fully qualified RepoTags are kept (docker.io/library/redis:7, not localhost/redis:7), no RepoTag -> <none>:<none>"
    );

    let ctd = Containerd::start();
    ctd.import(&out, &[]);
    let names: BTreeSet<String> = ctd
        .images()
        .into_iter()
        .map(|i| i.name)
        .filter(|n| !n.starts_with("sha256:"))
        .collect();
    let want_names: BTreeSet<String> = want.iter().map(|(e, _)| e.reference.clone()).collect();
    assert_eq!(
        names, want_names,
        "containerd names = io.containerd.image.name, the digest-pinned one included"
    );

    // Two names of one image: one manifest.json entry with both RepoTags.
    let two = st.path("two.tar");
    st.env.ok(&[
        "export",
        "--docker-archive",
        s(&two),
        &st.fx.simple.reference,
        "redis:7",
    ]);
    let e = expect_from_registry(&st.reg, &st.fx.simple.reference, &st.fx.simple.reference);
    let t = check_docker_archive(
        &fs::read(&two).unwrap(),
        &[(
            e.clone(),
            vec![st.fx.simple.reference.clone(), "docker.io/library/redis:7".into()],
        )],
    );
    let idx = t.json("index.json");
    let named: BTreeSet<&str> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["annotations"]["io.containerd.image.name"].as_str())
        .collect();
    assert_eq!(
        named,
        BTreeSet::from([st.fx.simple.reference.as_str(), "docker.io/library/redis:7"]),
        "index.json names: {idx}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. containerd

#[test]
fn containerd_imports_docker_archive_and_oci_archive() {
    let st = Setup::new();
    let ctd = Containerd::start();

    let da = st.path("four.tar");
    let mut args = vec!["export", "--docker-archive", s(&da)];
    args.extend(st.four());
    st.env.ok(&args);
    let want = with_tags(st.expect_four());
    let t = check_docker_archive(&fs::read(&da).unwrap(), &want);
    let idx = t.json("index.json");
    ctd.import(&da, &[]);
    let imgs = ctd.images();
    let mut want_names: Vec<String> = want.iter().map(|(e, _)| e.reference.clone()).collect();
    for (e, _) in &want {
        let entry = idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["io.containerd.image.name"] == e.reference.as_str())
            .unwrap();
        let got = imgs
            .iter()
            .find(|i| i.name == e.reference)
            .unwrap_or_else(|| panic!("containerd has no {}: {imgs:?}", e.reference));
        assert_eq!(
            got.digest,
            entry["digest"].as_str().unwrap(),
            "containerd's target for {} = the archive's index.json manifest",
            e.reference
        );
    }
    // The CRI plugin (built into Debian's containerd 1.6) names each image by its ID too:
    // the config digest.
    assert!(
        ctd.cri(),
        "containerd runs without its CRI plugin:\n{}",
        ctd.log()
    );
    if ctd.cri() {
        want_names.extend(want.iter().map(|(e, _)| e.image_id.clone()));
    }
    let mut got_names: Vec<String> = imgs.iter().map(|i| i.name.clone()).collect();
    got_names.sort();
    want_names.sort();
    assert_eq!(
        got_names, want_names,
        "containerd images after importing the docker-archive"
    );
    // Unpacked: the snapshots exist for the host platform (import unpacks by default).
    let usage = ctd.ctr_ok(&["images", "check"]);
    for (e, _) in &want {
        let line = usage
            .lines()
            .find(|l| l.starts_with(&format!("{} ", e.reference)))
            .unwrap_or_else(|| panic!("{} not in ctr images check:\n{usage}", e.reference));
        assert!(line.contains("complete"), "ctr images check: {line}");
    }
    ctd.remove_all();

    // arm64 from the index, piped: `export --docker-archive - | ctr images import -`.
    let mut producer = st.env.cmd();
    producer.args([
        "export",
        "--docker-archive",
        "-",
        "--platform",
        "linux/arm64",
        &st.fx.multi.reference,
    ]);
    ctd.import_from(&mut producer);
    let arm = expect_from_registry(
        &st.reg,
        &child_ref(&st.reg, &st.fx.multi.reference, "linux/arm64/v8"),
        &st.fx.multi.reference,
    );
    let imgs = ctd.images();
    let got = imgs
        .iter()
        .find(|i| i.name == st.fx.multi.reference)
        .unwrap_or_else(|| panic!("containerd has no {}: {imgs:?}", st.fx.multi.reference));
    assert_eq!(
        got.media_type, MT_MANIFEST,
        "one platform of the index, as an image manifest: {got:?}"
    );
    let names: Vec<&str> = imgs
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !n.starts_with("sha256:"))
        .collect();
    assert_eq!(names, vec![st.fx.multi.reference.as_str()], "{imgs:?}");
    let ids: Vec<&str> = imgs
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| n.starts_with("sha256:"))
        .collect();
    let want_ids: Vec<&str> = if ctd.cri() {
        vec![arm.image_id.as_str()]
    } else {
        vec![]
    };
    assert_eq!(
        ids, want_ids,
        "containerd's image ID of the arm64 export: {imgs:?}"
    );
    ctd.remove_all();

    // OCI archive: registry digests kept, the index too.
    let oa = st.path("oci.tar");
    st.env.ok(&[
        "export",
        "--oci-archive",
        s(&oa),
        &st.fx.simple.reference,
        &st.fx.zstd.reference,
        &st.fx.multi.reference,
    ]);
    ctd.import(&oa, &[]);
    let imgs = ctd.images();
    for p in [&st.fx.simple, &st.fx.zstd, &st.fx.multi] {
        let got = imgs
            .iter()
            .find(|i| i.name == p.reference)
            .unwrap_or_else(|| panic!("containerd has no {}: {imgs:?}", p.reference));
        assert_eq!(
            got.digest, p.digest,
            "containerd's target for {} = the registry's digest",
            p.reference
        );
    }
    let multi = imgs
        .iter()
        .find(|i| i.name == st.fx.multi.reference)
        .unwrap();
    assert_eq!(multi.media_type, MT_INDEX, "the index is kept: {multi:?}");
    let plain: Vec<&str> = imgs
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !n.starts_with("sha256:"))
        .collect();
    assert_eq!(
        plain.len(),
        3,
        "containerd names after importing the OCI archive: {imgs:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. skopeo reads every image of the docker-archive, zstd included

#[test]
fn skopeo_reads_every_image_of_the_docker_archive() {
    let st = Setup::new();
    let out = st.path("four.tar");
    let mut args = vec!["export", "--docker-archive", s(&out)];
    args.extend(st.four());
    st.env.ok(&args);
    for e in st.expect_four() {
        let src = format!("docker-archive:{}:{}", s(&out), e.reference);
        let v: Value = serde_json::from_str(&tool("skopeo", &["inspect", &src])).unwrap();
        let layers: Vec<&str> = v["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(
            layers, e.diff_ids,
            "skopeo inspect {src}: Layers = the diff_ids"
        );
        let config = tool("skopeo", &["inspect", "--config", "--raw", &src]);
        assert_eq!(
            sha256(config.as_bytes()),
            e.image_id,
            "skopeo inspect --config --raw {src}: the config, unchanged"
        );
        // Copy the whole image out: skopeo reads every layer (and checks their digests).
        let d = tempfile::tempdir().unwrap();
        let dest = format!("dir:{}", d.path().join("img").display());
        tool("skopeo", &["copy", "--quiet", &src, &dest]);
        for diff in &e.diff_ids {
            let f = d.path().join("img").join(hex(diff));
            let data = fs::read(&f)
                .unwrap_or_else(|err| panic!("skopeo copy of {src} wrote no layer {diff}: {err}"));
            assert_eq!(sha256(&data), *diff, "{}", f.display());
        }
    }
    // The zstd fixture really has a zstd layer (which skopeo/podman cannot write as docker-archive).
    assert!(
        st.fx
            .zstd
            .image
            .layers
            .iter()
            .any(|l| l.media_type == fixtures::MT_LAYER_ZSTD)
    );
}

// ---------------------------------------------------------------------------------------------
// 4. OCI layout: byte-identical, pushable with the same digests, unpackable

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

#[test]
fn oci_layout_keeps_digests_and_unpacks() {
    let st = Setup::new();
    let dir = st.path("layout");
    let refs = [
        &st.fx.simple,
        &st.fx.schema2,
        &st.fx.zstd,
        &st.fx.multi,
        &st.fx.shared,
    ];
    let mut args = vec!["export", "--oci-layout", s(&dir)];
    args.extend(refs.iter().map(|p| p.reference.as_str()));
    let doc = st.env.json(&args);
    assert_eq!(doc["format"], "oci-layout", "{doc}");
    assert_eq!(doc["images"].as_array().map(Vec::len), Some(5), "{doc}");
    for p in refs {
        let i = doc["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["reference"] == p.reference.as_str());
        let i = i.unwrap_or_else(|| panic!("{} not in {doc}", p.reference));
        assert_eq!(
            i["manifest_digest"],
            p.digest.as_str(),
            "manifest_digest of an OCI layout image = the registry's: {i}"
        );
    }

    assert_eq!(
        serde_json::from_slice::<Value>(&fs::read(dir.join("oci-layout")).unwrap()).unwrap()["imageLayoutVersion"],
        "1.0.0"
    );
    let idx: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blobs = layout_blobs(&dir);
    for p in refs {
        let entries: Vec<&Value> = idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["annotations"]["org.opencontainers.image.ref.name"] == p.reference.as_str()
            })
            .collect();
        assert_eq!(
            entries.len(),
            1,
            "index.json entries for {}: {idx}",
            p.reference
        );
        let d = entries[0];
        assert_eq!(
            d["digest"],
            p.digest.as_str(),
            "{} keeps the registry's digest: {d}",
            p.reference
        );
        assert_eq!(
            d["annotations"]["io.containerd.image.name"],
            p.reference.as_str(),
            "{d}"
        );
        // Every blob the registry serves for it is there, byte for byte.
        assert!(blobs.contains(&p.digest), "manifest {} missing", p.digest);
        let raw = st.reg.raw_manifest(&p.reference);
        let m: Value = serde_json::from_slice(&raw).unwrap();
        let manifests: Vec<Value> = if m["mediaType"] == MT_INDEX {
            assert_eq!(
                d["mediaType"], MT_INDEX,
                "the index is kept for {}",
                p.reference
            );
            m["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let r = format!(
                        "{}@{}",
                        p.reference.rsplit_once(':').unwrap().0,
                        c["digest"].as_str().unwrap()
                    );
                    assert!(
                        blobs.contains(c["digest"].as_str().unwrap()),
                        "child {r} missing"
                    );
                    serde_json::from_slice(&st.reg.raw_manifest(&r)).unwrap()
                })
                .collect()
        } else {
            vec![m]
        };
        for m in manifests {
            assert!(
                blobs.contains(m["config"]["digest"].as_str().unwrap()),
                "config of {} missing",
                p.reference
            );
            for l in m["layers"].as_array().unwrap() {
                assert!(
                    blobs.contains(l["digest"].as_str().unwrap()),
                    "layer {} of {} missing",
                    l["digest"],
                    p.reference
                );
            }
        }
    }
    // Nothing but what the five need (the store holds nothing else here anyway).
    let store_blobs: BTreeSet<String> = crate::harness::bundles::store_blobs(&st.env.store())
        .into_iter()
        .collect();
    assert!(
        blobs.is_subset(&store_blobs),
        "layout blobs not in the store: {:?}",
        blobs.difference(&store_blobs).collect::<Vec<_>>()
    );

    // --all: the same layout (the store holds exactly these five).
    let dir_all = st.path("layout-all");
    st.env.ok(&["export", "--oci-layout", s(&dir_all), "--all"]);
    assert_eq!(layout_blobs(&dir_all), blobs, "--all: the same blobs");
    let idx_all: Value =
        serde_json::from_slice(&fs::read(dir_all.join("index.json")).unwrap()).unwrap();
    let entries = |v: &Value| -> BTreeSet<String> {
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.to_string())
            .collect()
    };
    assert_eq!(
        entries(&idx_all),
        entries(&idx),
        "--all: the same index.json entries"
    );

    // skopeo pushes from the layout to a second registry with the same digests.
    let reg2 = Registry::start(Variant::Plain);
    for (p, all, dest) in [
        (&st.fx.simple, false, "copy/simple:1"),
        (&st.fx.zstd, false, "copy/zstd:1"),
        (&st.fx.multi, true, "copy/multi:1"),
    ] {
        let src = format!("oci:{}:{}", s(&dir), p.reference);
        let dst = format!("docker://{}/{dest}", reg2.host());
        let mut a = vec![
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ];
        if all {
            a.push("--all");
        }
        a.extend([src.as_str(), dst.as_str()]);
        tool("skopeo", &a);
        let (repo, tag) = dest.split_once(':').unwrap();
        assert_eq!(
            reg2.content_digest(repo, tag),
            p.digest,
            "Docker-Content-Digest of {dst} (from {src})"
        );
        assert_eq!(
            sha256(&reg2.raw_manifest(&format!("{}/{dest}", reg2.host()))),
            p.digest,
            "raw manifest of {dst}"
        );
    }

    // umoci unpacks simple: files, modes, links, the whiteout applied.
    let b = tempfile::tempdir().unwrap();
    let bundle = b.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{}", s(&dir), st.fx.simple.reference),
            s(&bundle),
        ],
    );
    check_simple_rootfs(&bundle.join("rootfs"));

    // The OCI archive is the same layout as one tar.
    let oa = st.path("layout.tar");
    let mut args = vec!["export", "--oci-archive", s(&oa)];
    args.extend(refs.iter().map(|p| p.reference.as_str()));
    st.env.ok(&args);
    let t = Tar::read(&fs::read(&oa).unwrap());
    let mut in_tar: BTreeSet<String> = BTreeSet::new();
    for (n, ty, d) in &t.entries {
        if !ty.is_file() {
            continue;
        }
        let on_disk = fs::read(dir.join(n))
            .unwrap_or_else(|e| panic!("{n} of the OCI archive is not in the layout: {e}"));
        assert!(
            *d == on_disk,
            "{n} differs between the OCI archive and the layout"
        );
        in_tar.insert(n.clone());
    }
    let want: BTreeSet<String> = blobs
        .iter()
        .map(|b| format!("blobs/sha256/{}", hex(b)))
        .chain(["index.json".to_string(), "oci-layout".to_string()])
        .collect();
    assert_eq!(
        in_tar, want,
        "files of the OCI archive = files of the layout"
    );
    let v: Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            &format!("oci-archive:{}:{}", s(&oa), st.fx.simple.reference),
        ],
    ))
    .unwrap();
    assert_eq!(
        v["Digest"],
        st.fx.simple.digest.as_str(),
        "skopeo inspect oci-archive: {v}"
    );
}

fn check_simple_rootfs(root: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let hello = root.join("bin/hello");
    assert_eq!(
        fs::read(&hello).unwrap(),
        b"#!/bin/sh\necho hello from ocibundle\n"
    );
    assert_eq!(
        fs::metadata(&hello).unwrap().permissions().mode() & 0o7777,
        0o755,
        "bin/hello mode"
    );
    assert_eq!(
        fs::read_link(root.join("bin/hi")).unwrap(),
        PathBuf::from("hello"),
        "bin/hi symlink target"
    );
    let h2 = fs::metadata(root.join("bin/hello2")).unwrap();
    assert_eq!(
        h2.ino(),
        fs::metadata(&hello).unwrap().ino(),
        "bin/hello2 is a hard link of bin/hello"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "fixture\n"
    );
    assert_eq!(
        fs::metadata(root.join("etc/hostname"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o644,
        "etc/hostname mode"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/motd")).unwrap(),
        "simple v1\n"
    );
    assert!(
        fs::symlink_metadata(root.join("etc/x")).is_err(),
        "etc/x was whited out by the second layer"
    );
    assert!(
        fs::symlink_metadata(root.join("etc/.wh.x")).is_err(),
        "the whiteout marker itself is not a file"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. from a bundle

#[test]
fn export_from_bundle_equals_export_from_store_and_delta_needs_base() {
    let st = Setup::new();
    let bundle = st.path("four.obun");
    let mut args = vec!["bundle", "-o", s(&bundle)];
    args.extend(st.four());
    st.env.ok(&args);

    let from_store = st.path("store.tar");
    let mut args = vec!["export", "--docker-archive", s(&from_store)];
    args.extend(st.four());
    let j1 = st.env.json(&args);

    // From the bundle, with no store at all.
    let empty = Env::new();
    let from_bundle = st.path("bundle.tar");
    let mut args = vec![
        "export",
        "--docker-archive",
        s(&from_bundle),
        "--from",
        s(&bundle),
    ];
    args.extend(st.four());
    let j2 = empty.json(&args);
    assert!(
        store_refs(&empty.store()).is_empty(),
        "export --from created or filled a store"
    );
    let want = with_tags(st.expect_four());
    check_docker_archive(&fs::read(&from_bundle).unwrap(), &want);
    assert_eq!(
        j1["images"], j2["images"],
        "same images, IDs and manifests from the store and the bundle"
    );
    assert!(
        fs::read(&from_store).unwrap() == fs::read(&from_bundle).unwrap(),
        "the docker-archive from the bundle differs from the one from the store (not deterministic)"
    );
    // From a split bundle, naming its second volume.
    let split = st.path("split.obun");
    let mut args = vec!["bundle", "-o", s(&split), "--split-size", "5000"];
    args.extend(st.four());
    st.env.ok(&args);
    let vol2 = crate::harness::bundles::volume(&split, 2);
    assert!(
        crate::harness::bundles::volume(&split, 3).exists(),
        "want at least 3 volumes"
    );
    let from_split = st.path("split.tar");
    let mut args = vec![
        "export",
        "--docker-archive",
        s(&from_split),
        "--from",
        s(&vol2),
    ];
    args.extend(st.four());
    empty.ok(&args);
    assert!(
        fs::read(&from_split).unwrap() == fs::read(&from_store).unwrap(),
        "the docker-archive from the split bundle differs from the one from the store"
    );
    // --all from the bundle = its images.
    let all = st.path("all.tar");
    let j3 = empty.json(&[
        "export",
        "--docker-archive",
        s(&all),
        "--from",
        s(&bundle),
        "--all",
    ]);
    assert_eq!(
        j3["images"], j1["images"],
        "--all --from BUNDLE exports the bundle's images"
    );
    // OCI layout from the bundle: the registry's digests.
    let lay = st.path("layout");
    empty.ok(&[
        "export",
        "--oci-layout",
        s(&lay),
        "--from",
        s(&bundle),
        &st.fx.zstd.reference,
    ]);
    let idx: Value = serde_json::from_slice(&fs::read(lay.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        idx["manifests"][0]["digest"],
        st.fx.zstd.digest.as_str(),
        "{idx}"
    );
    layout_blobs(&lay);

    // Delta: shared's first layer is in the base (simple), so the delta does not carry it.
    let base = st.path("base.obun");
    let delta = st.path("delta.obun");
    st.env
        .ok(&["bundle", "-o", s(&base), &st.fx.simple.reference]);
    st.env.ok(&[
        "bundle",
        "-o",
        s(&delta),
        "--since",
        s(&base),
        &st.fx.shared.reference,
    ]);
    let missing = &st.fx.simple.image.layers[0].digest;
    let outdir = tempfile::tempdir().unwrap();
    let x = outdir.path().join("x.tar");
    let e = fails(
        &empty,
        &[
            "export",
            "--docker-archive",
            s(&x),
            "--from",
            s(&delta),
            &st.fx.shared.reference,
        ],
    );
    assert!(
        e.contains(missing.as_str()),
        "the error does not name the blob the delta leaves to its base ({missing}): {e}"
    );
    assert!(
        dir_names(outdir.path()).is_empty(),
        "failed export left {:?}",
        dir_names(outdir.path())
    );
    let e = fails(
        &empty,
        &[
            "export",
            "--oci-layout",
            s(&outdir.path().join("lay")),
            "--from",
            s(&delta),
            &st.fx.shared.reference,
        ],
    );
    assert!(
        e.contains(missing.as_str()),
        "OCI layout: the error does not name {missing}: {e}"
    );
    assert!(
        dir_names(outdir.path()).is_empty(),
        "failed export left {:?}",
        dir_names(outdir.path())
    );
    // With the base imported into the store, the delta exports.
    empty.ok(&["import", s(&base)]);
    empty.ok(&[
        "export",
        "--docker-archive",
        s(&x),
        "--from",
        s(&delta),
        &st.fx.shared.reference,
    ]);
    check_docker_archive(
        &fs::read(&x).unwrap(),
        &with_tags(vec![st.expect(&st.fx.shared.reference)]),
    );
}

// ---------------------------------------------------------------------------------------------
// 6. bad input and output handling

#[test]
fn missing_ref_existing_output_and_stdout() {
    let st = Setup::new();
    let nope = format!("{}/test/nope:v1", st.reg.host());
    let out = st.path("x.tar");
    let e = fails(
        &st.env,
        &[
            "export",
            "--docker-archive",
            s(&out),
            &st.fx.simple.reference,
            &nope,
        ],
    );
    assert!(
        e.contains(&nope),
        "the error does not name the missing reference: {e}"
    );
    for p in [&st.fx.simple, &st.fx.zstd, &st.fx.multi] {
        assert!(
            e.contains(&p.reference),
            "the error does not list {} (what the store holds): {e}",
            p.reference
        );
    }
    assert!(!out.exists(), "a failed export left {}", out.display());
    // From a bundle: lists the bundle's images.
    let b = st.path("b.obun");
    st.env.ok(&["bundle", "-o", s(&b), &st.fx.shared.reference]);
    let e = fails(
        &st.env,
        &[
            "export",
            "--oci-archive",
            s(&out),
            "--from",
            s(&b),
            &st.fx.simple.reference,
        ],
    );
    assert!(
        e.contains(&st.fx.simple.reference) && e.contains(&st.fx.shared.reference),
        "error names the ref and lists the bundle's: {e}"
    );
    assert!(!out.exists());

    // An existing output is refused and kept.
    for flag in ["--docker-archive", "--oci-archive"] {
        fs::write(&out, b"precious").unwrap();
        let e = fails(&st.env, &["export", flag, s(&out), &st.fx.simple.reference]);
        assert!(
            e.contains("x.tar"),
            "{flag}: the error does not name the existing file: {e}"
        );
        assert_eq!(
            fs::read(&out).unwrap(),
            b"precious",
            "{flag}: the existing output was changed"
        );
        st.env
            .ok(&["export", flag, s(&out), "--force", &st.fx.simple.reference]);
        assert_ne!(
            fs::read(&out).unwrap(),
            b"precious",
            "{flag} --force did not replace the output"
        );
        fs::remove_file(&out).unwrap();
    }
    let lay = st.path("lay");
    fs::create_dir(&lay).unwrap();
    fs::write(lay.join("keep"), b"precious").unwrap();
    let e = fails(
        &st.env,
        &["export", "--oci-layout", s(&lay), &st.fx.simple.reference],
    );
    assert!(
        e.contains("lay"),
        "the error does not name the existing directory: {e}"
    );
    assert_eq!(
        dir_names(&lay),
        vec!["keep"],
        "the existing directory was changed"
    );
    st.env.ok(&[
        "export",
        "--oci-layout",
        s(&lay),
        "--force",
        &st.fx.simple.reference,
    ]);
    assert!(
        lay.join("index.json").exists(),
        "--force did not write the layout"
    );
    let left: Vec<String> = dir_names(st.out.path())
        .into_iter()
        .filter(|n| n.contains("lay") && n != "lay")
        .collect();
    assert!(
        left.is_empty(),
        "temp or backup directories left beside the layout: {left:?}"
    );

    // `-` writes the same archive to stdout.
    let file = st.path("file.tar");
    let mut args = vec!["export", "--docker-archive", s(&file)];
    args.extend(st.four());
    st.env.ok(&args);
    let mut args = vec!["export", "--docker-archive", "-"];
    args.extend(st.four());
    let o = st.env.run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stdout == fs::read(&file).unwrap(),
        "--docker-archive - wrote {} bytes, the file has {}",
        o.stdout.len(),
        fs::metadata(&file).unwrap().len()
    );
    let oa = st.path("oa.tar");
    st.env
        .ok(&["export", "--oci-archive", s(&oa), &st.fx.multi.reference]);
    let o = st
        .env
        .run(&["export", "--oci-archive", "-", &st.fx.multi.reference]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stdout == fs::read(&oa).unwrap(),
        "--oci-archive - differs from the file"
    );
    // --images FILE picks the same images.
    let list = st.path("list.txt");
    fs::write(
        &list,
        format!(
            "# the four\n{}\n\n{}\n{}\n{}\n",
            st.four()[0],
            st.four()[1],
            st.four()[2],
            st.four()[3]
        ),
    )
    .unwrap();
    let viafile = st.path("viafile.tar");
    st.env.ok(&[
        "export",
        "--docker-archive",
        s(&viafile),
        "--images",
        s(&list),
    ]);
    check_docker_archive(&fs::read(&viafile).unwrap(), &with_tags(st.expect_four()));
}

/// A store written by hand: one real layer, and images whose configs do not fit it.
/// Returns (env, layer blob digest, its true diff_id, the wrong diff_id).
fn crafted_store(reg_host: &str) -> (Env, String, String, String) {
    let env = Env::new();
    let mut w = LayoutWriter::new(&env.store());
    let tar = tar_bytes(&[
        Entry::Dir("etc/"),
        Entry::File("etc/real", b"the real layer\n".to_vec(), 0o644),
    ]);
    let (layer, diff_id) = w.layer_from_tar(&tar, Compression::Gzip);
    let wrong = sha256(b"not the layer");
    let desc =
        |b: &fixtures::Blob| json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size});
    let mut image = |diff_ids: Vec<&str>, layers: Vec<&fixtures::Blob>, tag: &str| {
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {"Labels": {"org.ocibundle.test": tag}},
        });
        let config = w.blob(&serde_json::to_vec(&config).unwrap(), MT_CONFIG);
        let m = json!({"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": desc(&config), "layers": layers.iter().map(|b| desc(b)).collect::<Vec<_>>()});
        let m = w.blob(&serde_json::to_vec(&m).unwrap(), MT_MANIFEST);
        (format!("{reg_host}/test/{tag}:v1"), m)
    };
    let good = image(vec![&diff_id], vec![&layer], "good");
    let bad = image(vec![&wrong], vec![&layer], "bad");
    let count = image(vec![&diff_id, &diff_id], vec![&layer], "count");
    let mut entries = [good, bad, count];
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let idx = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": entries.iter().map(|(r, m)| {
        let mut d = desc(m);
        d["annotations"] = json!({"org.opencontainers.image.ref.name": r});
        d
    }).collect::<Vec<_>>()});
    fs::write(
        env.store().join("index.json"),
        serde_json::to_vec(&idx).unwrap(),
    )
    .unwrap();
    (env, layer.digest, diff_id, wrong)
}

#[test]
fn layer_not_matching_its_diff_id_fails_and_leaves_nothing() {
    let host = "127.0.0.1:5";
    let (env, layer, diff_id, wrong) = crafted_store(host);
    // The store itself is sound: every blob hashes to its name, every reference is complete.
    let v = env.json(&["store", "fsck"]);
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(0),
        "hand-made store: {v}"
    );

    let out = tempfile::tempdir().unwrap();
    let good = out.path().join("good.tar");
    env.ok(&[
        "export",
        "--docker-archive",
        s(&good),
        &format!("{host}/test/good:v1"),
    ]);
    let t = Tar::read(&fs::read(&good).unwrap());
    assert_eq!(
        sha256(t.must(&format!("blobs/sha256/{}", hex(&diff_id)))),
        diff_id,
        "the control image exports"
    );
    fs::remove_file(&good).unwrap();

    let x = out.path().join("x.tar");
    let e = fails(
        &env,
        &[
            "export",
            "--docker-archive",
            s(&x),
            &format!("{host}/test/bad:v1"),
        ],
    );
    assert!(
        e.contains(&layer) || e.contains(&wrong),
        "the error names neither the layer {layer} nor the diff_id {wrong}: {e}"
    );
    assert!(
        e.contains("diff_id") || e.contains(&wrong),
        "the error does not say the diff_id does not match: {e}"
    );
    assert!(
        dir_names(out.path()).is_empty(),
        "a failed export left {:?}",
        dir_names(out.path())
    );
    // Good and bad together: still all or nothing.
    let e = fails(
        &env,
        &[
            "export",
            "--docker-archive",
            s(&x),
            &format!("{host}/test/good:v1"),
            &format!("{host}/test/bad:v1"),
        ],
    );
    assert!(e.contains(&layer) || e.contains(&wrong), "{e}");
    assert!(
        dir_names(out.path()).is_empty(),
        "a failed export left {:?}",
        dir_names(out.path())
    );
    // To stdout: exit 1, and the error line.
    let o = env.run(&[
        "export",
        "--docker-archive",
        "-",
        &format!("{host}/test/bad:v1"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // Config lists two diff_ids, manifest one layer.
    let e = fails(
        &env,
        &[
            "export",
            "--docker-archive",
            s(&x),
            &format!("{host}/test/count:v1"),
        ],
    );
    assert!(
        e.contains("count"),
        "the error does not name the image: {e}"
    );
    assert!(
        dir_names(out.path()).is_empty(),
        "a failed export left {:?}",
        dir_names(out.path())
    );
}

// ---------------------------------------------------------------------------------------------
// 7. layer forms: gzip, zstd and uncompressed layers of one diff_id, a layer used twice, no layers

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

#[test]
fn layer_forms_dedup_by_diff_id_and_load() {
    let host = "127.0.0.1:5";
    let (env, mut want) = layer_forms_store(host);
    let v = env.json(&["store", "fsck"]);
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(0),
        "hand-made store: {v}"
    );
    let out = tempfile::tempdir().unwrap();
    let x = out.path().join("forms.tar");
    let doc = env.json(&["export", "--docker-archive", s(&x), "--all"]);
    // gz:v1 and gz:v2 are one image: one manifest.json entry with both tags.
    want[0].1.push(format!("{host}/forms/gz:v2"));
    let t = check_docker_archive(&fs::read(&x).unwrap(), &want);
    assert_eq!(
        doc["images"].as_array().map(Vec::len),
        Some(6),
        "--all = 6 references: {doc}"
    );
    let repos = t.json("repositories");
    let gz = repos[format!("{host}/forms/gz")]
        .as_object()
        .unwrap_or_else(|| panic!("{repos}"));
    assert_eq!(
        gz.len(),
        2,
        "both tags of forms/gz under one repository: {repos}"
    );
    // The layer used twice is listed twice (same file), as its diff_ids say.
    let mf = t.json("manifest.json");
    let twice = mf
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["RepoTags"] == json!([format!("{host}/forms/twice:v1")]))
        .unwrap();
    assert_eq!(twice["Layers"][0], twice["Layers"][2], "{twice}");

    let podman = Podman::new();
    podman.load(&x);
    assert_eq!(podman.images(), podman_expect(&want), "podman images");
    let ctd = Containerd::start();
    ctd.import(&x, &[]);
    let names: BTreeSet<String> = ctd
        .images()
        .into_iter()
        .map(|i| i.name)
        .filter(|n| !n.starts_with("sha256:"))
        .collect();
    let want_names: BTreeSet<String> = want.iter().flat_map(|(_, t)| t.clone()).collect();
    assert_eq!(names, want_names, "containerd names");
    let check = ctd.ctr_ok(&["images", "check"]);
    for n in &want_names {
        let line = check
            .lines()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("{n} not in ctr images check:\n{check}"));
        assert!(line.contains("complete"), "ctr images check: {line}");
    }
    // --jobs 1 writes the same bytes as the default.
    let j1 = out.path().join("jobs1.tar");
    env.ok(&["export", "--docker-archive", s(&j1), "--all", "--jobs", "1"]);
    assert!(
        fs::read(&j1).unwrap() == fs::read(&x).unwrap(),
        "--jobs 1 gives other bytes than the default"
    );
}

/// Layers whose blobs announce a wrong uncompressed size or none: `mm` = [gzip of T1 in two
/// members (ISIZE names only the last), zstd with its content size of T2], `zs` = [zstd of T3
/// without a content size]. Into a file, `mm`'s first layer outgrows its reserved place and
/// moves after the placed ones, leaving a zero-filled padding entry; the archive still loads,
/// and a pipe gets exactly the same bytes.
#[test]
fn layers_with_wrong_or_no_size_hint_still_export_the_same_bytes() {
    let host = "127.0.0.1:5";
    let env = Env::new();
    let mut w = LayoutWriter::new(&env.store());
    let t1 = tar_bytes(&[Entry::Dir("usr/"), Entry::File("usr/one", fixtures::noise(81, 9000), 0o644)]);
    let t2 = tar_bytes(&[Entry::Dir("etc/"), Entry::File("etc/two", fixtures::noise(82, 3000), 0o600)]);
    let t3 = tar_bytes(&[Entry::Dir("opt/"), Entry::File("opt/three", fixtures::noise(83, 5000), 0o755)]);
    let mut two_members = fixtures::gzip(&t1[..4096]);
    two_members.extend(fixtures::gzip(&t1[4096..]));
    let mm1 = (w.blob(&two_members, fixtures::MT_LAYER_GZIP), sha256(&t1));
    let mm2 = (w.blob(&zstd::bulk::compress(&t2, 3).unwrap(), fixtures::MT_LAYER_ZSTD), sha256(&t2));
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_contentsize(false).unwrap();
    std::io::Write::write_all(&mut enc, &t3).unwrap();
    let zs1 = (w.blob(&enc.finish().unwrap(), fixtures::MT_LAYER_ZSTD), sha256(&t3));
    let mut want = Vec::new();
    for (name, layers) in [("mm", vec![mm1, mm2]), ("zs", vec![zs1])] {
        let img = w.image(&layers, "linux/amd64", name);
        let reference = format!("{host}/hints/{name}:v1");
        w.tag(&reference, &img);
        want.push((
            Expect {
                reference: reference.clone(),
                image_id: img.config.as_ref().unwrap().digest.clone(),
                layer_digests: layers.iter().map(|(b, _)| b.digest.clone()).collect(),
                diff_ids: layers.iter().map(|(_, d)| d.clone()).collect(),
                platform: "linux/amd64".into(),
            },
            vec![reference],
        ));
    }
    w.finish();
    let out = tempfile::tempdir().unwrap();
    let x = out.path().join("hints.tar");
    env.ok(&["export", "--docker-archive", s(&x), "--all"]);
    let bytes = fs::read(&x).unwrap();
    let t = check_docker_archive(&bytes, &want);
    let pads: Vec<&(String, tar::EntryType, Vec<u8>)> =
        t.entries.iter().filter(|(n, _, _)| n.starts_with(".ocibundle-padding-")).collect();
    assert_eq!(pads.len(), 1, "one padding entry for the two-member gzip layer: {:?}", t.names());
    assert!(pads[0].2.iter().all(|&b| b == 0), "the padding entry is zeros");
    assert_eq!(pads[0].2.len() as u64, (t1.len() as u64 - 4096).div_ceil(512) * 512, "the padding is the place ISIZE reserved");
    // Placed biggest first (T1's place, now padding, then T2); then T1 and T3 in image order.
    assert!(t1.len() - 4096 > t2.len(), "fixture sizes");
    let layer_names: Vec<&str> = t.names().into_iter().filter(|n| n.starts_with("blobs/") || n.starts_with(".ocibundle")).take(4).collect();
    let h = |d: &str| format!("blobs/sha256/{}", hex(d));
    assert_eq!(
        layer_names,
        vec![pads[0].0.as_str(), h(&sha256(&t2)).as_str(), h(&sha256(&t1)).as_str(), h(&sha256(&t3)).as_str()],
        "layer order"
    );
    let o = env.run(&["export", "--docker-archive", "-", "--all"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout == bytes, "the pipe got other bytes than the file ({} vs {})", o.stdout.len(), bytes.len());
    let podman = Podman::new();
    podman.load(&x);
    assert_eq!(podman.images(), podman_expect(&want), "podman images");
    let ctd = Containerd::start();
    ctd.import(&x, &[]);
    let check = ctd.ctr_ok(&["images", "check"]);
    for (e, _) in &want {
        let line = check
            .lines()
            .find(|l| l.starts_with(&format!("{} ", e.reference)))
            .unwrap_or_else(|| panic!("{} not in ctr images check:\n{check}", e.reference));
        assert!(line.contains("complete"), "ctr images check: {line}");
    }
}

// ---------------------------------------------------------------------------------------------
// 8. a reader that goes away

/// A store holding one image `127.0.0.1:5/test/big:v1` whose layer is `size` bytes of noise.
fn big_store(size: usize) -> (Env, String) {
    let env = Env::new();
    fixtures::big_layout(&env.store(), size, 7);
    let reference = "127.0.0.1:5/test/big:v1".to_string();
    let p = env.store().join("index.json");
    let mut idx: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = json!(reference);
    fs::write(&p, serde_json::to_vec(&idx).unwrap()).unwrap();
    (env, reference)
}

#[test]
fn stdout_reader_gone_fails_and_leaves_no_spool() {
    use std::io::Read;
    use std::process::Stdio;
    // 8 MB cannot fit in a pipe buffer: the writer must meet the closed pipe.
    let (env, reference) = big_store(8 << 20);
    let mut problems = Vec::new();
    for flag in ["--docker-archive", "--oci-archive"] {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = env
            .cmd()
            .args(["export", flag, "-", &reference])
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut head = [0u8; 512];
        out.read_exact(&mut head).unwrap();
        drop(out);
        let o = child.wait_with_output().unwrap();
        if o.status.success() {
            problems.push(format!(
                "{flag} -: the reader went away after 512 bytes, yet exit 0"
            ));
        }
        // Everything under TMPDIR (the docker-archive spools decompressed layers there).
        let mut left = Vec::new();
        for e in fs::read_dir(tmp.path()).unwrap() {
            let e = e.unwrap();
            let mut n = e.file_name().to_string_lossy().to_string();
            if let Ok(rd) = fs::read_dir(e.path()) {
                for f in rd {
                    let f = f.unwrap();
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    n.push_str(&format!(
                        " {} ({len} bytes)",
                        f.file_name().to_string_lossy()
                    ));
                }
            }
            left.push(n);
        }
        if !left.is_empty() {
            problems.push(format!(
                "{flag} - into a closed pipe ({}) left in TMPDIR: {left:?}",
                o.status
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn missing_store_blob_is_named_and_leaves_nothing() {
    let host = "127.0.0.1:5";
    let (env, want) = layer_forms_store(host);
    let zst = &want
        .iter()
        .find(|(e, _)| e.reference.contains("/zst:"))
        .unwrap()
        .0;
    let gone = zst.layer_digests[1].clone();
    fs::remove_file(env.store().join("blobs/sha256").join(hex(&gone))).unwrap();
    let out = tempfile::tempdir().unwrap();
    for (flag, name) in [
        ("--docker-archive", "x.tar"),
        ("--oci-archive", "x.tar"),
        ("--oci-layout", "x"),
    ] {
        let x = out.path().join(name);
        let e = fails(&env, &["export", flag, s(&x), &zst.reference]);
        assert!(
            e.contains(&gone),
            "{flag}: the error does not name the missing blob {gone}: {e}"
        );
        assert!(
            dir_names(out.path()).is_empty(),
            "{flag}: a failed export left {:?}",
            dir_names(out.path())
        );
    }
    // An image that does not need it still exports.
    let gz = &want[0].0;
    env.ok(&[
        "export",
        "--docker-archive",
        s(&out.path().join("gz.tar")),
        &gz.reference,
    ]);
    // Full disk on stdout: exit 1, one error line.
    let full = fs::File::create("/dev/full").unwrap();
    let o = env
        .cmd()
        .args(["export", "--docker-archive", "-", &gz.reference])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "export into /dev/full: {}",
        text(&o)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    let errs: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errs.len(), 1, "export into /dev/full: {stderr}");
}

#[test]
fn corrupt_store_blob_is_caught_in_every_format() {
    let host = "127.0.0.1:5";
    let (env, want) = layer_forms_store(host);
    let gz = &want[0].0;
    let blob = gz.layer_digests[0].clone();
    let p = env.store().join("blobs/sha256").join(hex(&blob));
    let mut data = fs::read(&p).unwrap();
    let n = data.len();
    data[n / 2] ^= 0x01;
    fs::write(&p, &data).unwrap();
    // Every format is tried; the failures are reported together.
    let mut problems = Vec::new();
    for (flag, name) in [
        ("--docker-archive", "x.tar"),
        ("--oci-archive", "x.tar"),
        ("--oci-layout", "x"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let x = out.path().join(name);
        let args = ["export", flag, s(&x), &gz.reference];
        let o = env.run(&args);
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        let errs: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        if o.status.code() != Some(1) || errs.len() != 1 {
            problems.push(format!(
                "ocibundle {args:?} with a flipped bit in store blob {blob}: want exit 1 and one error line, got {}:\n{}",
                o.status,
                text(&o)
            ));
        } else if !(errs[0].contains(&blob) || errs[0].contains(&gz.diff_ids[0])) {
            problems.push(format!(
                "{flag}: the error names neither the bad blob {blob} nor its diff_id: {}",
                errs[0]
            ));
        }
        if !dir_names(out.path()).is_empty() {
            problems.push(format!(
                "{flag}: the failed export left {:?}",
                dir_names(out.path())
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

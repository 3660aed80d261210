//! Owns bundle-test helpers: fake-registry images with chosen (shared) layers, reading a bundle's trailer and index, store integrity checks, a seeded RNG.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::cmd::sha256;
use super::fakereg::{
    BlobRef, FakeRegistry, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, TestImage, make_layer,
};

/// One layer: (tar, tar.gz). Make them with `layer`.
pub type Layer = (Vec<u8>, Vec<u8>);

/// A gzip'd tar holding one file of `size` deterministic noise bytes picked by `seed`.
pub fn layer(seed: &str, size: usize) -> Layer {
    make_layer(&format!("data/{seed}.bin"), size, seed)
}

/// Adds a linux/amd64 OCI image made of exactly these layers to `repo:tag` (pass the same
/// `Layer` to two images to make them share a blob). Returns it like `add_image` does.
pub fn add_image_with(reg: &FakeRegistry, repo: &str, tag: &str, layers: &[&Layer]) -> TestImage {
    let mut refs = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, gz) in layers {
        diff_ids.push(sha256(tar));
        let digest = reg.add_blob(repo, gz.clone());
        refs.push(BlobRef {
            digest,
            size: gz.len() as u64,
            media_type: OCI_LAYER_GZIP.into(),
        });
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"test.image": format!("{repo}:{tag}")}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config = BlobRef {
        size: config.len() as u64,
        digest: reg.add_blob(repo, config),
        media_type: OCI_CONFIG.into(),
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
        "layers": refs.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = reg.add_manifest(repo, Some(tag), OCI_MANIFEST, manifest.clone());
    TestImage {
        repo: repo.into(),
        tag: tag.into(),
        reference: reg.reference(repo, tag),
        manifest_digest,
        manifest,
        config,
        layers: refs,
    }
}

/// Every blob of `imgs` (manifests, configs, layers) once: digest -> size.
pub fn unique_blobs(imgs: &[&TestImage]) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for i in imgs {
        m.insert(i.manifest_digest.clone(), i.manifest.len() as u64);
        for b in i.blobs() {
            m.insert(b.digest.clone(), b.size);
        }
    }
    m
}

/// The fixed-size trailer of a bundle (single file, whole bytes): (index offset, index length).
pub fn trailer(bundle: &[u8]) -> (u64, u64) {
    assert!(bundle.len() >= 128, "bundle of {} bytes", bundle.len());
    let t = &bundle[bundle.len() - 64..];
    assert_eq!(&t[..8], b"OCIBEND\x01", "trailer magic");
    let off = u64::from_le_bytes(t[16..24].try_into().unwrap());
    let len = u64::from_le_bytes(t[24..32].try_into().unwrap());
    (off, len)
}

/// The index JSON of a single-file bundle, read straight from its bytes.
pub fn index(bundle: &[u8]) -> Value {
    let (off, len) = trailer(bundle);
    serde_json::from_slice(&bundle[off as usize..(off + len) as usize])
        .expect("bundle index is JSON")
}

/// Blob files in a store whose content does not hash to their name (`name: detail`).
pub fn bad_store_blobs(store: &Path) -> Vec<String> {
    let dir = store.join("blobs/sha256");
    let mut bad = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return bad;
    };
    for e in rd {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        let data = fs::read(e.path()).unwrap();
        let got = sha256(&data);
        if got != format!("sha256:{name}") {
            bad.push(format!("{name}: content hashes to {got}"));
        }
    }
    bad
}

/// Digests of every blob file in a store, sorted (empty if there is no store).
pub fn store_blobs(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(store.join("blobs/sha256")) {
        Ok(rd) => rd
            .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Reference names in a store's index.json (empty if there is no index.json).
pub fn store_refs(store: &Path) -> Vec<String> {
    let Ok(s) = fs::read(store.join("index.json")) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_slice(&s).expect("store index.json is JSON");
    v["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap_or("(no name)")
                .to_string()
        })
        .collect()
}

/// `FILE.001`
pub fn volume(base: &Path, n: u32) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(format!(".{n:03}"));
    PathBuf::from(s)
}

/// A small seeded RNG (splitmix64) so that failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo, "empty range {lo}..{hi}");
        lo + self.next() % (hi - lo)
    }
}

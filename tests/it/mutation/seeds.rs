//! Owns the valid inputs the mutation test starts from, all made by the library itself: a small
//! store (one image with a plain and a gzip layer, a two-platform index, one platform picked from
//! it), a bundle and an inventory written from that store, a docker-archive and an OCI archive of
//! the same images, and the manifests, configs and index.json on their own.
use std::io::Write;
use std::path::{Path, PathBuf};

use ocibundle::image::{media, Descriptor};
use ocibundle::store::ANNOTATION_INDEX_DIGEST;
use ocibundle::{Digest, Store};
use serde_json::json;

use super::tar::{self, Member};

pub struct Seeds {
    pub store: PathBuf,
    pub bundle: Vec<u8>,
    pub inventory: Vec<u8>,
    /// A lock file pinning the store's images (an image, an index, a platform picked from it).
    pub lock: Vec<u8>,
    pub docker: Vec<Member>,
    pub oci: Vec<Member>,
    /// (bytes, media type) of every manifest and index.
    pub manifests: Vec<(Vec<u8>, String)>,
    pub configs: Vec<Vec<u8>>,
    pub index_json: Vec<u8>,
}

fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let members: Vec<Member> = files.iter().map(|(n, d)| Member::file(n, d.to_vec())).collect();
    tar::build(&members).0
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn desc(mt: &str, data: &[u8]) -> Descriptor {
    Descriptor { media_type: mt.into(), digest: Digest::of(data), size: data.len() as u64, platform: None, annotations: None }
}

fn config(arch: &str, diff_ids: &[&[u8]]) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|l| Digest::of(l).to_string()).collect();
    serde_json::to_vec(&json!({"architecture": arch, "os": "linux", "config": {"Env": ["A=1"]}, "rootfs": {"type": "layers", "diff_ids": ids}})).unwrap()
}

fn manifest(cfg: &[u8], layers: &[(&str, &[u8])]) -> Vec<u8> {
    let layers: Vec<Descriptor> = layers.iter().map(|(mt, d)| desc(mt, d)).collect();
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "config": desc(media::OCI_CONFIG, cfg), "layers": layers})).unwrap()
}

/// Builds every seed under `dir` (the store stays there: the store-index target reads it).
pub fn build(dir: &Path) -> Seeds {
    let plain = layer(&[("etc/hello", b"hello\n"), ("usr/bin/tool", b"#!/bin/sh\necho tool\n")]);
    let inner = layer(&[("var/lib/data", &[7u8; 3000])]);
    let gz = gzip(&inner);
    let cfg_a = config("amd64", &[&plain, &inner]);
    let man_a = manifest(&cfg_a, &[(media::OCI_LAYER, &plain), (media::OCI_LAYER_GZIP, &gz)]);
    let cfg_amd = config("amd64", &[&plain]);
    let cfg_arm = config("arm64", &[&plain]);
    let man_amd = manifest(&cfg_amd, &[(media::OCI_LAYER, &plain)]);
    let man_arm = manifest(&cfg_arm, &[(media::OCI_LAYER, &plain)]);
    let child = |m: &[u8], arch: &str| {
        let mut d = desc(media::OCI_MANIFEST, m);
        d.platform = Some(format!("linux/{arch}").parse().unwrap());
        d
    };
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [child(&man_amd, "amd64"), child(&man_arm, "arm64")]})).unwrap();

    let store_dir = dir.join("store");
    let store = Store::open(&store_dir).unwrap();
    for b in [&plain, &gz, &cfg_a, &man_a, &cfg_amd, &cfg_arm, &man_amd, &man_arm, &index] {
        store.put_bytes(&Digest::of(b), b).unwrap();
    }
    let mut picked = child(&man_amd, "amd64");
    picked.annotations = Some([(ANNOTATION_INDEX_DIGEST.to_string(), Digest::of(&index).to_string())].into());
    let refs = vec![
        ("example.test/mut/a:1".to_string(), desc(media::OCI_MANIFEST, &man_a)),
        ("example.test/mut/multi:all".to_string(), desc(media::OCI_INDEX, &index)),
        ("example.test/mut/multi:amd64".to_string(), picked),
    ];
    store.set_refs(&refs).unwrap();

    let names: Vec<String> = refs.iter().map(|(n, _)| n.clone()).collect();
    let plan = ocibundle::bundle::plan(&store, &names, None, None).unwrap();
    let bundle_path = dir.join("seed.bundle");
    ocibundle::bundle::writer::write(&store, &plan, ocibundle::bundle::Target::File(bundle_path.clone()), false).unwrap();
    let inventory = ocibundle::bundle::inventory::render(&store).unwrap().into_bytes();
    let lock = format!(
        "{}\n# seed\nexample.test/mut/a:1 {}\nexample.test/mut/multi:all {} all linux/amd64={} linux/arm64={}\n?example.test/mut/multi:amd64 {} linux/amd64={}\n",
        ocibundle::lock::HEADER,
        Digest::of(&man_a),
        Digest::of(&index),
        Digest::of(&man_amd),
        Digest::of(&man_arm),
        Digest::of(&index),
        Digest::of(&man_amd)
    )
    .into_bytes();

    // docker save's classic form: `<id>/layer.tar`, a later image's copy of a layer a symlink
    // to the first; one config under a name that is not its digest (so a mutated config still
    // reaches the config parser), and one layer compressed (so the codec is read too).
    let hex = |b: &[u8]| Digest::of(b).hex().to_string();
    let docker_manifest = json!([
        {"Config": format!("{}.json", hex(&cfg_a)), "RepoTags": ["example.test/mut/a:1"], "Layers": ["l1/layer.tar", format!("blobs/sha256/{}", hex(&gz))]},
        {"Config": "arm.json", "RepoTags": ["example.test/mut/multi:arm64", "example.test/mut/other:1"], "Layers": ["l2/layer.tar"]},
        {"Config": format!("{}.json", hex(&cfg_amd)), "RepoTags": null, "Layers": ["l1/layer.tar"]},
    ]);
    let docker = vec![
        Member::dir("l1/"),
        Member::file("l1/layer.tar", plain.clone()),
        Member::dir("l2/"),
        Member::symlink("l2/layer.tar", "../l1/layer.tar"),
        Member::file(&format!("blobs/sha256/{}", hex(&gz)), gz.clone()),
        Member::file(&format!("{}.json", hex(&cfg_a)), cfg_a.clone()),
        Member::file("arm.json", cfg_arm.clone()),
        Member::file(&format!("{}.json", hex(&cfg_amd)), cfg_amd.clone()),
        Member::file("repositories", br#"{"example.test/mut/a":{"1":"x"}}"#.to_vec()),
        Member::file("manifest.json", serde_json::to_vec(&docker_manifest).unwrap()),
    ];

    let index_json = std::fs::read(store_dir.join("index.json")).unwrap();
    let mut oci = vec![Member::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()), Member::dir("blobs/"), Member::dir("blobs/sha256/")];
    for b in [&plain, &gz, &cfg_a, &man_a, &cfg_amd, &cfg_arm, &man_amd, &man_arm, &index] {
        oci.push(Member::file(&format!("blobs/sha256/{}", hex(b)), b.to_vec()));
    }
    oci.push(Member::file("index.json", index_json.clone()));

    let mt = |s: &str| s.to_string();
    Seeds {
        store: store_dir,
        bundle: std::fs::read(&bundle_path).unwrap(),
        inventory,
        lock,
        docker,
        oci,
        manifests: vec![(man_a, mt(media::OCI_MANIFEST)), (man_amd, mt(media::OCI_MANIFEST)), (index, mt(media::OCI_INDEX))],
        configs: vec![cfg_a, cfg_amd, cfg_arm],
        index_json,
    }
}

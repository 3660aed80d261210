//! Tiny deterministic test images: written as an OCI image layout on disk, pushed to a `Registry` with skopeo.
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::json;

use super::cmd::sha256;
use super::registry::Registry;

pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

const MTIME: u64 = 1_700_000_000;
const CREATED: &str = "2023-11-14T22:13:20Z";

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// An image (manifest) or an index written to the layout.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Blob,
    /// `os/arch[/variant]`; for an index, empty.
    pub platform: String,
    /// Config blob (for an index: None).
    pub config: Option<Blob>,
    pub layers: Vec<Blob>,
    /// Child manifests (index only).
    pub children: Vec<Image>,
}

/// One entry of a layer tarball.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir(&'static str),
    File(&'static str, Vec<u8>, u32),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

/// Writes blobs into an OCI image layout and records tags for its index.json.
pub struct LayoutWriter {
    dir: PathBuf,
    tags: Vec<(String, Blob)>,
}

impl LayoutWriter {
    pub fn new(dir: &Path) -> LayoutWriter {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        LayoutWriter { dir: dir.to_path_buf(), tags: Vec::new() }
    }

    pub fn blob(&mut self, data: &[u8], media_type: &str) -> Blob {
        let digest = sha256(data);
        let path = self.dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
        fs::write(&path, data).unwrap();
        Blob { digest, size: data.len() as u64, media_type: media_type.to_string() }
    }

    /// A compressed layer; returns (blob, diff_id).
    pub fn layer(&mut self, entries: &[Entry], c: Compression) -> (Blob, String) {
        let tar = tar_bytes(entries);
        self.layer_from_tar(&tar, c)
    }

    pub fn layer_from_tar(&mut self, tar: &[u8], c: Compression) -> (Blob, String) {
        let diff_id = sha256(tar);
        let (data, mt) = match c {
            Compression::Gzip => (gzip(tar), MT_LAYER_GZIP),
            Compression::Zstd => (zstd::encode_all(tar, 3).unwrap(), MT_LAYER_ZSTD),
        };
        (self.blob(&data, mt), diff_id)
    }

    /// Config + manifest for `layers` (as returned by `layer`); `platform` is `os/arch[/variant]`.
    pub fn image(&mut self, layers: &[(Blob, String)], platform: &str, label: &str) -> Image {
        let mut parts = platform.split('/');
        let os = parts.next().unwrap();
        let arch = parts.next().unwrap();
        let variant = parts.next();
        let mut config = json!({
            "created": CREATED,
            "architecture": arch,
            "os": os,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
                "Labels": {"org.ocibundle.test": label},
            },
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>()},
            "history": layers.iter().enumerate().map(|(i, _)| json!({
                "created": CREATED, "created_by": format!("ocibundle test fixture {label} layer {i}")
            })).collect::<Vec<_>>(),
        });
        if let Some(v) = variant {
            config["variant"] = json!(v);
        }
        let config = self.blob(&serde_json::to_vec(&config).unwrap(), MT_CONFIG);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": desc(&config),
            "layers": layers.iter().map(|(b, _)| desc(b)).collect::<Vec<_>>(),
        });
        let manifest = self.blob(&serde_json::to_vec(&manifest).unwrap(), MT_MANIFEST);
        Image {
            manifest,
            platform: platform.to_string(),
            config: Some(config),
            layers: layers.iter().map(|(b, _)| b.clone()).collect(),
            children: Vec::new(),
        }
    }

    /// An OCI index over `children` (each with its platform).
    pub fn index(&mut self, children: &[Image]) -> Image {
        let manifests: Vec<_> = children
            .iter()
            .map(|c| {
                let mut d = desc(&c.manifest);
                let mut parts = c.platform.split('/');
                let mut p = json!({"os": parts.next().unwrap(), "architecture": parts.next().unwrap()});
                if let Some(v) = parts.next() {
                    p["variant"] = json!(v);
                }
                d["platform"] = p;
                d
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests});
        let manifest = self.blob(&serde_json::to_vec(&index).unwrap(), MT_INDEX);
        Image { manifest, platform: String::new(), config: None, layers: Vec::new(), children: children.to_vec() }
    }

    pub fn tag(&mut self, tag: &str, image: &Image) {
        self.tags.push((tag.to_string(), image.manifest.clone()));
    }

    /// Writes index.json.
    pub fn finish(self) -> PathBuf {
        let manifests: Vec<_> = self
            .tags
            .iter()
            .map(|(t, b)| {
                let mut d = desc(b);
                d["annotations"] = json!({"org.opencontainers.image.ref.name": t});
                d
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests});
        fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        self.dir
    }
}

fn desc(b: &Blob) -> serde_json::Value {
    json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size})
}

/// A deterministic tarball (fixed mtime, uid/gid 0, ustar headers).
pub fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::Hardlink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `n` deterministic, incompressible bytes (xorshift64*), different per `seed`.
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// The generated fixture layout (one per test process).
pub struct Layout {
    pub dir: PathBuf,
    /// layout tag -> image; tags: simple, schema2, zstd, multi, shared.
    pub images: BTreeMap<&'static str, Image>,
}

impl Layout {
    pub fn image(&self, name: &str) -> &Image {
        self.images.get(name).unwrap_or_else(|| panic!("no fixture {name}"))
    }
}

/// The fixture layout, generated once per process under the cargo target tmpdir.
pub fn layout() -> &'static Layout {
    static L: OnceLock<Layout> = OnceLock::new();
    L.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(&base).unwrap();
        // Remove layouts of test processes that are gone.
        if let Ok(rd) = fs::read_dir(&base) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(pid) = name.strip_prefix("fixtures-")
                    && !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("fixtures-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        generate(&dir)
    })
}

/// Files of `simple`'s first layer (shared with `shared`).
fn base_layer() -> Vec<Entry> {
    vec![
        Entry::Dir("bin/"),
        Entry::Dir("etc/"),
        Entry::File("bin/hello", b"#!/bin/sh\necho hello from ocibundle\n".to_vec(), 0o755),
        Entry::Symlink("bin/hi", "hello"),
        Entry::Hardlink("bin/hello2", "bin/hello"),
        Entry::File("etc/hostname", b"fixture\n".to_vec(), 0o644),
        Entry::File("etc/x", b"to be whited out\n".to_vec(), 0o644),
    ]
}

fn generate(dir: &Path) -> Layout {
    let mut w = LayoutWriter::new(dir);
    let mut images = BTreeMap::new();

    // simple: 2 gzip layers; symlink, hard link, and a whiteout of etc/x in the second.
    let l1 = w.layer(&base_layer(), Compression::Gzip);
    let l2 = w.layer(
        &[
            Entry::Dir("etc/"),
            Entry::File("etc/.wh.x", Vec::new(), 0o644),
            Entry::File("etc/motd", b"simple v1\n".to_vec(), 0o644),
        ],
        Compression::Gzip,
    );
    let simple = w.image(&[l1.clone(), l2], "linux/amd64", "simple");
    w.tag("simple", &simple);
    images.insert("simple", simple);

    // schema2: own layers, pushed with `--format v2s2`.
    let s1 = w.layer(
        &[Entry::Dir("srv/"), Entry::File("srv/schema2.txt", b"docker schema2 fixture\n".to_vec(), 0o644)],
        Compression::Gzip,
    );
    let s2 = w.layer(&[Entry::Dir("srv/"), Entry::File("srv/more", noise(2, 3000), 0o600)], Compression::Gzip);
    let schema2 = w.image(&[s1, s2], "linux/amd64", "schema2");
    w.tag("schema2", &schema2);
    images.insert("schema2", schema2);

    // zstd: a gzip layer and a zstd layer.
    let z1 = w.layer(&[Entry::Dir("opt/"), Entry::File("opt/gz.txt", b"gzip layer\n".to_vec(), 0o644)], Compression::Gzip);
    let z2 = w.layer(
        &[Entry::Dir("opt/"), Entry::File("opt/zstd.bin", noise(3, 5000), 0o644), Entry::Symlink("opt/z", "zstd.bin")],
        Compression::Zstd,
    );
    let zstd_img = w.image(&[z1, z2], "linux/amd64", "zstd");
    w.tag("zstd", &zstd_img);
    images.insert("zstd", zstd_img);

    // multi: index of linux/amd64 and linux/arm64/v8, different layers.
    let a = w.layer(&[Entry::Dir("etc/"), Entry::File("etc/arch", b"amd64\n".to_vec(), 0o644)], Compression::Gzip);
    let amd64 = w.image(&[a], "linux/amd64", "multi-amd64");
    let b = w.layer(
        &[Entry::Dir("etc/"), Entry::File("etc/arch", b"arm64 v8\n".to_vec(), 0o644), Entry::File("etc/pad", noise(4, 700), 0o644)],
        Compression::Gzip,
    );
    let arm64 = w.image(&[b], "linux/arm64/v8", "multi-arm64");
    let multi = w.index(&[amd64, arm64]);
    w.tag("multi", &multi);
    images.insert("multi", multi);

    // shared: simple's first layer (same blob) plus its own.
    let own = w.layer(&[Entry::Dir("etc/"), Entry::File("etc/motd", b"shared v1\n".to_vec(), 0o644)], Compression::Gzip);
    let shared = w.image(&[l1, own], "linux/amd64", "shared");
    w.tag("shared", &shared);
    images.insert("shared", shared);

    let dir = w.finish();
    Layout { dir, images }
}

/// A one-layer image whose layer holds `size` incompressible bytes (gzip stored, so the blob
/// is about `size` bytes), written as tag `big` in a new layout under `dir`.
pub fn big_layout(dir: &Path, size: usize, seed: u64) -> (PathBuf, Image) {
    let mut w = LayoutWriter::new(dir);
    let tar = tar_bytes(&[Entry::Dir("data/"), Entry::File("data/blob", noise(seed, size), 0o644)]);
    let mut e = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::none());
    e.write_all(&tar).unwrap();
    let gz = e.finish().unwrap();
    let layer = (w.blob(&gz, MT_LAYER_GZIP), sha256(&tar));
    let img = w.image(&[layer], "linux/amd64", "big");
    w.tag("big", &img);
    (w.finish(), img)
}

/// How to push a layout tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushMode {
    /// `--preserve-digests` (OCI as is).
    Oci,
    /// `--all --preserve-digests` (an index and every child).
    All,
    /// `--format v2s2` (Docker schema2; digests change).
    Schema2,
}

/// `skopeo copy oci:LAYOUT:TAG docker://HOST/REPO_TAG`; returns the registry's manifest digest.
pub fn push(reg: &Registry, layout_dir: &Path, tag: &str, repo_tag: &str, mode: PushMode) -> String {
    let mut args: Vec<String> = vec!["copy".into(), "--quiet".into()];
    args.extend(reg.skopeo_flags("dest"));
    match mode {
        PushMode::Oci => args.push("--preserve-digests".into()),
        PushMode::All => {
            args.push("--all".into());
            args.push("--preserve-digests".into());
        }
        PushMode::Schema2 => {
            args.push("--format".into());
            args.push("v2s2".into());
        }
    }
    args.push(format!("oci:{}:{tag}", layout_dir.display()));
    args.push(format!("docker://{}/{repo_tag}", reg.host()));
    let out = Command::new("skopeo").args(&args).output().expect("spawn skopeo");
    assert!(
        out.status.success(),
        "skopeo {:?} failed: {}\nregistry log:\n{}",
        args,
        String::from_utf8_lossy(&out.stderr),
        reg.log()
    );
    let (repo, t) = repo_tag.rsplit_once(':').unwrap();
    reg.content_digest(repo, t)
}

/// A fixture as pushed to one registry.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// `test/simple`
    pub repo: String,
    /// `v1`
    pub tag: String,
    /// `127.0.0.1:PORT/test/simple:v1`
    pub reference: String,
    /// Manifest (or index) digest the registry serves for the tag.
    pub digest: String,
    /// What was generated (for schema2: the OCI original before conversion).
    pub image: Image,
}

impl Pushed {
    /// `HOST/REPO@DIGEST`
    pub fn pinned(&self) -> String {
        let host = self.reference.split('/').next().unwrap();
        format!("{host}/{}@{}", self.repo, self.digest)
    }
}

pub struct Fixtures {
    pub simple: Pushed,
    pub schema2: Pushed,
    pub zstd: Pushed,
    pub multi: Pushed,
    pub shared: Pushed,
}

/// Pushes one named fixture (`simple`, `schema2`, `zstd`, `multi`, `shared`) as `test/NAME:v1`.
pub fn push_one(reg: &Registry, name: &str) -> Pushed {
    let l = layout();
    let image = l.image(name).clone();
    let mode = match name {
        "multi" => PushMode::All,
        "schema2" => PushMode::Schema2,
        _ => PushMode::Oci,
    };
    let repo = format!("test/{name}");
    let digest = push(reg, &l.dir, name, &format!("{repo}:v1"), mode);
    if mode != PushMode::Schema2 {
        assert_eq!(digest, image.manifest.digest, "registry changed the digest of {name} pushed with --preserve-digests");
    }
    Pushed { reference: format!("{}/{repo}:v1", reg.host()), repo, tag: "v1".into(), digest, image }
}

pub fn push_all(reg: &Registry) -> Fixtures {
    Fixtures {
        simple: push_one(reg, "simple"),
        schema2: push_one(reg, "schema2"),
        zstd: push_one(reg, "zstd"),
        multi: push_one(reg, "multi"),
        shared: push_one(reg, "shared"),
    }
}

//! Owns the readers under test, one per kind of untrusted input, each fed through the library's
//! public API the way a command would use it, and reduced to an outcome: success, or the error
//! lines a user would see.
use std::path::{Path, PathBuf};

use ocibundle::bundle::{self, Bundle};
use ocibundle::image::{self, ConfigInfo, Manifest};
use ocibundle::{archive, Store};

use super::rng::Rng;
use super::seeds::Seeds;
use super::{archives, bundles, bytes, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    BundleFile,
    BundleStream,
    DockerArchive,
    OciArchive,
    Manifest,
    Config,
    StoreIndex,
    Inventory,
    Lock,
}

/// Each target with its share of the cases (the file-backed readers cost more per case).
pub const ALL: &[(Target, usize)] = &[
    (Target::BundleFile, 20),
    (Target::BundleStream, 12),
    (Target::DockerArchive, 18),
    (Target::OciArchive, 16),
    (Target::Manifest, 12),
    (Target::Config, 6),
    (Target::StoreIndex, 9),
    (Target::Inventory, 7),
    (Target::Lock, 4),
];

/// What a case came to: success, or an error. `lines` holds every message a user would see.
pub struct Outcome {
    pub ok: bool,
    pub lines: Vec<String>,
}

impl Outcome {
    fn of<T>(r: ocibundle::Result<T>) -> Outcome {
        match r {
            Ok(_) => Outcome { ok: true, lines: vec![] },
            Err(e) => Outcome { ok: false, lines: vec![e.to_string()] },
        }
    }
}

/// A mutated input; `hint` picks among a target's variants (which seed, which header type).
pub struct Input {
    pub bytes: Vec<u8>,
    pub hint: usize,
}

/// Scratch space: files rewritten by every case, a store made fresh for each import.
pub struct Scratch {
    pub dir: PathBuf,
    /// A copy of the seed store whose index.json and oci-layout a case replaces.
    pub store_copy: PathBuf,
}

impl Scratch {
    pub fn new(dir: &Path, seeds: &Seeds) -> Scratch {
        let copy = dir.join("store-copy");
        std::fs::create_dir_all(copy.join("blobs/sha256")).unwrap();
        for e in std::fs::read_dir(seeds.store.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.join("blobs/sha256").join(e.file_name())).unwrap();
        }
        Scratch { dir: dir.to_path_buf(), store_copy: copy }
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn fresh_store(&self) -> Store {
        let p = self.dir.join("store");
        let _ = std::fs::remove_dir_all(&p);
        Store::open(&p).unwrap()
    }
}

fn with_lines(mut o: Outcome, more: impl IntoIterator<Item = String>) -> Outcome {
    o.lines.extend(more);
    o
}

const LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::BundleFile => "bundle-file",
            Target::BundleStream => "bundle-stream",
            Target::DockerArchive => "docker-archive",
            Target::OciArchive => "oci-archive",
            Target::Manifest => "manifest",
            Target::Config => "config",
            Target::StoreIndex => "store-index",
            Target::Inventory => "inventory",
            Target::Lock => "lock",
        }
    }

    /// The unmutated inputs: each must succeed, or the harness tests nothing.
    pub fn seeds(self, s: &Seeds) -> Vec<Input> {
        let one = |b: Vec<u8>| vec![Input { bytes: b, hint: 0 }];
        match self {
            Target::BundleFile | Target::BundleStream => one(s.bundle.clone()),
            Target::DockerArchive => one(super::tar::build(&s.docker).0),
            Target::OciArchive => one(super::tar::build(&s.oci).0),
            Target::Manifest => (0..s.manifests.len()).map(|i| Input { bytes: s.manifests[i].0.clone(), hint: i * 3 }).collect(),
            Target::Config => s.configs.iter().map(|c| Input { bytes: c.clone(), hint: 0 }).collect(),
            Target::StoreIndex => vec![Input { bytes: s.index_json.clone(), hint: 0 }, Input { bytes: LAYOUT.to_vec(), hint: 1 }],
            Target::Inventory => one(s.inventory.clone()),
            Target::Lock => one(s.lock.clone()),
        }
    }

    pub fn mutate(self, rng: &mut Rng, s: &Seeds) -> Input {
        let digests: Vec<String> = s.configs.iter().chain(s.manifests.iter().map(|m| &m.0)).map(|b| ocibundle::Digest::of(b).to_string()).collect();
        let hint = rng.below(1 << 16);
        let bytes = match self {
            Target::BundleFile | Target::BundleStream => bundles::mutate(rng, &s.bundle),
            Target::DockerArchive => archives::mutate(rng, &s.docker, false),
            Target::OciArchive => archives::mutate(rng, &s.oci, true),
            Target::Manifest => json_or_bytes(rng, &s.manifests[hint / 3 % s.manifests.len()].0, &digests),
            Target::Config => json_or_bytes(rng, &s.configs[hint % s.configs.len()], &digests),
            Target::StoreIndex if hint % 8 == 1 => json_or_bytes(rng, LAYOUT, &digests),
            Target::StoreIndex => json_or_bytes(rng, &s.index_json, &digests),
            Target::Inventory => inventory(rng, &s.inventory, &digests),
            Target::Lock => inventory(rng, &s.lock, &digests),
        };
        Input { bytes, hint }
    }

    pub fn run(self, input: &Input, s: &Seeds, scratch: &Scratch) -> Outcome {
        let b = &input.bytes;
        match self {
            Target::BundleFile => {
                let path = scratch.file("case.bundle", b);
                let bundle = match Bundle::open(&path) {
                    Ok(x) => x,
                    Err(e) => return Outcome::of::<()>(Err(e)),
                };
                let report = bundle.verify(None);
                let problems = report.problems.iter().map(|p| p.to_string());
                with_lines(Outcome::of(bundle.import(&scratch.fresh_store(), false)), problems)
            }
            Target::BundleStream => {
                let verified = bundle::stream::verify(&b[..], "stdin");
                let problems: Vec<String> = verified.as_ref().map(|r| r.problems.iter().map(|p| p.to_string()).collect()).unwrap_or_default();
                let imported = Outcome::of(bundle::stream::import(&b[..], "stdin", &scratch.fresh_store()));
                let o = with_lines(imported, problems);
                match verified {
                    Err(e) => with_lines(o, [e.to_string()]),
                    Ok(_) => o,
                }
            }
            Target::DockerArchive => Outcome::of(archive::docker::DockerArchive::open(&scratch.file("case.tar", b)).and_then(|ar| archive::docker::import(ar, &scratch.fresh_store()))),
            Target::OciArchive => Outcome::of(archive::oci::Layout::open(&scratch.file("case.tar", b), true, None).and_then(|l| archive::oci::import(l, &scratch.fresh_store()))),
            Target::Manifest => {
                let (_, mt) = &s.manifests[input.hint / 3 % s.manifests.len()];
                let header = match input.hint % 3 {
                    0 => Some(mt.as_str()),
                    1 => None,
                    _ => Some(image::media::DOCKER_MANIFEST),
                };
                Outcome::of(Manifest::parse(b.clone(), header, "manifest").map(|m| ocibundle::graph::children(&m).len()))
            }
            Target::Config => {
                let info = ConfigInfo::parse(b, "config");
                let ids = Outcome::of(image::diff_ids(b, "config"));
                with_lines(ids, info.err().map(|e| e.to_string()))
            }
            Target::StoreIndex => {
                let copy = &scratch.store_copy;
                let (index, layout) = if input.hint % 8 == 1 { (&s.index_json[..], &b[..]) } else { (&b[..], LAYOUT) };
                std::fs::write(copy.join("index.json"), index).unwrap();
                std::fs::write(copy.join("oci-layout"), layout).unwrap();
                let run = || -> ocibundle::Result<Vec<String>> {
                    let store = Store::open_existing(copy)?;
                    let report = store.fsck()?;
                    let names: Vec<String> = store.refs()?.into_iter().map(|r| r.name).collect();
                    bundle::plan(&store, &names, None, None)?;
                    Ok(report.problems.iter().map(|p| p.to_string()).collect())
                };
                match run() {
                    Ok(problems) => Outcome { ok: true, lines: problems },
                    Err(e) => Outcome::of::<()>(Err(e)),
                }
            }
            Target::Inventory => Outcome::of(bundle::load_base(&scratch.file("inventory.txt", b))),
            // As `fetch --images` reads it: text first (a file that is not UTF-8 is refused so).
            Target::Lock => match std::str::from_utf8(b) {
                Ok(text) => Outcome::of(ocibundle::lock::Lock::parse(text, "images.lock")),
                Err(e) => Outcome::of::<()>(Err(ocibundle::Error::Other(format!("images.lock: {e}")))),
            },
        }
    }
}

fn json_or_bytes(rng: &mut Rng, seed: &[u8], digests: &[String]) -> Vec<u8> {
    if rng.chance(80) {
        return json::mutate(rng, seed, digests);
    }
    let mut b = seed.to_vec();
    bytes::mutate_some(rng, &mut b);
    b
}

/// Line-aware inventory mutations: a digest made non-canonical, a line repeated many times or
/// made very long, or format-blind bytes.
fn inventory(rng: &mut Rng, seed: &[u8], digests: &[String]) -> Vec<u8> {
    let text = String::from_utf8(seed.to_vec()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let i = 1 + rng.below(lines.len() - 1);
    match rng.below(4) {
        0 => {
            let d = lines[i].split(' ').next().unwrap().to_string();
            let v = json::digest_variants(&d, digests);
            lines[i] = lines[i].replacen(&d, rng.pick(&v[..]).as_str(), 1);
        }
        1 => {
            let l = lines[i].clone();
            lines.extend(std::iter::repeat_n(l, 1 + rng.below(20_000)));
        }
        2 => lines[i].push_str(&" x".repeat(1 + rng.below(50_000))),
        _ => {
            let mut b = seed.to_vec();
            bytes::mutate_some(rng, &mut b);
            return b;
        }
    }
    (lines.join("\n") + "\n").into_bytes()
}

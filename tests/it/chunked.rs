//! Bundle format 2 (content below the layer) end to end with real producers and real tools.
//! Layers by GNU gzip -1/-6/-9, pigz, Python zlib, the zstd CLI, libzstd, a plain tar, Go's
//! compress/gzip and skopeo (klauspost pgzip, zstd), over GNU tar edge cases (hard links,
//! symlinks, PAX and old-GNU sparse files, one of 9 GiB, PAX and GNU long names, whiteouts, empty
//! files) and a layer that is not a tar: registry → fetch → bundle → verify → import, export
//! (docker-archive into podman, OCI layout), push, every blob byte-identical; what was rebuilt
//! and what went raw, by producer; chunk-level deltas `--since` a bundle or an inventory;
//! determinism; `--dedup blobs`; volumes and `import -`.
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::exact::{filter, go_gzip, have, pgzip};
use crate::harness::bundles::{index, store_refs, volume, Rng};
use crate::harness::cmd::{error_line, hex_of, s, sha256, tool, Env};
use crate::harness::fixtures::{push, Blob, Image, LayoutWriter, PushMode, MT_LAYER_GZIP, MT_LAYER_ZSTD};
use crate::harness::peers::Podman;
use crate::harness::registry::{Registry, Variant};

const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// `n` deterministic bytes that are in turn text, little records, zeros and noise (64 KiB
/// stretches), so that chunks compress differently and a file is cut into several chunks.
fn mixed(seed: u64, n: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let words: Vec<String> = (0..500).map(|i| format!("w{i}{}", "xy".repeat(i % 5))).collect();
    let mut out = Vec::with_capacity(n);
    let mut k = 0u64;
    while out.len() < n {
        let want = (64 << 10).min(n - out.len());
        let start = out.len();
        match (r.next() ^ k) % 4 {
            0 => {
                while out.len() - start < want {
                    out.extend_from_slice(words[(r.next() % 500) as usize].as_bytes());
                    out.push(if r.next().is_multiple_of(11) { b'\n' } else { b' ' });
                }
                out.truncate(start + want);
            }
            1 => {
                while out.len() - start < want {
                    out.extend_from_slice(&(k as u32).to_le_bytes());
                    out.extend_from_slice(&((r.next() % 89) as u32).to_le_bytes());
                    k += 1;
                }
                out.truncate(start + want);
            }
            2 => out.resize(start + want, 0),
            _ => out.extend((0..want).map(|_| r.next() as u8)),
        }
        k += 1;
    }
    out
}

fn put(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// A tree with the tar edge cases: hard link, symlinks (one dangling, one with a target over
/// 100 bytes), a path over 100 bytes, a non-ASCII name, empty files, whiteouts (`.wh.x` and an
/// opaque dir), a sparse file of `sparse` bytes with three data stretches (if any), a few MB of
/// mixed data.
fn edge_tree(root: &Path, name: &str, sparse: Option<u64>) {
    put(&root.join("etc/producer"), name.as_bytes());
    put(&root.join("etc/config.txt"), "key=value\n".repeat(50).as_bytes());
    std::fs::hard_link(root.join("etc/config.txt"), root.join("etc/config.hardlink")).unwrap();
    std::os::unix::fs::symlink("config.txt", root.join("etc/link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", root.join("etc/dangling")).unwrap();
    let long_dir = format!("deep/{}", "d".repeat(60));
    let long_file = format!("{long_dir}/{}.txt", "f".repeat(90));
    put(&root.join(&long_file), b"a file whose path is longer than 100 bytes\n");
    std::os::unix::fs::symlink(format!("../{long_file}"), root.join("etc/longlink")).unwrap();
    put(&root.join("ünïcode-名前.txt"), "utf-8 name\n".as_bytes());
    put(&root.join("data/mixed.bin"), &mixed(42, 3 << 20));
    put(&root.join("data/empty"), b"");
    put(&root.join("data/also-empty"), b"");
    put(&root.join("gone/.wh.x"), b"");
    put(&root.join("opq/.wh..wh..opq"), b"");
    put(&root.join("opq/kept.txt"), b"kept\n");
    let Some(sparse) = sparse else { return };
    std::fs::create_dir_all(root.join("sparse")).unwrap();
    let f = std::fs::File::create(root.join("sparse/holes.img")).unwrap();
    f.set_len(sparse).unwrap();
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(&mixed(7, 100_000), sparse / 2).unwrap();
    f.write_all_at(b"end", sparse - 3).unwrap();
}

/// GNU tar of `root` (`pax` or `gnu` format), deterministic: sorted, fixed mtime and owners,
/// sparse files detected.
fn gnu_tar(root: &Path, format: &str, mtime: u64) -> Vec<u8> {
    let mut c = Command::new("tar");
    c.args(["--sort=name", &format!("--mtime=@{mtime}"), "--owner=0", "--group=0", "--numeric-owner", "--sparse", &format!("--format={format}")]);
    if format == "pax" {
        c.arg("--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime");
    }
    c.arg("-C").arg(root).args(["-cf", "-", "."]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// An OCI layout holding `tar` as an uncompressed layer, copied by skopeo with `args` (e.g.
/// `--dest-compress-format zstd`) into a `dir:`; the compressed layer blob (None without skopeo).
fn skopeo_compress(dir: &Path, tar: &[u8], args: &[&str]) -> Option<Vec<u8>> {
    if !have("skopeo") {
        return None;
    }
    let src = dir.join("oci");
    let mut w = LayoutWriter::new(&src);
    let layer = w.blob(tar, MT_LAYER_TAR);
    let img = w.image(&[(layer, sha256(tar))], "linux/amd64", "skopeo");
    w.tag("t", &img);
    w.finish();
    let dst = dir.join("dst");
    let mut a = vec!["--insecure-policy", "copy", "-q"];
    a.extend_from_slice(args);
    let (from, to) = (format!("oci:{}:t", s(&src)), format!("dir:{}", s(&dst)));
    a.extend([from.as_str(), to.as_str()]);
    tool("skopeo", &a);
    std::fs::read_dir(&dst).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).find(|b| b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || b.starts_with(&[0x1f, 0x8b]))
}

/// What the bundle must do with a layer.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Rebuilt,
    /// Carried whole, the producer named with this label.
    Raw(&'static str),
    /// Not a tar: only the round trip matters.
    Any,
}

struct Made {
    name: String,
    blob: Blob,
    expect: Expect,
}

/// Every blob digest of an image (manifest, config, layers).
fn digests(img: &Image) -> Vec<String> {
    let mut v = vec![img.manifest.digest.clone(), img.config.as_ref().unwrap().digest.clone()];
    v.extend(img.layers.iter().map(|b| b.digest.clone()));
    v
}

/// A blob as the registry serves it.
fn reg_blob(reg: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-s", "-f", "-L", "--max-time", "60", "--noproxy", "*"])
        .arg(format!("{}/v2/{repo}/blobs/{digest}", reg.url()))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl blob {repo}@{digest} failed ({})", out.status);
    out.stdout
}

/// Asserts that `dir/blobs/sha256/<hex>` (a store or a layout) holds exactly `layout`'s bytes for
/// every blob of `imgs`.
fn same_blobs(what: &str, dir: &Path, layout: &Path, imgs: &[&Image]) {
    for img in imgs {
        for d in digests(img) {
            let want = std::fs::read(layout.join("blobs/sha256").join(hex_of(&d))).unwrap();
            let got = std::fs::read(dir.join("blobs/sha256").join(hex_of(&d))).unwrap_or_else(|e| panic!("{what}: blob {d} missing: {e}"));
            assert!(got == want, "{what}: blob {d} differs from the registry's ({} bytes, want {})", got.len(), want.len());
        }
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// `ocibundle import -` fed `bytes` through a pipe.
fn import_stdin(env: &Env, bytes: Vec<u8>) {
    let mut child = env.cmd().args(["import", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let w = std::thread::spawn(move || stdin.write_all(&bytes));
    let out = child.wait_with_output().unwrap();
    let _ = w.join().unwrap();
    assert!(out.status.success(), "import - failed: {}", crate::harness::cmd::text(&out));
}

#[test]
fn chunked_every_producer_and_tar_edge_case_round_trips_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let layout = p("layout");
    let mut w = LayoutWriter::new(&layout);

    // Producers over the edge-case tree (each tree names its producer, so every diff_id differs).
    let zstd_cli = String::from_utf8(filter(Command::new("zstd").arg("--version"), b"")).unwrap();
    let zstd_same = zstd_cli.contains(&format!("v{},", zstd::zstd_safe::version_string()));
    std::fs::create_dir_all(p("go")).unwrap();
    let gogz = go_gzip(&p("go"));
    let python = "import sys,zlib; c=zlib.compressobj(6,zlib.DEFLATED,31); d=sys.stdin.buffer.read(); sys.stdout.buffer.write(c.compress(d)+c.flush())";
    type Make<'a> = Box<dyn Fn(&[u8]) -> Option<(Vec<u8>, &'static str)> + 'a>;
    let producers: Vec<(&str, &str, Make, Expect)> = vec![
        ("GNU gzip -1", "pax", Box::new(|t: &[u8]| Some((filter(Command::new("gzip").args(["-1", "-n"]), t), MT_LAYER_GZIP))), Expect::Rebuilt),
        ("GNU gzip -6", "gnu", Box::new(|t: &[u8]| Some((filter(Command::new("gzip").args(["-6", "-n"]), t), MT_LAYER_GZIP))), Expect::Rebuilt),
        ("GNU gzip -9", "pax", Box::new(|t: &[u8]| Some((filter(Command::new("gzip").args(["-9", "-n"]), t), MT_LAYER_GZIP))), Expect::Rebuilt),
        ("pigz -6", "gnu", Box::new(|t: &[u8]| have("pigz").then(|| (filter(Command::new("pigz").arg("-6"), t), MT_LAYER_GZIP))), Expect::Rebuilt),
        ("Python zlib -6", "pax", Box::new(|t: &[u8]| Some((filter(Command::new("python3").args(["-c", python]), t), MT_LAYER_GZIP))), Expect::Rebuilt),
        (
            "zstd -3 CLI",
            "gnu",
            Box::new(|t: &[u8]| Some((filter(Command::new("zstd").args(["-q", "-c", "-3"]), t), MT_LAYER_ZSTD))),
            if zstd_same { Expect::Rebuilt } else { Expect::Raw("zstd") },
        ),
        ("libzstd -3 (as built in)", "pax", Box::new(|t: &[u8]| Some((zstd::encode_all(t, 3).unwrap(), MT_LAYER_ZSTD))), Expect::Rebuilt),
        (
            "skopeo --dest-compress-format zstd",
            "gnu",
            Box::new(|t: &[u8]| skopeo_compress(&p(&format!("skopeo-zstd-{}", t.len())), t, &["--dest-compress", "--dest-compress-format", "zstd"]).map(|b| (b, MT_LAYER_ZSTD))),
            Expect::Raw("zstd"),
        ),
        ("plain tar", "pax", Box::new(|t: &[u8]| Some((t.to_vec(), MT_LAYER_TAR))), Expect::Rebuilt),
        (
            "Go compress/gzip default",
            "gnu",
            Box::new(|t: &[u8]| gogz.as_ref().map(|g| (filter(Command::new(g).arg("-1"), t), MT_LAYER_GZIP))),
            Expect::Rebuilt,
        ),
        (
            "klauspost pgzip (skopeo --dest-compress)",
            "pax",
            Box::new(|t: &[u8]| pgzip(&p(&format!("pgzip-{}", t.len())), t).map(|b| (b, MT_LAYER_GZIP))),
            Expect::Raw("klauspost pgzip"),
        ),
    ];
    let mut made: Vec<Made> = Vec::new();
    let mut edge_layers = Vec::new();
    for (i, (name, format, make, expect)) in producers.iter().enumerate() {
        let root = p(&format!("tree{i}"));
        // GNU format writes old-GNU sparse entries (type 'S'), which podman (containers/storage)
        // cannot apply ("unhandled tar header type 83"): those go in the odd image only.
        edge_tree(&root, name, (*format == "pax").then_some(64 << 20));
        let tar = gnu_tar(&root, format, 1_700_000_000);
        let Some((data, mt)) = make(&tar) else {
            eprintln!("note: {name}: tool missing, layer skipped");
            continue;
        };
        let blob = w.blob(&data, mt);
        edge_layers.push((blob.clone(), sha256(&tar)));
        made.push(Made { name: name.to_string(), blob, expect: *expect });
    }
    let edge = w.image(&edge_layers, "linux/amd64", "edge");
    w.tag("edge", &edge);

    // The odd image: a layer that is not a tar at all, and a GNU-format layer holding a 9 GiB
    // sparse file (sizes and sparse offsets over 8 GiB in base-256; the tar stays small).
    let notar = mixed(99, 300_000).iter().map(|b| b ^ 0x5a).collect::<Vec<u8>>();
    let notar_blob = w.blob(&notar, MT_LAYER_TAR);
    made.push(Made { name: "not a tar".into(), blob: notar_blob.clone(), expect: Expect::Any });
    let root = p("tree-big");
    edge_tree(&root, "9 GiB sparse", Some(9 << 30));
    let tar = gnu_tar(&root, "gnu", 1_700_000_000);
    assert!(tar.len() < 16 << 20, "the 9 GiB sparse tar should stay small, is {} bytes", tar.len());
    let big = w.blob(&filter(Command::new("gzip").args(["-6", "-n"]), &tar), MT_LAYER_GZIP);
    made.push(Made { name: "GNU gzip -6, 9 GiB sparse (gnu format)".into(), blob: big.clone(), expect: Expect::Rebuilt });
    let odd = w.image(&[(notar_blob, sha256(&notar)), (big, sha256(&tar))], "linux/amd64", "odd");
    w.tag("odd", &odd);
    let layout = w.finish();

    // Into a real registry, digests kept; skopeo must not have touched a byte.
    let reg = Registry::start(Variant::Plain);
    assert_eq!(push(&reg, &layout, "edge", "chunked/edge:v1", PushMode::Oci), edge.manifest.digest);
    assert_eq!(push(&reg, &layout, "odd", "chunked/odd:v1", PushMode::Oci), odd.manifest.digest);
    for (repo, img) in [("chunked/edge", &edge), ("chunked/odd", &odd)] {
        let raw_m = reg.raw_manifest(&format!("{}/{repo}:v1", reg.host()));
        assert_eq!(sha256(&raw_m), img.manifest.digest, "the registry's manifest of {repo}");
        // Manifests are not served as blobs by distribution: the config and the layers are.
        for d in digests(img).into_iter().skip(1) {
            assert!(reg_blob(&reg, repo, &d) == std::fs::read(layout.join("blobs/sha256").join(hex_of(&d))).unwrap(), "the registry's {d} differs from the layout's");
        }
    }
    let (edge_ref, odd_ref) = (format!("{}/chunked/edge:v1", reg.host()), format!("{}/chunked/odd:v1", reg.host()));

    // fetch → bundle (format 2 is the default).
    let env = Env::new();
    env.ok(&["fetch", &edge_ref, &odd_ref]);
    let b = p("b.obun");
    let j = env.json(&["bundle", "-o", s(&b), &edge_ref, &odd_ref]);
    assert_eq!(j["format_version"], 2, "{j}");
    let bytes = std::fs::read(&b).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2, "header version");
    let idx = index(&bytes);
    assert_eq!(idx["version"], 2);

    // Rebuilt vs raw, per producer, in the index and in size.chunks.
    let raw: BTreeMap<String, (String, String, u64)> = idx["raw"]
        .as_array()
        .map(|a| a.iter().map(|r| (r["digest"].as_str().unwrap().to_string(), (r["producer"].as_str().unwrap().to_string(), r["why"].as_str().unwrap().to_string(), r["size"].as_u64().unwrap()))).collect())
        .unwrap_or_default();
    let recipes: BTreeMap<String, String> = idx["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == 3)
        .map(|e| (e["recipe"]["layer"].as_str().unwrap().to_string(), e["recipe"]["producer"].as_str().unwrap().to_string()))
        .collect();
    let mut table = Vec::new();
    for m in &made {
        let d = &m.blob.digest;
        let line = match (recipes.get(d), raw.get(d)) {
            (Some(prod), None) => format!("{}: rebuilt ({prod})", m.name),
            (None, Some((prod, why, _))) => format!("{}: raw ({prod}: {why})", m.name),
            (r, w) => panic!("{}: layer {d} should be exactly one of recipe / raw, is {r:?} / {w:?}\nindex: {idx}", m.name),
        };
        match m.expect {
            Expect::Rebuilt => assert!(recipes.contains_key(d), "expected rebuilt: {line}"),
            Expect::Raw(label) => assert!(raw.get(d).is_some_and(|(prod, _, _)| prod.contains(label)), "expected raw naming {label}: {line}"),
            Expect::Any => {}
        }
        eprintln!("{line}");
        table.push(line);
    }
    let c = &j["size"]["chunks"];
    assert_eq!(c["layers_raw"].as_u64(), Some(raw.len() as u64), "size.chunks.layers_raw vs index raw: {c}");
    assert_eq!(c["raw_bytes"].as_u64(), Some(raw.values().map(|r| r.2).sum::<u64>()), "size.chunks.raw_bytes: {c}");
    let want_rebuilt = made.iter().filter(|m| recipes.contains_key(&m.blob.digest)).count() as u64;
    assert_eq!(c["layers_rebuilt"].as_u64(), Some(want_rebuilt), "size.chunks.layers_rebuilt: {c}");
    // `size --json` predicts the same figures.
    let sz = env.json(&["size", &edge_ref, &odd_ref]);
    assert_eq!(sz["chunks"]["layers_raw"], c["layers_raw"], "size: {sz}");
    assert_eq!(sz["chunks"]["layers_rebuilt"], c["layers_rebuilt"], "size: {sz}");
    assert_eq!(sz["bundle_bytes"].as_u64(), Some(bytes.len() as u64), "size predicts the bundle's bytes: {sz}");
    // The bundle, once written, says the same: `inspect` (raw layers, producer and why) and
    // `size FILE` (the chunk figures).
    let ins = env.json(&["inspect", s(&b)]);
    assert_eq!(ins["format_version"], 2, "{ins}");
    let below = &ins["below_the_layer"];
    assert_eq!(below["raw"], idx["raw"], "inspect --json lists the raw layers as the index does: {below}");
    for k in ["layers_rebuilt", "layer_bytes_rebuilt", "layers_raw", "raw_bytes", "chunks", "chunk_bytes", "packed_bytes", "recipe_bytes"] {
        assert_eq!(below[k], c[k], "inspect --json below_the_layer.{k} vs bundle --json size.chunks: {below}");
    }
    let text = env.ok(&["inspect", s(&b)]);
    for (d, (prod, _, _)) in &raw {
        assert!(text.lines().any(|l| l.contains("carried whole") && l.contains(d.as_str()) && l.contains(prod.as_str())), "inspect names raw layer {d} ({prod}):\n{text}");
    }
    let sf = env.json(&["size", s(&b)]);
    for k in ["layers_rebuilt", "layer_bytes_rebuilt", "layers_raw", "raw_bytes", "chunks", "chunk_bytes", "packed_bytes", "recipe_bytes"] {
        assert_eq!(sf["chunks"][k], c[k], "size FILE: chunks.{k}: {sf}");
    }
    assert_eq!(sf["raw"], idx["raw"], "size FILE: raw");
    // The same 3 MB file in every rebuilt layer is stored once.
    let rebuilt_sum: u64 = made.iter().filter(|m| recipes.contains_key(&m.blob.digest)).map(|m| m.blob.size).sum();
    let carried = bytes.len() as u64 - raw.values().map(|r| r.2).sum::<u64>();
    assert!(carried * 3 < rebuilt_sum, "rebuilt layers of {rebuilt_sum} bytes took {carried} bytes in the bundle: chunks not shared?");

    // verify, verify --deep.
    for deep in [false, true] {
        let mut a = vec!["verify", s(&b)];
        if deep {
            a.insert(1, "--deep");
        }
        let v = env.json(&a);
        assert_eq!(v["ok"], true, "{a:?}: {v}");
    }

    // import into a fresh store: every blob byte-identical.
    let back = Env::new();
    back.ok(&["import", s(&b)]);
    same_blobs("import", &back.store(), &layout, &[&edge, &odd]);
    let refs = store_refs(&back.store());
    assert!(refs.contains(&edge_ref) && refs.contains(&odd_ref), "{refs:?}");
    back.ok(&["store", "fsck"]);

    // docker-archive straight from the bundle's chunks → podman load: image ID = config digest.
    let docker = p("edge.docker.tar");
    back.ok(&["export", "--from", s(&b), "--docker-archive", s(&docker), &edge_ref]);
    let podman = Podman::new();
    podman.load(&docker);
    let ids: Vec<String> = podman.images().into_iter().map(|(id, _)| id).collect();
    let cfg = &edge.config.as_ref().unwrap().digest;
    assert!(ids.iter().any(|id| id == cfg || format!("sha256:{id}") == *cfg), "podman IDs {ids:?}, want {cfg}");

    // OCI layout: byte-identical blobs, verify --deep, skopeo reads it.
    let out = p("out-layout");
    back.ok(&["export", "--oci-layout", s(&out), &edge_ref, &odd_ref]);
    same_blobs("export --oci-layout", &out, &layout, &[&edge, &odd]);
    let v = back.json(&["verify", "--deep", &format!("oci:{}", s(&out))]);
    assert_eq!(v["ok"], true, "{v}");
    for (r, img) in [(&edge_ref, &edge), (&odd_ref, &odd)] {
        let raw_m = tool("skopeo", &["inspect", "--raw", &format!("oci:{}:{r}", s(&out))]);
        assert_eq!(sha256(raw_m.as_bytes()), img.manifest.digest, "skopeo inspect --raw oci:…:{r}");
        tool("skopeo", &["inspect", &format!("oci:{}:{r}", s(&out))]);
    }

    // push --from the bundle to a second registry: same digests, same blob bytes.
    let reg2 = Registry::start(Variant::Plain);
    env.ok(&["push", "--from", s(&b), "--all", "--to", &format!("{}/copy", reg2.host())]);
    for (repo, img) in [("copy/chunked/edge", &edge), ("copy/chunked/odd", &odd)] {
        assert_eq!(reg2.content_digest(repo, "v1"), img.manifest.digest, "push --from: {repo}");
        assert_eq!(sha256(&reg2.raw_manifest(&format!("{}/{repo}:v1", reg2.host()))), img.manifest.digest);
        for d in &img.layers {
            assert!(reg_blob(&reg2, repo, &d.digest) == std::fs::read(layout.join("blobs/sha256").join(hex_of(&d.digest))).unwrap(), "push --from: {repo} layer {} differs", d.digest);
        }
    }
    eprintln!("{}", table.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// v1 → v2 of one app: the same files re-tarred with other mtimes, re-gzipped, a few files added.

struct App {
    layout: PathBuf,
    v1: Image,
    v2: Image,
    _tmp: tempfile::TempDir,
}

/// Three layers of files (about 20 MB in all, a third noise); v2 adds three files and changes one.
fn app() -> App {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let mut w = LayoutWriter::new(&layout);
    let mut images = Vec::new();
    for (version, mtime, gz) in [(1, 1_700_000_000u64, ["gzip", "-6", "-n"]), (2, 1_710_000_000, ["pigz", "-6", "-n"])] {
        let mut layers = Vec::new();
        for l in 0..3u64 {
            let root = tmp.path().join(format!("v{version}-l{l}"));
            for f in 0..4u64 {
                put(&root.join(format!("app{l}/lib/file{f}.bin")), &mixed(l * 10 + f, 1_500_000 + (f as usize) * 111_111));
            }
            put(&root.join(format!("app{l}/etc/conf")), format!("layer {l}\n").repeat(100).as_bytes());
            std::os::unix::fs::symlink("lib/file0.bin", root.join(format!("app{l}/current"))).unwrap();
            if version == 2 {
                put(&root.join(format!("app{l}/lib/new.bin")), &mixed(1000 + l, 60_000));
                put(&root.join(format!("app{l}/etc/conf")), format!("layer {l} v2\n").repeat(100).as_bytes());
                if l == 1 {
                    put(&root.join("app1/lib/extra.txt"), b"a new file in v2\n");
                }
            }
            let tar = gnu_tar(&root, "pax", mtime);
            let prog = if have(gz[0]) { gz[0] } else { "gzip" };
            let blob = w.blob(&filter(Command::new(prog).args(&gz[1..]), &tar), MT_LAYER_GZIP);
            layers.push((blob, sha256(&tar)));
        }
        let img = w.image(&layers, "linux/amd64", &format!("app v{version}"));
        w.tag(&format!("v{version}"), &img);
        images.push(img);
    }
    let layout = w.finish();
    let v2 = images.pop().unwrap();
    let v1 = images.pop().unwrap();
    assert!(v1.layers.iter().all(|a| v2.layers.iter().all(|b| a.digest != b.digest)), "v1 and v2 share no layer");
    App { layout, v1, v2, _tmp: tmp }
}

/// The app's two images in a registry and in `env`'s store; their references.
fn app_in_store(a: &App, reg: &Registry, env: &Env) -> (String, String) {
    assert_eq!(push(reg, &a.layout, "v1", "chunked/app:v1", PushMode::Oci), a.v1.manifest.digest);
    assert_eq!(push(reg, &a.layout, "v2", "chunked/app:v2", PushMode::Oci), a.v2.manifest.digest);
    let (r1, r2) = (format!("{}/chunked/app:v1", reg.host()), format!("{}/chunked/app:v2", reg.host()));
    env.ok(&["fetch", &r1, &r2]);
    (r1, r2)
}

#[test]
fn chunked_delta_since_a_bundle_or_an_inventory_round_trips() {
    let a = app();
    let reg = Registry::start(Variant::Plain);
    let online = Env::new();
    let (r1, r2) = app_in_store(&a, &reg, &online);
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (base, full, delta) = (p("base.obun"), p("full-v2.obun"), p("delta.obun"));
    online.ok(&["bundle", "-o", s(&base), &r1]);
    online.ok(&["bundle", "-o", s(&full), &r2]);
    let j = online.json(&["bundle", "-o", s(&delta), "--since", s(&base), &r2]);
    let (full_n, delta_n) = (file_len(&full), file_len(&delta));
    eprintln!("v2 full {full_n} bytes, delta since base bundle {delta_n} bytes; {}", j["size"]["chunks"]);
    assert!(delta_n * 100 < full_n * 30, "delta {delta_n} bytes is not < 30 % of the full v2 bundle ({full_n})");
    assert!(j["size"]["chunks"]["chunks_left_to_base"].as_u64().unwrap_or(0) > 0, "{j}");
    let idx = index(&std::fs::read(&delta).unwrap());
    let base_layers: Vec<String> = idx["base_layers"].as_array().unwrap_or_else(|| panic!("no base_layers: {idx}")).iter().map(|r| r["digest"].as_str().unwrap().to_string()).collect();
    assert!(!base_layers.is_empty() && base_layers.iter().all(|d| a.v1.layers.iter().any(|l| &l.digest == d)), "base_layers {base_layers:?} are v1's layers");

    // Without its base: one error naming a base layer, nothing stored.
    let bare = Env::new();
    let args = ["import", s(&delta)];
    let line = error_line(&args, &bare.run(&args));
    assert!(base_layers.iter().any(|d| line.contains(d.as_str())), "the error names a base layer: {line}");
    assert!(store_refs(&bare.store()).is_empty(), "a failed delta import stored references: {:?}", store_refs(&bare.store()));

    // verify without the base: not ok, saying to import the base; with the base's layers in the
    // store (the online side holds v1): ok, deep too.
    let o = bare.run(&["verify", s(&delta)]);
    assert!(!o.status.success() && crate::harness::cmd::text(&o).contains("import the base first"), "verify of a delta without its base: {}", crate::harness::cmd::text(&o));
    for deep in [false, true] {
        let mut args = vec!["verify", s(&delta)];
        if deep {
            args.insert(1, "--deep");
        }
        let v = online.json(&args);
        assert_eq!(v["ok"], true, "{args:?} with the base in the store: {v}");
    }
    // export and push --from the delta, the base's chunks cut from the store's layers: the same
    // docker-archive as from the full bundle, the registry's digest.
    let (from_delta, from_full) = (p("from-delta.tar"), p("from-full.tar"));
    online.ok(&["export", "--from", s(&delta), "--docker-archive", s(&from_delta), &r2]);
    online.ok(&["export", "--from", s(&full), "--docker-archive", s(&from_full), &r2]);
    assert!(std::fs::read(&from_delta).unwrap() == std::fs::read(&from_full).unwrap(), "export --from the delta differs from export --from the full bundle");
    online.ok(&["push", "--from", s(&delta), "--to", &format!("{}/fromdelta", reg.host()), &r2]);
    assert_eq!(reg.content_digest("fromdelta/chunked/app", "v2"), a.v2.manifest.digest, "push --from the delta");

    // Base, then delta: v2 complete and byte-identical; its OCI layout verifies deep.
    let offline = Env::new();
    offline.ok(&["import", s(&base)]);
    let inv = p("inv");
    offline.ok(&["store", "inventory", "-o", s(&inv)]);
    offline.ok(&["import", s(&delta)]);
    same_blobs("base + delta", &offline.store(), &a.layout, &[&a.v1, &a.v2]);
    assert!(store_refs(&offline.store()).contains(&r2));
    offline.ok(&["store", "fsck"]);
    let out = p("v2-layout");
    offline.ok(&["export", "--oci-layout", s(&out), &r2]);
    same_blobs("v2 layout", &out, &a.layout, &[&a.v2]);
    let v = offline.json(&["verify", "--deep", &format!("oci:{}", s(&out))]);
    assert_eq!(v["ok"], true, "{v}");

    // A delta --since the offline store's inventory (taken after the base was imported).
    let delta_inv = p("delta-inv.obun");
    online.ok(&["bundle", "-o", s(&delta_inv), "--since", s(&inv), &r2]);
    let n = file_len(&delta_inv);
    eprintln!("delta since inventory {n} bytes");
    assert!(n * 100 < full_n * 30, "delta since inventory {n} bytes is not < 30 % of {full_n}");
    let offline2 = Env::new();
    offline2.ok(&["import", s(&base)]);
    offline2.ok(&["import", s(&delta_inv)]);
    same_blobs("base + delta since inventory", &offline2.store(), &a.layout, &[&a.v1, &a.v2]);
    let v = offline2.json(&["verify", "--deep", &format!("oci:{}", s(&offline2.store()))]);
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn chunked_bundles_are_deterministic_and_split_and_stream() {
    let a = app();
    let reg = Registry::start(Variant::Plain);
    let env = Env::new();
    let _ = app_in_store(&a, &reg, &env);
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);

    // Twice from the store (the second from the analysis cache): the same bytes.
    let (x1, x2) = (p("x1.obun"), p("x2.obun"));
    env.ok(&["bundle", "--all", "-o", s(&x1)]);
    env.ok(&["bundle", "--all", "-o", s(&x2)]);
    let b1 = std::fs::read(&x1).unwrap();
    assert_eq!(u32::from_le_bytes(b1[8..12].try_into().unwrap()), 2);
    assert!(b1 == std::fs::read(&x2).unwrap(), "the same images bundled twice differ");
    // The second write copied its packs from the store's pack cache. A damaged entry is made
    // again, not used; without the cache, or after gc empties it, the bytes are the same.
    let packs = env.store().join(".ocibundle/packs/v1");
    let mut cached: Vec<PathBuf> = std::fs::read_dir(&packs).unwrap().map(|e| e.unwrap().path()).collect();
    cached.sort();
    assert!(!cached.is_empty(), "no pack cache after a format 2 write");
    let good = std::fs::read(&cached[0]).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&cached[0], &bad).unwrap();
    let x4 = p("x4.obun");
    env.ok(&["bundle", "--all", "-o", s(&x4)]);
    assert!(b1 == std::fs::read(&x4).unwrap(), "a bundle written over a damaged pack cache entry differs");
    assert_eq!(std::fs::read(&cached[0]).unwrap(), good, "the damaged pack cache entry was not made again");
    let out = env.cmd().env("OCIBUNDLE_PACK_CACHE", "0").args(["bundle", "--all", "--force", "-o", s(&x4)]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(b1 == std::fs::read(&x4).unwrap(), "a bundle written without the pack cache differs");
    let gc = env.json(&["store", "gc"]);
    assert!(gc["removed_cache_bytes"].as_u64().unwrap() >= good.len() as u64, "{gc}");
    assert_eq!(std::fs::read_dir(&packs).unwrap().count(), 0, "store gc left the pack cache");
    env.ok(&["bundle", "--all", "--force", "-o", s(&x4)]);
    assert!(b1 == std::fs::read(&x4).unwrap(), "a bundle written after gc differs");
    // From an OCI layout, in a fresh environment (cold cache): the same bytes.
    let layout = p("layout");
    env.ok(&["export", "--all", "--oci-layout", s(&layout)]);
    let cold = Env::new();
    let x3 = p("x3.obun");
    cold.ok(&["bundle", "--from", &format!("oci:{}", s(&layout)), "--all", "-o", s(&x3)]);
    if std::fs::read(&x3).unwrap() != b1 {
        panic!("bundle --from oci: differs from the store's bundle:\n{}\n---\n{}", env.json(&["inspect", s(&x1)]), env.json(&["inspect", s(&x3)]));
    }

    // --dedup blobs: format 1, round trip.
    let f1 = p("f1.obun");
    env.ok(&["bundle", "--all", "--dedup", "blobs", "-o", s(&f1)]);
    let b = std::fs::read(&f1).unwrap();
    assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 1, "--dedup blobs writes format 1");
    assert_eq!(index(&b)["version"], 1);
    assert!(b.len() > b1.len(), "format 1 ({}) should be larger than format 2 ({}) here", b.len(), b1.len());
    let back = Env::new();
    back.ok(&["import", s(&f1)]);
    same_blobs("format 1 import", &back.store(), &a.layout, &[&a.v1, &a.v2]);

    // Volumes.
    let split = p("split.obun");
    env.ok(&["bundle", "--all", "--split-size", "3M", "-o", s(&split)]);
    assert!(volume(&split, 2).is_file(), "--split-size 3M gave one volume for {} bytes", b1.len());
    let v = env.json(&["verify", "--deep", s(&volume(&split, 1))]);
    assert_eq!(v["ok"], true, "{v}");
    let back = Env::new();
    back.ok(&["import", s(&volume(&split, 1))]);
    same_blobs("import of volumes", &back.store(), &a.layout, &[&a.v1, &a.v2]);

    // A stream on stdin.
    let back = Env::new();
    import_stdin(&back, b1);
    same_blobs("import -", &back.store(), &a.layout, &[&a.v1, &a.v2]);
    back.ok(&["store", "fsck"]);
}

//! Owns the bundle tests: `bundle`, `verify`, `inspect`, `size`, `import`, `store inventory`, on stores filled from a real or fake registry, and the broken fixtures in fixtures/bundles/.
//!
//! Each test starts its own registry (real `docker-registry` or the in-process fake one), so
//! they run in parallel. Expected values come from the registry or from the images the test
//! built (digests, sizes), from the bundle format spec in docs/design.md (header 64 bytes,
//! entry headers 48, trailer 64, volume headers 64), or from the peer tools (skopeo,
//! sha256sum). No test asserts on timing.
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::bundles::{
    Layer, Rng, add_image_with, bad_store_blobs, index, layer, store_blobs, store_refs, trailer,
    unique_blobs, volume,
};
use crate::harness::cmd::{Env, error_line, fails, s, sha256, text, tool};
use crate::harness::fakereg::{FakeRegistry, TestImage};
use crate::harness::fixtures::{self, MT_DOCKER_MANIFEST, PushMode, push_one};
use crate::harness::registry::{Registry, Variant};

// ---------------------------------------------------------------------------------------------
// helpers

/// Runs `ocibundle ARGS` in `dir` (so relative file names appear in messages as given).
fn run_in(env: &Env, dir: &Path, args: &[&str]) -> Output {
    env.cmd()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("spawn ocibundle")
}

/// A store `fsck --json` finds nothing wrong with, holding exactly `refs`.
fn assert_store_clean(env: &Env, refs: &[&str]) {
    let v = env.json(&["store", "fsck"]);
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(0),
        "fsck problems: {v}"
    );
    let mut want: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
    want.sort();
    let mut got = store_refs(&env.store());
    got.sort();
    assert_eq!(got, want, "references in {}", env.store().display());
    assert_eq!(v["refs_checked"], refs.len(), "fsck refs_checked: {v}");
}

/// Digests of a bundle's entries (from `inspect --json`'s source of truth: the index).
fn entry_digests(bundle: &Path) -> BTreeSet<String> {
    let idx = index(&fs::read(bundle).unwrap());
    idx["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap().to_string())
        .collect()
}

fn as_u64(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned number: {v}"))
}

/// How often `needle` occurs in `hay`.
fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Every `FILE.NNN` beside `base`, sorted.
fn volumes_of(base: &Path) -> Vec<PathBuf> {
    let dir = base.parent().unwrap();
    let stem = base.file_name().unwrap().to_string_lossy().to_string();
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.strip_prefix(&stem)
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|r| r.len() == 3 && r.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    v.sort();
    v
}

/// Files in `dir` whose names contain `.tmp` (writer temp files that must not survive).
fn temp_leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

/// `sha256sum -c NAME` in `dir`: the FILE.sha256 contract.
fn sha256sum_check(dir: &Path, name: &str) {
    let o = Command::new("sha256sum")
        .arg("-c")
        .arg(name)
        .current_dir(dir)
        .output()
        .expect("spawn sha256sum");
    assert!(
        o.status.success(),
        "sha256sum -c {name} in {}:\n{}",
        dir.display(),
        text(&o)
    );
}

/// Three images sharing their first layer (6000 noise bytes), each with its own second layer.
fn three_sharing(reg: &FakeRegistry) -> (TestImage, TestImage, TestImage, Layer) {
    let shared = layer("dedup-shared", 6000);
    let a = add_image_with(reg, "dedup/a", "v1", &[&shared, &layer("dedup-a", 3000)]);
    let b = add_image_with(reg, "dedup/b", "v1", &[&shared, &layer("dedup-b", 2000)]);
    let c = add_image_with(reg, "dedup/c", "v1", &[&shared, &layer("dedup-c", 1000)]);
    (a, b, c, shared)
}

// ---------------------------------------------------------------------------------------------
// 1. round trip with real tools

/// fetch (plain, schema2, zstd, shared, and multi with --all-platforms) from a real registry,
/// bundle --all, verify, import into a fresh store: skopeo reads every OCI image back with the
/// registry's digests, the schema2 manifest is byte-exact, the blob set and index.json are the
/// same as the source store's, and fsck is clean.
#[test]
fn round_trip_real_registry_fetch_bundle_verify_import() {
    let reg = Registry::start(Variant::Plain);
    let fx = fixtures::push_all(&reg);
    let src = Env::new();
    src.ok(&[
        "fetch",
        &fx.simple.reference,
        &fx.schema2.reference,
        &fx.zstd.reference,
        &fx.shared.reference,
    ]);
    src.ok(&["fetch", "--all-platforms", &fx.multi.reference]);
    // The same index under another tag, fetched for the host's platform only: the store entry
    // is the amd64 child with `io.ocibundle.index.digest`, and the index blob travels too.
    let multi_one = format!("{}/test/multi:one", reg.host());
    let layout = fixtures::layout();
    let index_digest = fixtures::push(&reg, &layout.dir, "multi", "test/multi:one", PushMode::All);
    assert_eq!(index_digest, fx.multi.digest);
    let amd64 = layout.image("multi").children[0].clone();
    assert_eq!(amd64.platform, "linux/amd64");
    src.ok(&["fetch", &multi_one]);
    let all = [&fx.simple, &fx.schema2, &fx.zstd, &fx.multi, &fx.shared];

    let out = tempfile::tempdir().unwrap();
    let b = out.path().join("all.obun");
    let doc = src.json(&["bundle", "-o", s(&b), "--all"]);
    assert_eq!(
        doc["files"][0]["bytes"],
        fs::metadata(&b).unwrap().len(),
        "bundle --json files: {doc}"
    );
    assert!(
        temp_leftovers(out.path()).is_empty(),
        "temp files left: {:?}",
        temp_leftovers(out.path())
    );
    sha256sum_check(out.path(), "all.obun.sha256");
    let v = src.json(&["verify", s(&b)]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["blobs_checked"],
        store_blobs(&src.store()).len(),
        "verify checks every blob once: {v}"
    );

    let dst = Env::new();
    let r = dst.json(&["import", s(&b)]);
    let mut want: Vec<&str> = all.iter().map(|p| p.reference.as_str()).collect();
    want.push(&multi_one);
    want.sort();
    assert_eq!(
        r["images"],
        serde_json::json!(want),
        "import --json images: {r}"
    );
    assert_store_clean(&dst, &want);
    assert_eq!(
        store_blobs(&dst.store()),
        store_blobs(&src.store()),
        "imported blob set = source blob set"
    );
    let idx = |e: &Env| -> Value {
        serde_json::from_slice(&fs::read(e.store().join("index.json")).unwrap()).unwrap()
    };
    assert_eq!(
        idx(&dst)["manifests"],
        idx(&src)["manifests"],
        "imported index.json entries = source entries"
    );

    for p in [&fx.simple, &fx.zstd, &fx.shared, &fx.multi] {
        let oci = format!("oci:{}:{}", dst.store().display(), p.reference);
        let raw = tool("skopeo", &["inspect", "--raw", &oci]);
        assert_eq!(
            sha256(raw.as_bytes()),
            p.digest,
            "skopeo reads {} from the imported store with the registry's digest",
            p.reference
        );
        let tmp = tempfile::tempdir().unwrap();
        let dest = format!("dir:{}", tmp.path().join("img").display());
        let mut args = vec!["copy", "--quiet"];
        if p.repo.ends_with("multi") {
            args.push("--all");
        }
        args.extend([oci.as_str(), dest.as_str()]);
        tool("skopeo", &args);
        assert!(
            tmp.path().join("img/manifest.json").exists(),
            "skopeo copy {oci} wrote no manifest.json"
        );
    }
    // skopeo's oci: transport cannot see Docker schema2 entries: compare bytes instead.
    let raw = reg.raw_manifest(&fx.schema2.reference);
    let blob = |d: &str| {
        fs::read(
            dst.store()
                .join("blobs/sha256")
                .join(d.strip_prefix("sha256:").unwrap()),
        )
    };
    assert_eq!(
        blob(&fx.schema2.digest).expect("schema2 manifest imported"),
        raw,
        "schema2 manifest bytes"
    );
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], MT_DOCKER_MANIFEST);
    for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
        let d = d["digest"].as_str().unwrap();
        assert_eq!(
            sha256(&blob(d).unwrap_or_else(|e| panic!("schema2 blob {d} not imported: {e}"))),
            d
        );
    }
    let entry = idx(&dst)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["annotations"]["org.opencontainers.image.ref.name"] == fx.schema2.reference.as_str()
        })
        .cloned()
        .expect("schema2 reference imported");
    assert_eq!(entry["digest"], fx.schema2.digest.as_str());
    assert_eq!(entry["mediaType"], MT_DOCKER_MANIFEST);

    let entry = idx(&dst)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == multi_one.as_str())
        .cloned()
        .expect("multi:one imported");
    assert_eq!(entry["digest"], amd64.manifest.digest.as_str(), "{entry}");
    assert_eq!(
        entry["annotations"]["io.ocibundle.index.digest"],
        fx.multi.digest.as_str(),
        "{entry}"
    );
    assert_eq!(
        sha256(&blob(&fx.multi.digest).expect("the index travelled")),
        fx.multi.digest
    );
    let oci = format!("oci:{}:{multi_one}", dst.store().display());
    let raw = tool("skopeo", &["inspect", "--raw", &oci]);
    assert_eq!(
        sha256(raw.as_bytes()),
        amd64.manifest.digest,
        "skopeo reads the amd64 child"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. dedup

/// Three images sharing a layer: the layer is carried once (`inspect --json` `shared`, entry
/// count, and the layer's bytes occur once in the file). The bundle's overhead over the unique
/// blob bytes is exactly what docs/design.md specifies: 64 (header) + 48 per entry + the index
/// JSON + 64 (trailer); for these three tiny images that is well under 64 KiB.
#[test]
fn dedup_shared_layer_is_carried_once() {
    let reg = FakeRegistry::start();
    let (a, b, c, shared) = three_sharing(&reg);
    let env = Env::new();
    env.ok(&["fetch", &a.reference, &b.reference, &c.reference]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dedup.obun");
    env.ok(&[
        "bundle",
        "-o",
        s(&f),
        &a.reference,
        &b.reference,
        &c.reference,
    ]);
    let bytes = fs::read(&f).unwrap();

    let unique = unique_blobs(&[&a, &b, &c]);
    let unique_bytes: u64 = unique.values().sum();
    assert_eq!(
        unique.len(),
        3 + 3 + 4,
        "3 manifests, 3 configs, 4 distinct layers"
    );
    let shared_digest = a.layers[0].digest.clone();
    assert_eq!(b.layers[0].digest, shared_digest);

    let v = env.json(&["inspect", s(&f)]);
    assert_eq!(v["blobs"], unique.len(), "inspect blobs: {v}");
    assert_eq!(v["blob_bytes"], unique_bytes, "inspect blob_bytes: {v}");
    let sh = v["shared"]
        .as_array()
        .unwrap_or_else(|| panic!("no shared array: {v}"));
    assert_eq!(sh.len(), 1, "exactly one shared blob: {v}");
    assert_eq!(sh[0]["digest"], shared_digest.as_str(), "{v}");
    assert_eq!(sh[0]["size"], shared.1.len(), "{v}");
    let mut users: Vec<String> = sh[0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    users.sort();
    let mut want = vec![
        a.reference.clone(),
        b.reference.clone(),
        c.reference.clone(),
    ];
    want.sort();
    assert_eq!(users, want, "images sharing the layer: {v}");
    for img in [&a, &b, &c] {
        let i = v["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["reference"] == img.reference.as_str())
            .unwrap_or_else(|| panic!("{} not in {v}", img.reference));
        assert_eq!(i["bytes"], img.total_size(), "inspect image bytes: {i}");
        assert_eq!(i["digest"], img.manifest_digest.as_str());
    }
    assert_eq!(
        entry_digests(&f),
        unique.keys().cloned().collect::<BTreeSet<_>>(),
        "index entries = the unique blobs"
    );
    assert_eq!(
        occurrences(&bytes, &shared.1),
        1,
        "the shared layer's bytes occur once in the bundle"
    );

    let (_, index_len) = trailer(&bytes);
    let overhead = bytes.len() as u64 - unique_bytes;
    assert_eq!(
        overhead,
        64 + 48 * unique.len() as u64 + index_len + 64,
        "overhead = header + entry headers + index + trailer"
    );
    assert!(
        overhead < 64 * 1024,
        "overhead {overhead} bytes for 3 tiny images"
    );

    let z = env.json(&["size", &a.reference, &b.reference, &c.reference]);
    assert_eq!(z["bundle_bytes"], bytes.len(), "size: {z}");
    assert_eq!(z["dedup_bytes"], unique_bytes, "size: {z}");
    assert_eq!(z["carried_blobs"], unique.len(), "size: {z}");
    assert_eq!(
        z["sum_per_image_bytes"],
        a.total_size() + b.total_size() + c.total_size(),
        "size: {z}"
    );
    for i in z["images"].as_array().unwrap() {
        assert_eq!(
            i["shared_bytes"],
            shared.1.len(),
            "per-image shared bytes: {i}"
        );
    }

    let dst = Env::new();
    dst.ok(&["import", s(&f)]);
    assert_eq!(
        store_blobs(&dst.store()),
        unique.keys().cloned().collect::<Vec<_>>()
    );
    assert_store_clean(&dst, &[&a.reference, &b.reference, &c.reference]);
}

// ---------------------------------------------------------------------------------------------
// 3. determinism

/// Same images → same bytes: twice, refs in another order (and repeated), via `--images`, to
/// stdout (with `--json` going to stderr), and from another store filled in another order.
#[test]
fn determinism_same_images_give_identical_bytes() {
    let reg = FakeRegistry::start();
    let (a, b, c, _) = three_sharing(&reg);
    let env = Env::new();
    env.ok(&["fetch", &a.reference, &b.reference, &c.reference]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ra, rb, rc) = (
        a.reference.as_str(),
        b.reference.as_str(),
        c.reference.as_str(),
    );

    let j1 = env.json(&["bundle", "-o", s(&d.join("x1")), ra, rb, rc]);
    env.ok(&["bundle", "-o", s(&d.join("x2")), ra, rb, rc]);
    env.ok(&["bundle", "-o", s(&d.join("x3")), rc, ra, rb, ra]);
    let list = d.join("list.txt");
    fs::write(
        &list,
        format!("# images to carry\n{rb}\n\n{rc}   # trailing comment\n{ra}\n"),
    )
    .unwrap();
    env.ok(&["bundle", "-o", s(&d.join("x4")), "--images", s(&list)]);
    let o = env.run(&["bundle", "-o", "-", rb, rc, ra, "--json"]);
    assert!(
        o.status.success(),
        "bundle -o -:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout_bundle = o.stdout;

    let other = Env::new();
    for r in [rc, rb, ra] {
        other.ok(&["fetch", r]);
    }
    other.ok(&["bundle", "-o", s(&d.join("x5")), ra, rb, rc]);

    let x1 = fs::read(d.join("x1")).unwrap();
    for (name, got) in [
        ("same args again", fs::read(d.join("x2")).unwrap()),
        (
            "refs reordered and repeated",
            fs::read(d.join("x3")).unwrap(),
        ),
        ("--images list", fs::read(d.join("x4")).unwrap()),
        ("-o - (stdout)", stdout_bundle),
        (
            "another store, fetched in another order",
            fs::read(d.join("x5")).unwrap(),
        ),
    ] {
        assert!(
            got == x1,
            "{name}: {} bytes differ from the first bundle's {} bytes (first difference at byte {:?})",
            got.len(),
            x1.len(),
            got.iter().zip(&x1).position(|(p, q)| p != q)
        );
    }
    assert_eq!(
        index(&x1)["bundle_id"],
        j1["bundle_id"],
        "bundle --json bundle_id is the index's"
    );
    assert_eq!(
        hex::encode(&x1[16..48]),
        j1["bundle_id"].as_str().unwrap(),
        "header bundle id"
    );
    // A different image set is a different bundle.
    env.ok(&["bundle", "-o", s(&d.join("y")), ra, rb]);
    assert_ne!(
        index(&fs::read(d.join("y")).unwrap())["bundle_id"],
        j1["bundle_id"],
        "different images, same bundle id"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. size prediction

/// `size` predicts exactly the bytes `bundle` writes: one file, volumes (sum of the volume
/// files, their count) and a delta; `size FILE` on the written bundle says the same.
#[test]
fn size_predicts_bytes_written() {
    let reg = FakeRegistry::start();
    let shared = layer("size-shared", 12_000);
    let a = add_image_with(&reg, "size/a", "v1", &[&shared, &layer("size-a", 9_000)]);
    let b = add_image_with(&reg, "size/b", "v1", &[&shared, &layer("size-b", 15_000)]);
    let c = add_image_with(&reg, "size/c", "v1", &[&layer("size-c", 7_000)]);
    let env = Env::new();
    env.ok(&["fetch", &a.reference, &b.reference, &c.reference]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ra, rb, rc) = (
        a.reference.as_str(),
        b.reference.as_str(),
        c.reference.as_str(),
    );
    let len = |p: &Path| fs::metadata(p).unwrap().len();

    // One file.
    let z = env.json(&["size", ra, rb]);
    let f = d.join("ab.obun");
    let j = env.json(&["bundle", "-o", s(&f), ra, rb]);
    assert_eq!(z["bundle_bytes"], len(&f), "size before bundle: {z}");
    assert_eq!(z["volumes"], 1, "{z}");
    assert_eq!(j["bytes"], len(&f), "bundle --json bytes: {j}");
    let zf = env.json(&["size", s(&f)]);
    assert_eq!(zf["bundle_bytes"], len(&f), "size FILE: {zf}");
    for k in [
        "volumes",
        "dedup_bytes",
        "carried_bytes",
        "carried_blobs",
        "required_blobs",
        "sum_per_image_bytes",
    ] {
        assert_eq!(
            zf[k], z[k],
            "size FILE and size REFS disagree on {k}:\n{zf}\n{z}"
        );
    }

    // Volumes.
    let z = env.json(&["size", "--split-size", "20k", ra, rb, rc]);
    let v = d.join("abc.obun");
    env.ok(&["bundle", "--split-size", "20k", "-o", s(&v), ra, rb, rc]);
    let vols = volumes_of(&v);
    assert!(vols.len() >= 3, "want at least 3 volumes, got {vols:?}");
    assert!(
        !v.exists(),
        "a split bundle writes no FILE without a number"
    );
    assert_eq!(z["volumes"], vols.len(), "size --split-size volumes: {z}");
    assert_eq!(
        z["bundle_bytes"],
        vols.iter().map(|p| len(p)).sum::<u64>(),
        "sum of the volume files: {z}"
    );
    for (i, p) in vols.iter().enumerate() {
        assert_eq!(
            *p,
            volume(&v, i as u32 + 1),
            "volume names are FILE.001, FILE.002, ..."
        );
        if i + 1 < vols.len() {
            assert_eq!(
                len(p),
                20_000,
                "{} is exactly --split-size 20k = 20000 bytes",
                p.display()
            );
        } else {
            assert!(
                len(p) <= 20_000 && len(p) > 64,
                "last volume {} bytes",
                len(p)
            );
        }
    }
    for name in [v.clone(), volume(&v, 2)] {
        let zf = env.json(&["size", s(&name)]);
        assert_eq!(
            zf["bundle_bytes"],
            z["bundle_bytes"],
            "size {}: {zf}",
            name.display()
        );
        assert_eq!(zf["volumes"], z["volumes"], "size {}: {zf}", name.display());
    }

    // Delta against the one-file bundle of a and b.
    let z = env.json(&["size", "--since", s(&f), rb, rc]);
    let delta = d.join("delta.obun");
    env.ok(&["bundle", "--since", s(&f), "-o", s(&delta), rb, rc]);
    assert_eq!(z["bundle_bytes"], len(&delta), "size --since: {z}");
    assert!(
        as_u64(&z["required_blobs"]) > 0,
        "b's blobs are in the base: {z}"
    );
    let zf = env.json(&["size", s(&delta)]);
    assert_eq!(zf["bundle_bytes"], len(&delta), "size DELTA: {zf}");
    for k in [
        "carried_bytes",
        "carried_blobs",
        "required_blobs",
        "dedup_bytes",
    ] {
        assert_eq!(
            zf[k], z[k],
            "size DELTA and size --since disagree on {k}:\n{zf}\n{z}"
        );
    }

    // Delta and volumes together.
    let z = env.json(&["size", "--since", s(&f), "--split-size", "10k", rb, rc]);
    let dv = d.join("dv.obun");
    env.ok(&[
        "bundle",
        "--since",
        s(&f),
        "--split-size",
        "10k",
        "-o",
        s(&dv),
        rb,
        rc,
    ]);
    let vols = volumes_of(&dv);
    assert_eq!(z["volumes"], vols.len(), "{z}");
    assert_eq!(
        z["bundle_bytes"],
        vols.iter().map(|p| len(p)).sum::<u64>(),
        "{z}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. bit flips and truncation

/// After a failed import: no blob that fails its digest, no reference.
fn assert_import_left_nothing_bad(store: &Path, what: &str) -> Result<(), String> {
    let bad = bad_store_blobs(store);
    if !bad.is_empty() {
        return Err(format!(
            "{what}: import stored blobs that fail their digest: {bad:?}"
        ));
    }
    let refs = store_refs(store);
    if !refs.is_empty() {
        return Err(format!("{what}: import left references {refs:?}"));
    }
    Ok(())
}

/// verify and import of `bad` both fail by the error contract, and import leaves the fresh
/// store without bad blobs or references. Returns a description of what went wrong, if anything.
fn check_rejected(env: &Env, bad: &Path, store: &Path, what: &str) -> Result<(), String> {
    let o = env.run(&["verify", s(bad)]);
    if o.status.code() != Some(1)
        || !String::from_utf8_lossy(&o.stderr)
            .lines()
            .any(|l| l.starts_with("error: "))
    {
        return Err(format!(
            "{what}: verify exit {:?}, want 1 with an error line; {}",
            o.status.code(),
            text(&o)
        ));
    }
    let o = env.run(&["--store", s(store), "import", s(bad)]);
    if o.status.code() != Some(1)
        || !String::from_utf8_lossy(&o.stderr)
            .lines()
            .any(|l| l.starts_with("error: "))
    {
        return Err(format!(
            "{what}: import exit {:?}, want 1 with an error line; {}",
            o.status.code(),
            text(&o)
        ));
    }
    assert_import_left_nothing_bad(store, what)
}

/// One random bit flipped at 62 offsets spread over every part of a small bundle (header,
/// entry headers, blob data, index, trailer; seeded, so a failure names a reproducible
/// offset): each one makes verify and import fail, and import stores nothing wrong.
/// Then the same for truncation at 12 lengths.
#[test]
fn bit_flips_and_truncation_are_always_detected() {
    let reg = FakeRegistry::start();
    let img = add_image_with(
        &reg,
        "flip/me",
        "v1",
        &[&layer("flip-1", 1500), &layer("flip-2", 700)],
    );
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.obun");
    env.ok(&["bundle", "-o", s(&good), &img.reference]);
    env.ok(&["verify", s(&good)]);
    let orig = fs::read(&good).unwrap();
    let n = orig.len() as u64;
    let idx = index(&orig);
    let (ioff, ilen) = trailer(&orig);
    let entries: Vec<(u64, u64)> = idx["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (as_u64(&e["offset"]), as_u64(&e["size"])))
        .collect();
    assert_eq!(entries.len(), 4, "manifest, config, 2 layers");

    let mut rng = Rng::new(0x0c1b_b17f);
    let mut offsets = Vec::new();
    let mut pick = |region: &str, lo: u64, hi: u64, count: usize, out: &mut Vec<(String, u64)>| {
        for _ in 0..count {
            out.push((region.to_string(), rng.range(lo, hi)));
        }
    };
    pick("header", 0, 64, 10, &mut offsets);
    for (i, &(off, size)) in entries.iter().enumerate() {
        pick(&format!("entry header {i}"), off - 48, off, 4, &mut offsets);
        pick(&format!("entry data {i}"), off, off + size, 4, &mut offsets);
    }
    pick("index", ioff, ioff + ilen, 12, &mut offsets);
    pick("trailer", n - 64, n, 8, &mut offsets);
    assert!(offsets.len() >= 60);

    let bad = dir.path().join("bad.obun");
    let mut failures = Vec::new();
    for (i, (region, off)) in offsets.iter().enumerate() {
        let bit = (rng_bit(i as u64)) as u8;
        let mut data = orig.clone();
        data[*off as usize] ^= 1 << bit;
        fs::write(&bad, &data).unwrap();
        let store = dir.path().join(format!("store-flip-{i}"));
        if let Err(e) = check_rejected(
            &env,
            &bad,
            &store,
            &format!("bit {bit} of byte {off} ({region})"),
        ) {
            failures.push(e);
        }
        let _ = fs::remove_dir_all(&store);
    }

    let cuts = [
        0,
        1,
        63,
        64,
        65,
        entries[0].0 - 1,
        entries[0].0 + 10,
        entries[3].0 + 1,
        ioff,
        ioff + ilen / 2,
        n - 64,
        n - 1,
    ];
    for (i, cut) in cuts.iter().enumerate() {
        fs::write(&bad, &orig[..*cut as usize]).unwrap();
        let store = dir.path().join(format!("store-cut-{i}"));
        if let Err(e) = check_rejected(
            &env,
            &bad,
            &store,
            &format!("truncated to {cut} of {n} bytes"),
        ) {
            failures.push(e);
        }
        let _ = fs::remove_dir_all(&store);
    }
    assert!(
        failures.is_empty(),
        "{} of {} damaged bundles were not rejected cleanly:\n{}",
        failures.len(),
        offsets.len() + cuts.len(),
        failures.join("\n")
    );
    // The untouched bundle still imports (the damage, not the setup, made the others fail).
    let dst = Env::new();
    dst.ok(&["import", s(&good)]);
    assert_store_clean(&dst, &[&img.reference]);
}

/// Which bit of the byte the i-th flip toggles (0..8), spread evenly and reproducibly.
fn rng_bit(i: u64) -> u64 {
    Rng::new(0xb175 ^ i.wrapping_mul(0x1000_0001)).range(0, 8)
}

// ---------------------------------------------------------------------------------------------
// 6. volumes

/// A store with two images (one ~46 kB, one ~43 kB) and two split bundles of 20k volumes.
struct Split {
    _reg: FakeRegistry,
    env: Env,
    dir: tempfile::TempDir,
    img: TestImage,
    other: TestImage,
}

fn split_setup() -> Split {
    let reg = FakeRegistry::start();
    let img = add_image_with(
        &reg,
        "vol/main",
        "v1",
        &[&layer("vol-1", 30_000), &layer("vol-2", 15_000)],
    );
    let other = add_image_with(
        &reg,
        "vol/other",
        "v1",
        &[&layer("vol-3", 28_000), &layer("vol-4", 14_000)],
    );
    let env = Env::new();
    env.ok(&["fetch", &img.reference, &other.reference]);
    let dir = tempfile::tempdir().unwrap();
    Split {
        _reg: reg,
        env,
        dir,
        img,
        other,
    }
}

/// Writes `NAME.001…` in a new folder `dir/sub` for `reference` with 20k volumes.
fn split_bundle(sp: &Split, sub: &str, reference: &str) -> PathBuf {
    let d = sp.dir.path().join(sub);
    fs::create_dir_all(&d).unwrap();
    let base = d.join("b.obun");
    sp.env
        .ok(&["bundle", "--split-size", "20k", "-o", s(&base), reference]);
    base
}

/// Every reader accepts FILE.001, FILE.003 and FILE; `sha256sum -c FILE.sha256` passes;
/// an existing first volume is refused without --force.
#[test]
fn volumes_every_reader_accepts_any_volume_name() {
    let sp = split_setup();
    let base = split_bundle(&sp, "good", &sp.img.reference);
    let d = base.parent().unwrap();
    let vols = volumes_of(&base);
    assert_eq!(vols.len(), 3, "46 kB in 20 kB volumes: {vols:?}");
    for v in &vols {
        assert_eq!(
            &fs::read(v).unwrap()[..8],
            b"OCIBVOL\x01",
            "{} starts with a volume header",
            v.display()
        );
    }
    let sums = fs::read_to_string(base.with_extension("obun.sha256")).expect("FILE.sha256 written");
    assert_eq!(sums.lines().count(), 3, "one line per volume:\n{sums}");
    for (line, v) in sums.lines().zip(&vols) {
        let name = v.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            line,
            format!(
                "{}  {name}",
                &sha256(&fs::read(v).unwrap())["sha256:".len()..]
            ),
            "relative names"
        );
    }
    sha256sum_check(d, "b.obun.sha256");
    assert!(
        temp_leftovers(d).is_empty(),
        "temp files left: {:?}",
        temp_leftovers(d)
    );

    let mut ids = BTreeSet::new();
    for name in [volume(&base, 1), volume(&base, 3), base.clone()] {
        let v = sp.env.json(&["verify", s(&name)]);
        assert_eq!(v["ok"], true, "verify {}: {v}", name.display());
        let i = sp.env.json(&["inspect", s(&name)]);
        assert_eq!(i["volumes"], 3, "inspect {}: {i}", name.display());
        assert_eq!(i["images"][0]["reference"], sp.img.reference.as_str());
        ids.insert(i["bundle_id"].as_str().unwrap().to_string());
        let z = sp.env.json(&["size", s(&name)]);
        assert_eq!(
            z["bundle_bytes"],
            vols.iter()
                .map(|p| fs::metadata(p).unwrap().len())
                .sum::<u64>(),
            "size {}: {z}",
            name.display()
        );
        let dst = Env::new();
        dst.ok(&["import", s(&name)]);
        assert_store_clean(&dst, &[&sp.img.reference]);
    }
    assert_eq!(
        ids.len(),
        1,
        "one bundle id whatever the volume named: {ids:?}"
    );

    // Existing output: refused (naming it, changing nothing), then replaced with --force.
    let before: Vec<Vec<u8>> = vols.iter().map(|v| fs::read(v).unwrap()).collect();
    let e = fails(
        &sp.env,
        &[
            "bundle",
            "--split-size",
            "20k",
            "-o",
            s(&base),
            &sp.other.reference,
        ],
    );
    assert!(
        e.contains(s(&volume(&base, 1))),
        "error names the existing volume: {e}"
    );
    assert_eq!(
        vols.iter()
            .map(|v| fs::read(v).unwrap())
            .collect::<Vec<_>>(),
        before,
        "a refused bundle changed the volumes"
    );
    sp.env.ok(&[
        "bundle",
        "--split-size",
        "20k",
        "-o",
        s(&base),
        "--force",
        &sp.other.reference,
    ]);
    let i = sp.env.json(&["inspect", s(&base)]);
    assert_eq!(
        i["images"][0]["reference"],
        sp.other.reference.as_str(),
        "--force replaced the bundle: {i}"
    );
    sha256sum_check(d, "b.obun.sha256");
}

/// A fresh good volume set in `dir/NAME`, damaged by `damage`; verify and import of
/// `FILE.001` must fail (import storing nothing). Returns (FILE, verify's error, import's error).
fn damaged_split(sp: &Split, name: &str, damage: &dyn Fn(&Path)) -> (PathBuf, String, String) {
    let base = split_bundle(sp, name, &sp.img.reference);
    damage(&base);
    let v = fails(&sp.env, &["verify", s(&volume(&base, 1))]);
    let store = sp.dir.path().join(format!("store-{name}"));
    let i = fails(
        &sp.env,
        &["--store", s(&store), "import", s(&volume(&base, 1))],
    );
    assert!(
        assert_import_left_nothing_bad(&store, name).is_ok() && store_blobs(&store).is_empty(),
        "{name}: import stored something"
    );
    (base, v, i)
}

/// Damaged volume sets: the error names the volume at fault.
#[test]
fn volumes_missing_swapped_foreign_truncated_are_named() {
    let sp = split_setup();
    let foreign = split_bundle(&sp, "foreign", &sp.other.reference);
    assert!(
        volumes_of(&foreign).len() >= 3,
        "the other bundle has 3 volumes too"
    );

    let case = |name: &str, damage: &dyn Fn(&Path)| damaged_split(&sp, name, damage);

    let (base, v, i) = case("middle-missing", &|b| {
        fs::remove_file(volume(b, 2)).unwrap()
    });
    for e in [&v, &i] {
        assert!(
            e.contains(s(&volume(&base, 2))),
            "missing middle volume: error does not name {}: {e}",
            volume(&base, 2).display()
        );
        assert!(e.contains("missing"), "says it is missing: {e}");
    }

    let (base, v, i) = case("swapped", &|b| {
        let t = b.with_extension("tmp-swap");
        fs::rename(volume(b, 1), &t).unwrap();
        fs::rename(volume(b, 2), volume(b, 1)).unwrap();
        fs::rename(&t, volume(b, 2)).unwrap();
    });
    for e in [&v, &i] {
        assert!(
            e.contains(s(&volume(&base, 1))) || e.contains(s(&volume(&base, 2))),
            "swapped volumes: error names neither: {e}"
        );
    }

    let (base, v, i) = case("foreign-middle", &|b| {
        fs::copy(volume(&foreign, 2), volume(b, 2)).unwrap();
    });
    for e in [&v, &i] {
        assert!(
            e.contains(s(&volume(&base, 2))),
            "foreign volume 2: error does not name it: {e}"
        );
        assert!(
            e.contains("another bundle"),
            "says it belongs to another bundle: {e}"
        );
    }

    let (base, v, i) = case("last-missing", &|b| fs::remove_file(volume(b, 3)).unwrap());
    for e in [&v, &i] {
        assert!(
            e.contains(s(&volume(&base, 2))) || e.contains(s(&volume(&base, 3))),
            "last volume removed: error names no volume: {e}"
        );
        assert!(
            e.contains("missing") || e.contains("truncated"),
            "last volume removed: unclear error: {e}"
        );
    }

    let (base, v, i) = case("middle-truncated", &|b| {
        let p = volume(b, 2);
        let data = fs::read(&p).unwrap();
        fs::write(&p, &data[..data.len() - 1]).unwrap();
    });
    for e in [&v, &i] {
        assert!(
            e.contains(s(&volume(&base, 2))),
            "truncated volume 2 not named: {e}"
        );
    }
}

/// A foreign FIRST volume is the one to blame, not its rightful neighbour: the index (in the
/// last volume) and the other volumes say which bundle this is (docs/design.md: "a missing,
/// swapped or foreign volume is named in the error").
#[test]
fn volumes_foreign_first_volume_is_the_one_named() {
    let sp = split_setup();
    let foreign = split_bundle(&sp, "foreign", &sp.other.reference);
    let (base, v, i) = damaged_split(&sp, "foreign-first", &|b| {
        fs::copy(volume(&foreign, 1), volume(b, 1)).unwrap();
    });
    for e in [&v, &i] {
        assert!(
            e.contains("another bundle"),
            "says a volume belongs to another bundle: {e}"
        );
        let named_first = e.find(s(&volume(&base, 1)));
        let named_second = e.find(s(&volume(&base, 2)));
        assert!(
            named_first.is_some() && named_second.is_none_or(|p2| named_first.unwrap() < p2),
            "foreign volume 1: the error should blame {} (the foreign one): {e}",
            volume(&base, 1).display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. delta

/// `bundle --since BASE` carries only what BASE lacks and lists the rest in `requires`;
/// importing it needs the base first; a delta against a `store inventory` carries the same.
#[test]
fn delta_since_bundle_and_inventory() {
    let reg = FakeRegistry::start();
    let shared = layer("delta-shared", 8000);
    let i1 = add_image_with(&reg, "delta/one", "v1", &[&shared, &layer("delta-1", 3000)]);
    let i2 = add_image_with(&reg, "delta/two", "v1", &[&shared, &layer("delta-2", 4000)]);
    let env = Env::new();
    env.ok(&["fetch", &i1.reference, &i2.reference]);
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.obun");
    let delta = dir.path().join("delta.obun");
    let jb = env.json(&["bundle", "-o", s(&base), &i1.reference]);
    let jd = env.json(&[
        "bundle",
        "-o",
        s(&delta),
        "--since",
        s(&base),
        &i2.reference,
    ]);
    assert_eq!(jd["requires"], 1, "bundle --json requires: {jd}");

    let v = env.json(&["inspect", s(&delta)]);
    let req: Vec<&str> = v["requires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        req,
        vec![shared_digest(&i1)],
        "requires = the layer the base holds: {v}"
    );
    assert_eq!(v["requires"][0]["size"], shared.1.len());
    assert_eq!(v["base"]["kind"], "bundle", "{v}");
    assert_eq!(
        v["base"]["id"], jb["bundle_id"],
        "base id = the base bundle's id: {v}"
    );
    let want: BTreeSet<String> = unique_blobs(&[&i2])
        .into_keys()
        .filter(|d| d != shared_digest(&i1))
        .collect();
    assert_eq!(
        entry_digests(&delta),
        want,
        "the delta carries i2's blobs minus the base's"
    );

    // Without the base.
    let empty = Env::new();
    let e = fails(&empty, &["import", s(&delta)]);
    assert!(
        e.contains(shared_digest(&i1)),
        "import without base does not name the missing blob: {e}"
    );
    assert!(store_refs(&empty.store()).is_empty() && bad_store_blobs(&empty.store()).is_empty());
    let e = fails(&empty, &["verify", s(&delta)]);
    assert!(
        e.contains(shared_digest(&i1)),
        "verify without base does not name the missing blob: {e}"
    );

    // Base, then delta.
    let dst = Env::new();
    dst.ok(&["import", s(&base)]);
    let v = dst.json(&["verify", s(&delta)]);
    assert_eq!(
        v["ok"], true,
        "verify DELTA against a store holding the base: {v}"
    );
    let r = dst.json(&["import", s(&delta)]);
    assert_eq!(r["blobs_imported"], want.len(), "{r}");
    assert_store_clean(&dst, &[&i1.reference, &i2.reference]);
    assert_eq!(store_blobs(&dst.store()), store_blobs(&env.store()));

    // Against an inventory of a store holding only i1 (the offline side).
    let offline = Env::new();
    offline.ok(&["import", s(&base)]);
    let inv = dir.path().join("inv.txt");
    offline.ok(&["store", "inventory", "-o", s(&inv)]);
    let inv_text = fs::read_to_string(&inv).unwrap();
    assert_eq!(
        inv_text.lines().next(),
        Some("# ocibundle inventory v1"),
        "{inv_text}"
    );
    let listed: BTreeSet<String> = inv_text
        .lines()
        .skip(1)
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        unique_blobs(&[&i1]).into_keys().collect::<BTreeSet<_>>(),
        "inventory lists the store's blobs"
    );
    let delta2 = dir.path().join("delta2.obun");
    env.ok(&[
        "bundle",
        "-o",
        s(&delta2),
        "--since",
        s(&inv),
        &i2.reference,
    ]);
    assert_eq!(
        entry_digests(&delta2),
        want,
        "delta against the inventory carries the same blobs"
    );
    let v = env.json(&["inspect", s(&delta2)]);
    assert_eq!(v["base"]["kind"], "inventory", "{v}");
    assert_eq!(v["requires"][0]["digest"], shared_digest(&i1), "{v}");
    offline.ok(&["import", s(&delta2)]);
    assert_store_clean(&offline, &[&i1.reference, &i2.reference]);
}

fn shared_digest(i: &TestImage) -> &str {
    &i.layers[0].digest
}

// ---------------------------------------------------------------------------------------------
// 8. verify --images

#[test]
fn verify_images_list_required_and_optional() {
    let reg = FakeRegistry::start();
    let a = reg.add_image("list/a", "v1", &[500]);
    let b = reg.add_image("list/b", "v1", &[600]);
    let absent = reg.reference("list/absent", "v9");
    let env = Env::new();
    env.ok(&["fetch", &a.reference, &b.reference]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ab.obun");
    env.ok(&["bundle", "-o", s(&f), &a.reference, &b.reference]);
    let list = |name: &str, body: String| -> String {
        let p = dir.path().join(name);
        fs::write(&p, body).unwrap();
        s(&p).to_string()
    };

    let ok = list(
        "ok.txt",
        format!("# needed offline\n{}\n\n{}\n", a.reference, b.reference),
    );
    let o = env.run(&["verify", s(&f), "--images", &ok]);
    assert!(o.status.success(), "required images present:\n{}", text(&o));

    let missing = list("missing.txt", format!("{}\n{absent}\n", a.reference));
    let e = fails(&env, &["verify", s(&f), "--images", &missing]);
    assert!(
        e.contains(&absent),
        "error does not name the missing required image: {e}"
    );
    let o = env.run(&["verify", s(&f), "--images", &missing, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", text(&o)));
    assert_eq!(v["missing_required"], serde_json::json!([absent]), "{v}");
    assert_eq!(v["ok"], false, "{v}");

    let optional = list(
        "optional.txt",
        format!("{}\n?{absent}\n? {}\n", a.reference, b.reference),
    );
    let o = env.run(&["verify", s(&f), "--images", &optional]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "a missing optional image is not an error:\n{}",
        text(&o)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    let warn: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(
        warn.len(),
        1,
        "one warning for the missing optional image:\n{stderr}"
    );
    assert!(warn[0].contains(&absent), "warning names it: {}", warn[0]);
    assert!(
        !stderr.contains("error"),
        "no error for an optional image:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. missing refs, --fetch, --force

#[test]
fn bundle_missing_ref_fetch_and_force() {
    let reg = Registry::start(Variant::Plain);
    let simple = push_one(&reg, "simple");
    let zstd = push_one(&reg, "zstd");
    let env = Env::new();
    env.ok(&["fetch", &simple.reference]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.obun");

    let e = fails(
        &env,
        &["bundle", "-o", s(&out), &simple.reference, &zstd.reference],
    );
    assert!(
        e.contains(&zstd.reference),
        "error does not list the missing reference: {e}"
    );
    assert!(
        !e.contains(&simple.reference),
        "error lists a reference that is in the store: {e}"
    );
    assert!(
        fs::read_dir(dir.path()).unwrap().next().is_none(),
        "a failed bundle left files: {:?}",
        fs::read_dir(dir.path()).unwrap().collect::<Vec<_>>()
    );

    env.ok(&[
        "bundle",
        "--fetch",
        "-o",
        s(&out),
        &simple.reference,
        &zstd.reference,
    ]);
    assert!(
        store_refs(&env.store()).contains(&zstd.reference),
        "--fetch stored the image"
    );
    let i = env.json(&["inspect", s(&out)]);
    let imgs: Vec<&str> = i["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        imgs,
        vec![simple.reference.as_str(), zstd.reference.as_str()],
        "{i}"
    );
    let zi = i["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["reference"] == zstd.reference.as_str())
        .unwrap();
    assert_eq!(
        zi["digest"],
        zstd.digest.as_str(),
        "the registry's digest: {i}"
    );
    env.ok(&["verify", s(&out)]);

    let before = fs::read(&out).unwrap();
    let e = fails(&env, &["bundle", "-o", s(&out), &simple.reference]);
    assert!(
        e.contains(s(&out)),
        "error does not name the existing output: {e}"
    );
    assert_eq!(
        fs::read(&out).unwrap(),
        before,
        "a refused bundle changed the file"
    );
    env.ok(&["bundle", "--force", "-o", s(&out), &simple.reference]);
    let i = env.json(&["inspect", s(&out)]);
    assert_eq!(
        i["images"].as_array().unwrap().len(),
        1,
        "--force replaced the bundle: {i}"
    );
    sha256sum_check(dir.path(), "out.obun.sha256");
}

/// A store blob that no longer matches its digest never reaches a bundle, and the failed
/// bundle leaves no file behind.
#[test]
fn bundle_refuses_corrupt_store_blob() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("rot/img", "v1", &[4000]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let p = env.store().join("blobs/sha256").join(img.layers[0].hex());
    let mut perm = fs::metadata(&p).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    fs::set_permissions(&p, perm).unwrap();
    let mut data = fs::read(&p).unwrap();
    data[2000] ^= 0x40;
    fs::write(&p, &data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rot.obun");
    let e = fails(&env, &["bundle", "-o", s(&out), &img.reference]);
    assert!(
        e.contains(&img.layers[0].digest),
        "error does not name the bad blob: {e}"
    );
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "a failed bundle left {left:?}");
    // A store blob cut short is named too (the plan checks sizes before writing starts).
    fs::write(&p, &data[..3000]).unwrap();
    let e = fails(&env, &["bundle", "-o", s(&out), &img.reference]);
    assert!(
        e.contains(&img.layers[0].digest) && e.contains("fsck"),
        "error does not name the short blob: {e}"
    );
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "a failed bundle left {left:?}");
}

// ---------------------------------------------------------------------------------------------
// names and pipes

/// A one-file bundle whose name happens to end in `.NNN` (a date, a build number) is still one
/// file: docs/design.md says a bundle without --split-size has no volume header.
#[test]
fn single_file_bundle_named_like_a_volume() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("name/img", "v1", &[800]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("images.20240101");
    env.ok(&["bundle", "-o", s(&f), &img.reference]);
    env.ok(&["verify", s(&f)]);
    env.ok(&["inspect", s(&f)]);
    let dst = Env::new();
    dst.ok(&["import", s(&f)]);
    assert_store_clean(&dst, &[&img.reference]);
}

/// docs/design.md ("Why entries also have inline headers"): `import -` reads a bundle from a
/// pipe, verifying each blob as it passes.
#[test]
fn import_from_stdin_pipe() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("pipe/img", "v1", &[900, 300]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.obun");
    env.ok(&["bundle", "-o", s(&f), &img.reference]);
    let dst = Env::new();
    let o = dst
        .cmd()
        .args(["import", "-"])
        .stdin(fs::File::open(&f).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "import - < bundle:\n{}", text(&o));
    assert_store_clean(&dst, &[&img.reference]);
}

/// The `error: ` line names a missing bundle file once (regression: the io error was printed twice).
#[test]
fn missing_bundle_file_error_names_it_once() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("nope.obun");
    for cmd in ["verify", "inspect", "import"] {
        let e = fails(&env, &[cmd, s(&f)]);
        assert_eq!(
            e,
            format!(
                "error: {}: no such bundle file (nor {}.001)",
                f.display(),
                f.display()
            ),
            "{cmd}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 10. broken fixtures (fixtures/bundles/, made by make.sh; see its README.md)

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles")
}

const FIXTURE_A: &str = "fixtures.example/ocibundle/tiny-a:v1";
const FIXTURE_B: &str = "fixtures.example/ocibundle/tiny-b:v1";
/// The layer both fixture images share (and that flipped-blob.obun damages).
const FIXTURE_SHARED: &str =
    "sha256:6c560b6012677f22e3d3762bfa41ea5a6b1ace3f990f71e3b6bcde0c7cd9113d";

/// (fixture, verify's error line, import's error line), run in the fixture's folder with
/// the bare file name.
const BROKEN: &[(&str, &str, &str)] = &[
    (
        "truncated.obun",
        "error: truncated.obun: no bundle trailer at the end (truncated file, or a volume missing?)",
        "error: truncated.obun: no bundle trailer at the end (truncated file, or a volume missing?)",
    ),
    (
        "bad-magic.obun",
        "error: bad-magic.obun: not an ocibundle bundle (wrong magic)",
        "error: bad-magic.obun: not an ocibundle bundle (wrong magic)",
    ),
    (
        "version2.obun",
        "error: version2.obun: bundle format version 2 is not supported (this ocibundle reads version 1)",
        "error: version2.obun: bundle format version 2 is not supported (this ocibundle reads version 1)",
    ),
    (
        "unknown-kind.obun",
        "error: unknown-kind.obun: unknown entry kind 2 for sha256:215bd000cd84c3bbb6ce2f53c20f06f5f6b6da6bc4aa9ff145edb286d2fba9bf (written by a newer ocibundle?)",
        "error: unknown-kind.obun: unknown entry kind 2 for sha256:215bd000cd84c3bbb6ce2f53c20f06f5f6b6da6bc4aa9ff145edb286d2fba9bf (written by a newer ocibundle?)",
    ),
    (
        "corrupt-index.obun",
        "error: corrupt-index.obun: the bundle index is corrupt (checksum mismatch)",
        "error: corrupt-index.obun: the bundle index is corrupt (checksum mismatch)",
    ),
    (
        "flipped-blob.obun",
        "error: flipped-blob.obun: 1 problem(s); first: blob sha256:6c560b6012677f22e3d3762bfa41ea5a6b1ace3f990f71e3b6bcde0c7cd9113d: content hashes to sha256:2d0dfb2fb1bc82a8d8ddbba16c8fa4edf8e4048eeb582917aadc79e67f139a18 (used by fixtures.example/ocibundle/tiny-a:v1)",
        "error: flipped-blob.obun: blob sha256:6c560b6012677f22e3d3762bfa41ea5a6b1ace3f990f71e3b6bcde0c7cd9113d: digest mismatch: expected sha256:6c560b6012677f22e3d3762bfa41ea5a6b1ace3f990f71e3b6bcde0c7cd9113d, got sha256:2d0dfb2fb1bc82a8d8ddbba16c8fa4edf8e4048eeb582917aadc79e67f139a18",
    ),
    (
        "delta-no-base.obun",
        "error: delta-no-base.obun: 1 problem(s); first: blob sha256:6c560b6012677f22e3d3762bfa41ea5a6b1ace3f990f71e3b6bcde0c7cd9113d: left to the delta's base (bundle 0d6262fd4735d65b); no store to find it in: import the base first (used by fixtures.example/ocibundle/tiny-b:v1)",
        "error: delta-no-base.obun: delta bundle needs blob sha256:6c560b6012677f22e3d3762bfa41ea5a6b1ace3f990f71e3b6bcde0c7cd9113d (for fixtures.example/ocibundle/tiny-b:v1) which the store lacks; 1 of 1 base blobs missing: import its base (bundle 0d6262fd4735d65b) first",
    ),
];

/// Copies the fixtures into a temp folder (readers must not need to write beside them).
fn fixture_copy() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for e in fs::read_dir(fixtures_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "obun") {
            fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    d
}

#[test]
fn fixtures_broken_bundles_exact_errors() {
    let d = fixture_copy();
    let env = Env::new();
    let mut mismatches = Vec::new();
    for (name, want_verify, want_import) in BROKEN {
        let len = fs::metadata(d.path().join(name))
            .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
            .len();
        assert!(len < 50_000, "fixture {name} is {len} bytes");
        let args = ["verify", name];
        let got = error_line(&args, &run_in(&env, d.path(), &args));
        if got != *want_verify {
            mismatches.push(format!(
                "verify {name}:\n  want {want_verify}\n  got  {got}"
            ));
        }
        let store = d.path().join(format!("store-{name}"));
        let args = ["--store", s(&store), "import", name];
        let got = error_line(&args, &run_in(&env, d.path(), &args));
        if got != *want_import {
            mismatches.push(format!(
                "import {name}:\n  want {want_import}\n  got  {got}"
            ));
        }
        if let Err(e) = assert_import_left_nothing_bad(&store, name) {
            mismatches.push(e);
        }
    }
    assert!(
        mismatches.is_empty(),
        "error lines differ from the snapshots:\n{}",
        mismatches.join("\n")
    );
}

/// The fixtures are self-contained: good.obun imports with no registry, and the delta imports
/// once its base (good.obun) is in the store.
#[test]
fn fixtures_good_and_delta_import_without_registry() {
    let d = fixture_copy();
    let env = Env::new();
    let good = d.path().join("good.obun");
    let v = env.json(&["verify", s(&good)]);
    assert_eq!(v["images"], serde_json::json!([FIXTURE_A]), "{v}");
    env.ok(&["import", s(&good)]);
    assert_store_clean(&env, &[FIXTURE_A]);
    let delta = d.path().join("delta-no-base.obun");
    let i = env.json(&["inspect", s(&delta)]);
    assert_eq!(i["requires"][0]["digest"], FIXTURE_SHARED, "{i}");
    env.ok(&["verify", s(&delta)]);
    env.ok(&["import", s(&delta)]);
    assert_store_clean(&env, &[FIXTURE_A, FIXTURE_B]);
}

/// fixtures/bundles/make.sh regenerates the committed fixtures byte for byte with this build
/// (so they stay reproducible; if the format changes on purpose, rerun make.sh and update the
/// snapshots above).
#[test]
fn fixture_make_sh_regenerates_committed_files() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new("sh")
        .arg(fixtures_dir().join("make.sh"))
        .arg(out.path())
        .env("OCIBUNDLE", env!("CARGO_BIN_EXE_ocibundle"))
        .output()
        .expect("spawn sh make.sh");
    assert!(o.status.success(), "make.sh failed:\n{}", text(&o));
    let mut n = 0;
    for e in fs::read_dir(out.path()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let committed = fs::read(fixtures_dir().join(&name))
            .unwrap_or_else(|e| panic!("make.sh wrote {name}, not committed: {e}"));
        assert!(
            fs::read(&p).unwrap() == committed,
            "regenerated {name} differs from the committed file"
        );
        n += 1;
    }
    assert_eq!(
        n,
        BROKEN.len() + 1,
        "make.sh writes good.obun and one file per broken case"
    );
}

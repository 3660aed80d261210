//! Owns the bundle integrity tests: every bit flip and truncation caught, verify --images, and the broken fixtures in fixtures/bundles/.
use super::*;

/// verify and import of `bad` both fail by the error contract, and import leaves the fresh
/// store without bad blobs or references. Returns a description of what went wrong, if anything.
pub(super) fn check_rejected(env: &Env, bad: &Path, store: &Path, what: &str) -> Result<(), String> {
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
pub(super) fn rng_bit(i: u64) -> u64 {
    Rng::new(0xb175 ^ i.wrapping_mul(0x1000_0001)).range(0, 8)
}

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

pub(super) fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles")
}

pub(super) const FIXTURE_A: &str = "fixtures.example/ocibundle/tiny-a:v1";

pub(super) const FIXTURE_B: &str = "fixtures.example/ocibundle/tiny-b:v1";

/// The layer both fixture images share (and that flipped-blob.obun damages).
pub(super) const FIXTURE_SHARED: &str =
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
        "version9.obun",
        "error: version9.obun: bundle format version 9 is not supported (this ocibundle reads versions 1 and 2)",
        "error: version9.obun: bundle format version 9 is not supported (this ocibundle reads versions 1 and 2)",
    ),
    (
        "v2-unknown-chunk.obun",
        "error: v2-unknown-chunk.obun: 2 problem(s); first: blob sha256:39dab641148f6b4cf14f73a3284404f197e0fc5cfdb049fe2d0ea766ac558b1b: 2 chunk(s) of its recipe are not in the bundle (corrupt bundle) (used by fixtures.example/ocibundle/chunky:v1)",
        "error: v2-unknown-chunk.obun: 1 chunk(s) its recipes name are not in the bundle, and it is not a delta (corrupt bundle)",
    ),
    (
        "v2-inflates.obun",
        "error: v2-inflates.obun: 1 problem(s); first: blob sha256:c45658780aa7ea795f0b74210cd8fdef3967a86950dd9f37cd44731808301158: chunk pack sha256:c45658780aa7ea795f0b74210cd8fdef3967a86950dd9f37cd44731808301158: decodes to 80901+ bytes, the index says 80900 (corrupt bundle)",
        "error: v2-inflates.obun: blob sha256:39dab641148f6b4cf14f73a3284404f197e0fc5cfdb049fe2d0ea766ac558b1b: v2-inflates.obun: layer sha256:39dab641148f6b4cf14f73a3284404f197e0fc5cfdb049fe2d0ea766ac558b1b: v2-inflates.obun: chunk pack sha256:c45658780aa7ea795f0b74210cd8fdef3967a86950dd9f37cd44731808301158: decodes to 80901+ bytes, the index says 80900",
    ),
    (
        "v2-absurd.obun",
        "error: v2-absurd.obun: chunk pack sha256:c45658780aa7ea795f0b74210cd8fdef3967a86950dd9f37cd44731808301158 claims 1099511627776 bytes decoded, over the 256 MiB cap (corrupt index)",
        "error: v2-absurd.obun: chunk pack sha256:c45658780aa7ea795f0b74210cd8fdef3967a86950dd9f37cd44731808301158 claims 1099511627776 bytes decoded, over the 256 MiB cap (corrupt index)",
    ),
    (
        "v2-recipe-short.obun",
        "error: v2-recipe-short.obun: 1 problem(s); first: blob sha256:39dab641148f6b4cf14f73a3284404f197e0fc5cfdb049fe2d0ea766ac558b1b: v2-recipe-short.obun: recipe of layer sha256:39dab641148f6b4cf14f73a3284404f197e0fc5cfdb049fe2d0ea766ac558b1b: decodes to 3565+ bytes, the index says 3564 (corrupt bundle) (used by fixtures.example/ocibundle/chunky:v1)",
        "error: v2-recipe-short.obun: recipe of layer sha256:39dab641148f6b4cf14f73a3284404f197e0fc5cfdb049fe2d0ea766ac558b1b: decodes to 3565+ bytes, the index says 3564 (corrupt bundle)",
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
        "error: delta-no-base.obun: 1 problem(s); first: blob sha256:6c560b6012677f22e3d3762bfa41ea5a6b1ace3f990f71e3b6bcde0c7cd9113d: left to the delta's base (bundle 19b80c0704e75fb2); no store to find it in: import the base first (used by fixtures.example/ocibundle/tiny-b:v1)",
        "error: delta-no-base.obun: delta bundle needs blob sha256:6c560b6012677f22e3d3762bfa41ea5a6b1ace3f990f71e3b6bcde0c7cd9113d (for fixtures.example/ocibundle/tiny-b:v1) which the store lacks; 1 of 1 base blobs missing: import its base (bundle 19b80c0704e75fb2) first",
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
        BROKEN.len() + 2,
        "make.sh writes good.obun, good-v2.obun and one file per broken case"
    );
}

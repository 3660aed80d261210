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

mod round_trip;
mod dedup;
mod size;
mod integrity;
mod volumes;
mod inputs;

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

//! Owns the `store ls|fsck|gc` tests, on stores filled by fetching from the fake registry.
use std::process::Output;
use std::time::{Duration, SystemTime};

use crate::harness::cmd::{Env, hex_of, sha256};
use crate::harness::fakereg::{FakeRegistry, OCI_MANIFEST, TestImage};

fn store_str(env: &Env) -> String {
    env.store().to_str().unwrap().to_string()
}

/// `ocibundle --store STORE ARGS...`
fn args<'a>(store: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--store", store];
    a.extend_from_slice(rest);
    a
}



fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A registry with two images fetched into a fresh store.
fn fetched_store() -> (FakeRegistry, Env, Vec<TestImage>) {
    let reg = FakeRegistry::start();
    let a = reg.add_image("test/alpha", "v1", &[30_000, 2_000]);
    let b = reg.add_image("team/beta", "2.0", &[10_000]);
    let env = Env::new();
    let s = store_str(&env);
    env.ok(&args(&s, &["fetch", &a.reference, &b.reference]));
    (reg, env, vec![a, b])
}

/// Every blob file in the store, as digests.
fn stored_blobs(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.store().join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    v.sort();
    v
}

fn make_writable(p: &std::path::Path) {
    let mut perm = std::fs::metadata(p).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(p, perm).unwrap();
}

#[test]
fn store_ls_json_lists_fetched_references() {
    let (_reg, env, imgs) = fetched_store();
    let s = store_str(&env);
    let v = env.json(&args(&s, &["store", "ls"]));
    let list = v["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images array: {v}"));
    assert_eq!(list.len(), 2, "{v}");
    for img in &imgs {
        let e = list
            .iter()
            .find(|e| e["reference"] == img.reference.as_str())
            .unwrap_or_else(|| panic!("{} missing from {v}", img.reference));
        assert_eq!(e["digest"], img.manifest_digest.as_str(), "{v}");
        assert_eq!(e["media_type"], OCI_MANIFEST, "{v}");
        assert_eq!(
            e["size"],
            img.total_size(),
            "size = manifest + config + layers: {v}"
        );
    }
}

/// docs/cli.md: `REFERENCE DIGEST SIZE` per stored reference, SIZE in bytes as in `--json`.
#[test]
fn store_ls_text_lists_fetched_references() {
    let (_reg, env, imgs) = fetched_store();
    let s = store_str(&env);
    let out = env.ok(&args(&s, &["store", "ls"]));
    assert_eq!(
        out.lines().filter(|l| !l.trim().is_empty()).count(),
        2,
        "{out}"
    );
    for img in &imgs {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(img.reference.as_str()))
            .unwrap_or_else(|| panic!("`store ls` does not list {}:\n{out}", img.reference));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols.get(1).copied(),
            Some(img.manifest_digest.as_str()),
            "{line}"
        );
        assert_eq!(
            cols[2..].join(" "),
            img.total_size().to_string(),
            "want `REFERENCE DIGEST SIZE` with SIZE in bytes (manifest + config + layers): {line}"
        );
    }
}

#[test]
fn fsck_clean_store_then_flipped_byte() {
    let (_reg, env, imgs) = fetched_store();
    let s = store_str(&env);
    env.ok(&args(&s, &["store", "fsck"]));
    let v = env.json(&args(&s, &["store", "fsck"]));
    assert_eq!(v["refs_checked"], 2, "{v}");
    assert_eq!(v["blobs_checked"], stored_blobs(&env).len(), "{v}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");

    let layer = imgs[0].layers[0].clone();
    let p = env.blob_path(&layer.digest);
    make_writable(&p);
    let mut data = std::fs::read(&p).unwrap();
    data[100] ^= 0x01;
    std::fs::write(&p, &data).unwrap();

    let out = env.run(&args(&s, &["store", "fsck"]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "fsck of a corrupt store:\n{}",
        text(&out)
    );
    let want = format!("bad blob {}", layer.digest);
    assert!(
        text(&out).lines().any(|l| l.starts_with(&want)),
        "no `{want}: …` line:\n{}",
        text(&out)
    );
    let others: Vec<_> = text(&out)
        .lines()
        .filter(|l| l.starts_with("bad blob") || l.starts_with("missing blob"))
        .map(str::to_string)
        .collect();
    assert_eq!(others.len(), 1, "only one blob is bad: {others:?}");

    let out = env.run(&args(&s, &["store", "fsck", "--json"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", text(&out)));
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["digest"], layer.digest.as_str(), "{v}");
}

#[test]
fn fsck_reports_missing_blob() {
    let (_reg, env, imgs) = fetched_store();
    let s = store_str(&env);
    let layer = imgs[1].layers[0].clone();
    std::fs::remove_file(env.blob_path(&layer.digest)).unwrap();
    let out = env.run(&args(&s, &["store", "fsck"]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "fsck with a missing blob:\n{}",
        text(&out)
    );
    let want = format!("missing blob {}", layer.digest);
    let line = text(&out)
        .lines()
        .find(|l| l.starts_with(&want))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no `{want} (needed by …)` line:\n{}", text(&out)));
    assert!(
        line.contains(&imgs[1].reference),
        "does not say who needs it: {line}"
    );

    let out = env.run(&args(&s, &["store", "fsck", "--json"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", text(&out)));
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["digest"] == layer.digest.as_str()),
        "{v}"
    );
}

#[test]
fn gc_removes_unreachable_blobs_and_keeps_reachable() {
    let (_reg, env, imgs) = fetched_store();
    let s = store_str(&env);
    let before = stored_blobs(&env);
    let junk = b"not referenced by anything\n".repeat(100);
    let junk_digest = sha256(&junk);
    std::fs::write(env.blob_path(&junk_digest), &junk).unwrap();

    let v = env.json(&args(&s, &["store", "gc"]));
    assert_eq!(v["removed_blobs"], 1, "{v}");
    assert_eq!(v["removed_bytes"], junk.len(), "{v}");
    assert!(
        !env.blob_path(&junk_digest).exists(),
        "unreachable blob survived gc"
    );
    assert_eq!(stored_blobs(&env), before, "gc changed the reachable blobs");
    for img in &imgs {
        assert!(env.blob_path(&img.manifest_digest).exists());
        for b in img.blobs() {
            assert!(
                env.blob_path(&b.digest).exists(),
                "gc removed reachable {}",
                b.digest
            );
        }
    }
    env.ok(&args(&s, &["store", "fsck"]));

    let v = env.json(&args(&s, &["store", "gc"]));
    assert_eq!(v["removed_blobs"], 0, "{v}");
    assert_eq!(v["removed_bytes"], 0, "{v}");
    assert_eq!(stored_blobs(&env), before);
}

/// An OCI 1.1 referrer: an artifact manifest (empty config, one layer) whose `subject` is
/// `subject`; returns (its bytes, its layer's bytes).
fn referrer(subject_digest: &str, subject_size: usize, what: &str) -> (Vec<u8>, Vec<u8>) {
    let layer = format!("signature of {subject_digest} ({what})\n").into_bytes();
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/vnd.example.signature.v1", "digest": sha256(&layer), "size": layer.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
    });
    (serde_json::to_vec(&m).unwrap(), layer)
}

/// Regression (issue 9: gc only followed edges downwards): a referrer whose subject is kept
/// is kept with what it reaches, and so is a referrer of that referrer; one whose subject is
/// gone is removed.
#[test]
fn gc_keeps_the_referrers_of_kept_images() {
    let (_reg, env, imgs) = fetched_store();
    let s = store_str(&env);
    let put = |bytes: &[u8]| -> String {
        let d = sha256(bytes);
        std::fs::write(env.blob_path(&d), bytes).unwrap();
        d
    };
    put(b"{}");
    let (sig, sig_layer) = referrer(&imgs[0].manifest_digest, imgs[0].manifest.len(), "kept");
    let sig_d = put(&sig);
    let sig_layer_d = put(&sig_layer);
    let (sig2, sig2_layer) = referrer(&sig_d, sig.len(), "a signature of the signature");
    let sig2_d = put(&sig2);
    put(&sig2_layer);
    let gone = format!("sha256:{}", "7".repeat(64));
    let (stray, stray_layer) = referrer(&gone, 100, "stray");
    let stray_d = put(&stray);
    let stray_layer_d = put(&stray_layer);

    let v = env.json(&args(&s, &["store", "gc"]));
    assert_eq!(v["removed_blobs"], 2, "only the stray referrer and its layer go: {v}");
    for d in [&sig_d, &sig_layer_d, &sig2_d, &sha256(b"{}")] {
        assert!(env.blob_path(d).exists(), "gc removed {d}, a referrer of a kept image (or what it reaches)");
    }
    for d in [&stray_d, &stray_layer_d] {
        assert!(!env.blob_path(d).exists(), "gc kept {d}, whose subject is not in the store");
    }
}

/// docs/cli.md: gc text output is `removed N blobs (B bytes)`.
#[test]
fn gc_text_reports_removed_blobs_and_bytes() {
    let (_reg, env, _imgs) = fetched_store();
    let s = store_str(&env);
    let junk = b"more junk".to_vec();
    let junk_digest = sha256(&junk);
    std::fs::write(env.blob_path(&junk_digest), &junk).unwrap();
    let out = env.ok(&args(&s, &["store", "gc"]));
    assert!(
        !env.blob_path(&junk_digest).exists(),
        "unreachable blob survived gc"
    );
    assert_eq!(
        out.trim(),
        format!("removed 1 blobs ({} bytes)", junk.len()),
        "{out}"
    );
}

#[test]
fn gc_removes_stale_partials() {
    let (_reg, env, _imgs) = fetched_store();
    let s = store_str(&env);
    let before = stored_blobs(&env);
    let tmp = env.store().join(".ocibundle/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let half = b"half a download".to_vec();
    let partial = tmp.join(format!("{}.partial", hex_of(&sha256(b"the whole blob"))));
    std::fs::write(&partial, &half).unwrap();
    // Two days old: stale by any definition.
    let old = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&partial)
        .unwrap()
        .set_modified(old)
        .unwrap();

    env.ok(&args(&s, &["store", "gc"]));
    assert!(!partial.exists(), "stale partial survived gc");
    assert_eq!(stored_blobs(&env), before);
    env.ok(&args(&s, &["store", "fsck"]));
}

//! Owns the tests of referrers held to a lock (issue 12, "Lock file": a version 2 lock pins the
//! referrers found), of `store gc` with referrers (kept while their subject is, dropped with
//! their blobs once it is gone), and of referrers that are indexes (an attestation index and
//! its manifests carried by fetch, bundle, import, export --oci-layout and push). Real
//! distribution 2.8 registries, signatures by the test signer; expected digests come from the
//! registry and the pushed bytes.
use std::fs;

use serde_json::Value;

use super::{OCI_MANIFEST, refs, signed_simple};
use crate::harness::cmd::{Env, hex_of, s, sha256};
use crate::harness::fixtures::{PushMode, layout, push, push_one};
use crate::harness::registry::{Registry, Variant};
use crate::harness::signer::{self, Key};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A referrer manifest of `subject` (or none) with one layer of `body`, pushed by digest; returns
/// (digest, size).
fn put_artifact(
    reg: &Registry,
    repo: &str,
    at: &str,
    body: &[u8],
    subject: Option<(&str, usize, &str)>,
) -> (String, usize) {
    let empty = signer::push_blob(reg, repo, b"{}");
    let layer = signer::push_blob(reg, repo, body);
    let subject = subject.map_or(String::new(), |(d, n, mt)| {
        format!(r#","subject":{{"mediaType":"{mt}","digest":"{d}","size":{n}}}"#)
    });
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{at}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"{at}","digest":"{layer}","size":{}}}]{subject}}}"#,
        body.len()
    );
    (
        signer::put_manifest(reg, repo, &sha256(m.as_bytes()), OCI_MANIFEST, m.as_bytes()),
        m.len(),
    )
}

/// An index (`json`) pushed by digest to test/simple; returns its digest.
fn put_index(reg: &Registry, json: &str) -> String {
    signer::put_manifest(reg, "test/simple", &sha256(json.as_bytes()), OCI_INDEX, json.as_bytes())
}

/// The fallback tag index of `subject` listing `members` (media type, digest, size, artifactType).
fn put_fallback(reg: &Registry, repo: &str, subject: &str, members: &[(&str, &str, usize, &str)]) {
    let list: Vec<String> = members
        .iter()
        .map(|(mt, d, n, at)| {
            format!(r#"{{"mediaType":"{mt}","digest":"{d}","size":{n},"artifactType":"{at}"}}"#)
        })
        .collect();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        list.join(",")
    );
    signer::put_manifest(
        reg,
        repo,
        &format!("sha256-{}", hex_of(subject)),
        OCI_INDEX,
        index.as_bytes(),
    );
}

/// The referrer digests a `fetch --json` document lists for its first image, sorted.
fn fetched(doc: &Value) -> Vec<String> {
    let mut v: Vec<String> = doc["images"][0]["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn lock_pins_referrers_and_fetch_bundle_verify_hold_to_them() {
    let env = Env::new();
    let key = Key::new(env.path(), "cosign", false);
    let (reg, digest, sig, sbom) = signed_simple(&key);
    let name = format!("{}/test/simple:v1", reg.host());
    let lock = env.path().join("images.lock");
    env.ok(&["lock", &name, "-o", s(&lock)]);
    let text = fs::read_to_string(&lock).unwrap();
    let mut want = [
        format!("  referrer {sbom} application/spdx+json {digest}"),
        format!("  referrer {} cosign:sig {digest}", sig.manifest_digest),
    ];
    want.sort_by(|a, b| a.split(' ').nth(3).cmp(&b.split(' ').nth(3)));
    let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(text.lines().next(), Some("# ocibundle lock v2"), "{text}");
    assert_eq!(
        body,
        [format!("{name} {digest}"), want[0].clone(), want[1].clone()],
        "{text}"
    );
    assert_eq!(
        env.ok(&["lock", &name]),
        text,
        "stable: the same tags and referrers give the same bytes"
    );

    // Upstream adds an SBOM after the lock: fetch with the lock leaves it behind and says so.
    let simple_size = reg.raw_manifest(&name).len();
    let (sbom2, n2) = put_artifact(
        &reg,
        "test/simple",
        "application/spdx+json",
        br#"{"spdxVersion":"SPDX-2.3","name":"later"}"#,
        Some((&digest, simple_size, OCI_MANIFEST)),
    );
    let sbom_len = reg
        .raw_manifest(&format!("{}/test/simple@{sbom}", reg.host()))
        .len();
    put_fallback(
        &reg,
        "test/simple",
        &digest,
        &[
            (OCI_MANIFEST, &sbom, sbom_len, "application/spdx+json"),
            (OCI_MANIFEST, &sbom2, n2, "application/spdx+json"),
        ],
    );
    let out = env.run(&["fetch", "--images", s(&lock), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{name}: 1 referrer found upstream that the lock does not pin, left behind"
        )) && err.contains(&sbom2),
        "{err}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut pinned = vec![sbom.clone(), sig.manifest_digest.clone()];
    pinned.sort();
    assert_eq!(fetched(&doc), pinned, "{doc}");
    assert!(
        !env.blob_path(&sbom2).exists(),
        "the new SBOM is not stored"
    );
    let b = env.path().join("site.bundle");
    env.ok(&["bundle", "-o", s(&b), "--images", s(&lock)]);
    let ok = env.run(&["verify", s(&b), "--images", s(&lock)]);
    assert!(
        ok.status.success() && !String::from_utf8_lossy(&ok.stderr).contains("does not pin"),
        "{ok:?}"
    );

    // A plain fetch takes the new SBOM: bundle with the lock refuses the mixed referrers index,
    // verify of a bundle carrying it warns.
    let follower = Env::new();
    let all = follower.json(&["fetch", &name]);
    assert_eq!(fetched(&all).len(), 3, "{all}");
    let e = follower.fails(&[
        "bundle",
        "-o",
        s(&follower.path().join("x")),
        "--images",
        s(&lock),
    ]);
    assert!(
        e.contains(&format!("sha256-{}", hex_of(&digest)))
            && e.contains(&sbom2)
            && e.contains("does not pin"),
        "{e}"
    );
    let b2 = follower.path().join("all.bundle");
    follower.ok(&["bundle", "-o", s(&b2), "--all"]);
    let out = follower.run(&["verify", s(&b2), "--images", s(&lock)]);
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("1 referrer(s) the lock does not pin"),
        "{out:?}"
    );

    // A bundle without the referrers fails verify with the lock, naming each missing one.
    let bare = Env::new();
    bare.ok(&["fetch", "--referrers", "none", &name]);
    let e = bare.fails(&[
        "bundle",
        "-o",
        s(&bare.path().join("x")),
        "--images",
        s(&lock),
    ]);
    assert!(
        e.contains(&name)
            && e.contains("is pinned by the lock but the store")
            && e.contains("does not hold it"),
        "{e}"
    );
    let b3 = bare.path().join("bare.bundle");
    bare.ok(&["bundle", "-o", s(&b3), "--all"]);
    let e = bare.fails(&["verify", s(&b3), "--images", s(&lock)]);
    assert!(
        e.contains("2 pinned referrer(s) missing")
            && e.contains(&name)
            && (e.contains(&sbom) || e.contains(&sig.manifest_digest)),
        "{e}"
    );
    let out = bare.run(&["verify", s(&b3), "--images", s(&lock)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "missing: {name}: referrer {sbom} (application/spdx+json of {digest})"
        )) && stdout.contains(&sig.manifest_digest),
        "{stdout}"
    );

    // Upstream signs again (a new .sig manifest): the pinned signature is gone. Fetch with the
    // lock fails naming image and signature, before anything is stored.
    let other = Key::new(env.path(), "other", false);
    let resigned = signer::sign(&reg, "test/simple", &digest, &other);
    assert_ne!(resigned.manifest_digest, sig.manifest_digest);
    let fresh = Env::new();
    let e = fresh.fails(&["fetch", "--images", s(&lock)]);
    assert!(e.contains(&format!("{name}: referrer {} (cosign:sig of {digest}) is pinned by the lock but the registry no longer has it", sig.manifest_digest)), "{e}");
    assert!(
        !fresh.store().join("index.json").exists() || refs(&fresh).is_empty(),
        "nothing stored"
    );
    // An optional image: a warning, and the image comes with the pinned referrers still there.
    let opt = env.path().join("optional.lock");
    fs::write(
        &opt,
        text.replace(&format!("\n{name} "), &format!("\n?{name} ")),
    )
    .unwrap();
    let out = fresh.run(&["fetch", "--images", s(&opt), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: optional image")
            && err.contains(&sig.manifest_digest)
            && err.contains(&resigned.manifest_digest),
        "{err}"
    );
    assert_eq!(
        fetched(&serde_json::from_slice(&out.stdout).unwrap()),
        vec![sbom.clone()]
    );
}

#[test]
fn a_version_1_lock_pins_no_referrers_and_fetch_takes_those_it_finds() {
    let env = Env::new();
    let key = Key::new(env.path(), "cosign", false);
    let (reg, digest, sig, sbom) = signed_simple(&key);
    let name = format!("{}/test/simple:v1", reg.host());
    let v1 = env.path().join("old.lock");
    fs::write(&v1, format!("# ocibundle lock v1\n{name} {digest}\n")).unwrap();
    let doc = env.json(&["fetch", "--images", s(&v1)]);
    let mut want = vec![sbom, sig.manifest_digest];
    want.sort();
    assert_eq!(fetched(&doc), want);
    let b = env.path().join("b.bundle");
    env.ok(&["bundle", "-o", s(&b), "--images", s(&v1)]);
    env.ok(&["verify", s(&b), "--images", s(&v1)]);
}

#[test]
fn gc_keeps_referrers_of_kept_images_and_drops_those_whose_image_is_gone() {
    let env = Env::new();
    let key = Key::new(env.path(), "cosign", false);
    let (reg, digest, sig, sbom) = signed_simple(&key);
    // A signature of the SBOM: a referrer of a referrer.
    let sbom_sig = signer::sign(&reg, "test/simple", &sbom, &key);
    let name = format!("{}/test/simple:v1", reg.host());
    env.ok(&["fetch", &name]);
    let hex = hex_of(&digest);
    let referrer_refs = vec![
        format!("{}/test/simple:sha256-{hex}", reg.host()),
        format!("{}/test/simple:sha256-{hex}.sig", reg.host()),
        format!("{}/test/simple:sha256-{}.sig", reg.host(), hex_of(&sbom)),
    ];
    let mut all = referrer_refs.clone();
    all.push(name.clone());
    all.sort();
    assert_eq!(refs(&env), all);
    // Blobs only the referrers hold: manifests, payloads, the SBOM's layer.
    let sbom_layer = sha256(br#"{"spdxVersion":"SPDX-2.3"}"#);
    let theirs = [
        sig.manifest_digest.clone(),
        sha256(&sig.payload),
        sbom_sig.manifest_digest.clone(),
        sha256(&sbom_sig.payload),
        sbom.clone(),
        sbom_layer,
    ];
    let v = env.json(&["store", "gc"]);
    assert_eq!(v["removed_referrers"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(refs(&env), all, "kept: their subject is kept");
    for d in &theirs {
        assert!(env.blob_path(d).exists(), "{d} kept");
    }
    let f = env.json(&["store", "fsck"]);
    assert_eq!(f["orphaned_referrers"].as_array().unwrap().len(), 0, "{f}");

    // The tag moves upstream and is fetched again: the old image is gone from the store, and
    // with it everything that referred to it.
    let moved = push(
        &reg,
        &layout().dir,
        "shared",
        "test/simple:v1",
        PushMode::Oci,
    );
    assert_ne!(moved, digest);
    env.ok(&["fetch", &name]);
    // fsck passes (nothing is damaged) and names what gc will drop.
    let f = env.json(&["store", "fsck"]);
    let mut orphaned: Vec<String> = f["orphaned_referrers"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    orphaned.sort();
    let mut want = referrer_refs.clone();
    want.sort();
    assert_eq!(orphaned, want, "{f}");
    assert_eq!(f["problems"].as_array().unwrap().len(), 0, "{f}");
    let out = env.ok(&["store", "gc"]);
    for r in &referrer_refs {
        assert!(
            out.contains(&format!("removed referrer {r} (its subject is gone)")),
            "{out}"
        );
    }
    assert_eq!(refs(&env), vec![name.clone()]);
    for d in theirs.iter().chain([&digest]) {
        assert!(!env.blob_path(d).exists(), "{d} dropped");
    }
    assert!(env.blob_path(&moved).exists());
    env.ok(&["store", "fsck"]);
    let again = env.json(&["store", "gc"]);
    assert_eq!(
        (
            again["removed_blobs"].as_u64(),
            again["removed_referrers"].as_array().unwrap().len()
        ),
        (Some(0), 0),
        "{again}"
    );
}

#[test]
fn a_referrer_that_is_an_index_travels_with_its_manifests() {
    let env = Env::new();
    let reg = Registry::start(Variant::Plain);
    let img = push_one(&reg, "simple");
    let size = reg.raw_manifest(&img.reference).len();
    // An attestation index: two in-toto manifests, the index naming the image as its subject.
    let (a1, n1) = put_artifact(
        &reg,
        "test/simple",
        "application/vnd.in-toto+json",
        br#"{"predicateType":"https://slsa.dev/provenance/v1"}"#,
        None,
    );
    let (a2, n2) = put_artifact(
        &reg,
        "test/simple",
        "application/vnd.in-toto+json",
        br#"{"predicateType":"https://spdx.dev/Document"}"#,
        None,
    );
    let at = "application/vnd.example.attestations.v1";
    let idx = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","artifactType":"{at}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{a1}","size":{n1}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{a2}","size":{n2}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{size}}}}}"#,
        img.digest
    );
    let idx_digest = put_index(&reg, &idx);
    put_fallback(
        &reg,
        "test/simple",
        &img.digest,
        &[(OCI_INDEX, &idx_digest, idx.len(), at)],
    );
    let children_blobs = [
        a1.clone(),
        a2.clone(),
        sha256(br#"{"predicateType":"https://slsa.dev/provenance/v1"}"#),
        sha256(br#"{"predicateType":"https://spdx.dev/Document"}"#),
    ];

    // lock pins it; fetch with the lock stores it and its manifests.
    let lock = env.path().join("images.lock");
    env.ok(&["lock", &img.reference, "-o", s(&lock)]);
    assert!(
        fs::read_to_string(&lock)
            .unwrap()
            .contains(&format!("  referrer {idx_digest} {at} {}\n", img.digest))
    );
    let doc = env.json(&["fetch", "--images", s(&lock)]);
    assert_eq!(fetched(&doc), vec![idx_digest.clone()], "{doc}");
    assert_eq!(doc["images"][0]["referrers"][0]["media_type"], OCI_INDEX);
    for d in children_blobs.iter().chain([&idx_digest]) {
        assert!(env.blob_path(d).exists(), "{d} stored");
    }
    env.ok(&["store", "fsck"]);
    env.ok(&["store", "gc"]);
    for d in &children_blobs {
        assert!(env.blob_path(d).exists(), "{d} kept by gc");
    }

    // bundle, verify, import elsewhere.
    let b = env.path().join("b.bundle");
    env.ok(&["bundle", "-o", s(&b), "--images", s(&lock)]);
    env.ok(&["verify", s(&b), "--images", s(&lock)]);
    let env2 = Env::new();
    env2.ok(&["import", s(&b)]);
    assert_eq!(refs(&env2), refs(&env));
    for d in children_blobs.iter().chain([&idx_digest]) {
        assert!(env2.blob_path(d).exists(), "{d} imported");
    }
    env2.ok(&["store", "fsck"]);

    // an OCI layout holds the index and its manifests; verify reads it back.
    let dir = env2.path().join("layout");
    env2.ok(&["export", "--oci-layout", s(&dir), &img.reference]);
    for d in children_blobs.iter().chain([&idx_digest]) {
        assert!(
            dir.join("blobs/sha256").join(hex_of(d)).exists(),
            "{d} in the layout"
        );
    }
    env2.ok(&[
        "verify",
        &format!("oci:{}", dir.display()),
        "--images",
        s(&lock),
    ]);

    // push: the index by digest with its manifests, and the fallback tag naming it.
    let target = Registry::start(Variant::Plain);
    env2.ok(&[
        "push",
        "--all",
        "--rewrite",
        &format!("{}/={}/", reg.host(), target.host()),
    ]);
    assert_eq!(
        target.raw_manifest(&format!("{}/test/simple@{idx_digest}", target.host())),
        idx.as_bytes()
    );
    for d in [&a1, &a2] {
        assert_eq!(target.content_digest("test/simple", d), *d);
    }
    let fallback: Value = serde_json::from_slice(&target.raw_manifest(&format!(
        "{}/test/simple:sha256-{}",
        target.host(),
        hex_of(&img.digest)
    )))
    .unwrap();
    assert_eq!(
        fallback["manifests"][0]["digest"],
        idx_digest.as_str(),
        "{fallback}"
    );
    // and fetched back from there, it comes along.
    let env3 = Env::new();
    let back = env3.json(&["fetch", &format!("{}/test/simple:v1", target.host())]);
    assert_eq!(fetched(&back), vec![idx_digest.clone()], "{back}");
}

#[test]
fn a_referrer_index_listing_an_index_is_refused_and_nothing_is_stored() {
    let env = Env::new();
    let reg = Registry::start(Variant::Plain);
    let img = push_one(&reg, "simple");
    let size = reg.raw_manifest(&img.reference).len();
    let (a1, n1) = put_artifact(
        &reg,
        "test/simple",
        "application/vnd.in-toto+json",
        b"{}",
        None,
    );
    let inner = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{a1}","size":{n1}}}]}}"#
    );
    let inner_digest = put_index(&reg, &inner);
    let outer = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","artifactType":"application/vnd.example.x","manifests":[{{"mediaType":"{OCI_INDEX}","digest":"{inner_digest}","size":{}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{size}}}}}"#,
        inner.len(),
        img.digest
    );
    let outer_digest = put_index(&reg, &outer);
    put_fallback(
        &reg,
        "test/simple",
        &img.digest,
        &[(
            OCI_INDEX,
            &outer_digest,
            outer.len(),
            "application/vnd.example.x",
        )],
    );
    let e = env.fails(&["fetch", &img.reference]);
    assert!(
        e.contains(&outer_digest) && e.contains(&inner_digest) && e.contains("another index"),
        "{e}"
    );
    assert!(
        !env.store().join("index.json").exists() || refs(&env).is_empty(),
        "nothing stored"
    );
    let e = env.fails(&["lock", &img.reference, "-o", s(&env.path().join("x.lock"))]);
    assert!(e.contains("another index"), "{e}");
    assert!(!env.path().join("x.lock").exists(), "no lock written");
}

#[test]
fn bundle_export_and_push_with_a_lock_leave_out_a_referrer_reference_the_lock_does_not_pin() {
    let env = Env::new();
    let key = Key::new(env.path(), "cosign", false);
    let (reg, _digest, sig, sbom) = signed_simple(&key);
    let name = format!("{}/test/simple:v1", reg.host());
    // A lock of the SBOMs only; the store holds the signature too (a plain fetch).
    let lock = env.path().join("sbom.lock");
    env.ok(&[
        "lock",
        &name,
        "--referrers",
        "application/spdx+json",
        "-o",
        s(&lock),
    ]);
    let text = fs::read_to_string(&lock).unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.contains("referrer") && l.contains("cosign:sig") && !l.starts_with('#')),
        "{text}"
    );
    env.ok(&["fetch", &name]);
    let b = env.path().join("b.bundle");
    let out = env.run(&["bundle", "-o", s(&b), "--images", s(&lock)]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{name}: 1 referrer(s) the lock does not pin left out"
        )) && err.contains(&sig.manifest_digest),
        "{err}"
    );
    let ins = env.json(&["inspect", s(&b)]);
    let carried: Vec<&str> = ins["images"][0]["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    assert_eq!(carried, vec![sbom.as_str()], "{ins}");
    let v = env.json(&["verify", s(&b), "--images", s(&lock)]);
    assert_eq!(
        (
            v["ok"].as_bool(),
            v["missing_referrers"].as_array().unwrap().len()
        ),
        (Some(true), 0),
        "{v}"
    );
    assert!(
        env.blob_path(&sig.manifest_digest).exists(),
        "the store keeps the signature, the bundle leaves it out"
    );

    // export and push with the lock leave it out the same way.
    let dir = env.path().join("layout");
    let out = env.run(&["export", "--oci-layout", s(&dir), "--images", s(&lock)]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 referrer(s) the lock does not pin left out"), "{out:?}");
    let blob = |d: &str| dir.join("blobs/sha256").join(hex_of(d));
    assert!(blob(&sbom).exists() && !blob(&sig.manifest_digest).exists(), "export --images LOCK carried what the lock does not pin");
    let out = env.run(&["push", "--dry-run", "--json", "--to", &format!("{}/mirror", reg.host()), "--images", s(&lock)]);
    assert!(out.status.success(), "{out:?}");
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("mirror/test/simple:sha256-") && !plan.contains(".sig\"") && !plan.contains(&sig.manifest_digest), "push --images LOCK plans what the lock does not pin: {plan}");
    // A lock pinning another digest than the store holds under the name: export refuses.
    let wrong = env.path().join("wrong.lock");
    let other = format!("sha256:{}", "0".repeat(64));
    fs::write(&wrong, format!("# ocibundle lock v2\n{name} {other}\n")).unwrap();
    let e = env.fails(&["export", "--oci-layout", s(&env.path().join("layout2")), "--images", s(&wrong)]);
    assert!(e.contains(&name) && e.contains(&other), "{e}");
}

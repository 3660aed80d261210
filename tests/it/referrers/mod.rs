//! Owns the referrer tests (issue 12): signatures, SBOMs and attestations found at fetch (the
//! fallback tag on a real distribution 2.8, cosign's `.sig` tags), carried by the store, a
//! bundle, import, an OCI layout and push (digests kept, also under `--rewrite`), and the bad
//! inputs (a referrer naming another subject, a loop) refused in one line with nothing stored.
//! Signatures are made by the test signer (`harness::signer`, openssl keys, cosign's format).
use serde_json::Value;

use crate::harness::cmd::{hex_of, s, Env};
use crate::harness::fixtures::push_one;
use crate::harness::registry::{Registry, Variant};
use crate::harness::signer::{self, Key};

mod verify;

/// The store's reference names.
fn refs(env: &Env) -> Vec<String> {
    crate::harness::bundles::store_refs(&env.store())
}

/// A registry holding `test/simple:v1`, signed by `key` and with an SBOM attached; returns
/// (registry, the image's digest, the signature, the SBOM's digest).
fn signed_simple(key: &Key) -> (Registry, String, signer::Signed, String) {
    let reg = Registry::start(Variant::Plain);
    let img = push_one(&reg, "simple");
    let sig = signer::sign(&reg, "test/simple", &img.digest, key);
    let size = reg.raw_manifest(&img.reference).len() as u64;
    let sbom = signer::push_sbom(&reg, "test/simple", &img.digest, size, "application/vnd.oci.image.manifest.v1+json", br#"{"spdxVersion":"SPDX-2.3"}"#);
    (reg, img.digest, sig, sbom)
}

#[test]
fn referrers_travel_from_fetch_through_bundle_and_import_to_push_with_digests_kept() {
    let env = Env::new();
    let key = Key::new(env.path(), "cosign", false);
    let (reg, digest, sig, sbom) = signed_simple(&key);
    let name = format!("{}/test/simple:v1", reg.host());
    let fetched = env.json(&["fetch", &name]);
    let listed = fetched["images"][0]["referrers"].as_array().unwrap();
    let digests: Vec<&str> = listed.iter().map(|r| r["digest"].as_str().unwrap()).collect();
    assert!(digests.contains(&sig.manifest_digest.as_str()) && digests.contains(&sbom.as_str()), "{fetched}");
    let hex = hex_of(&digest);
    let sig_ref = format!("{}/test/simple:sha256-{hex}.sig", reg.host());
    let idx_ref = format!("{}/test/simple:sha256-{hex}", reg.host());
    assert_eq!(refs(&env), vec![idx_ref.clone(), sig_ref.clone(), name.clone()]);
    env.ok(&["store", "fsck"]);
    env.ok(&["store", "gc"]);
    assert_eq!(refs(&env).len(), 3, "gc keeps the referrers of a kept image");
    env.ok(&["store", "fsck"]);

    // bundle the image by name: its referrers come along; inspect lists them under it.
    let b = env.path().join("b.obun");
    env.ok(&["bundle", "-o", s(&b), &name]);
    let ins = env.json(&["inspect", s(&b)]);
    let img = ins["images"].as_array().unwrap().iter().find(|i| i["reference"] == name.as_str()).unwrap().clone();
    let under: Vec<&str> = img["referrers"].as_array().unwrap().iter().map(|r| r["digest"].as_str().unwrap()).collect();
    assert!(under.contains(&sig.manifest_digest.as_str()) && under.contains(&sbom.as_str()), "{ins}");
    let sbom_entry = img["referrers"].as_array().unwrap().iter().find(|r| r["digest"] == sbom.as_str()).unwrap();
    assert_eq!(sbom_entry["artifact_type"], "application/spdx+json");
    env.ok(&["verify", s(&b)]);
    let size = env.json(&["size", &name]);
    let size_b = std::fs::metadata(&b).unwrap().len();
    assert_eq!(size["bytes"].as_u64().or(size["total_bytes"].as_u64()).unwrap_or(size_b), size_b, "size counts the referrers: {size}");

    // import elsewhere, then push with a rewrite: every digest kept.
    let env2 = Env::new();
    env2.ok(&["import", s(&b)]);
    assert_eq!(refs(&env2), refs(&env));
    let target = Registry::start(Variant::Plain);
    env2.ok(&["push", "--all", "--rewrite", &format!("{}/={}/", reg.host(), target.host())]);
    assert_eq!(target.content_digest("test/simple", &format!("sha256-{hex}.sig")), sig.manifest_digest);
    assert_eq!(target.content_digest("test/simple", "v1"), digest);
    let fallback: Value = serde_json::from_slice(&target.raw_manifest(&format!("{}/test/simple:sha256-{hex}", target.host()))).unwrap();
    assert_eq!(fallback["manifests"][0]["digest"], sbom.as_str(), "{fallback}");

    // and fetched back from there, they come along again.
    let env3 = Env::new();
    let again = env3.json(&["fetch", &format!("{}/test/simple:v1", target.host())]);
    assert_eq!(again["images"][0]["referrers"].as_array().unwrap().len(), 2, "{again}");
}

#[test]
fn referrers_none_and_type_filters_choose_what_fetch_keeps() {
    let env = Env::new();
    let key = Key::new(env.path(), "cosign", false);
    let (reg, _digest, sig, sbom) = signed_simple(&key);
    let name = format!("{}/test/simple:v1", reg.host());
    let none = env.json(&["fetch", "--referrers", "none", &name]);
    assert_eq!(none["images"][0]["referrers"].as_array().unwrap().len(), 0);
    assert_eq!(refs(&env), vec![name.clone()]);
    let env2 = Env::new();
    let only_sig = env2.json(&["fetch", "--referrers", "sig", &name]);
    let got: Vec<&str> = only_sig["images"][0]["referrers"].as_array().unwrap().iter().map(|r| r["digest"].as_str().unwrap()).collect();
    assert_eq!(got, vec![sig.manifest_digest.as_str()]);
    let env3 = Env::new();
    let only_sbom = env3.json(&["fetch", "--referrers", "application/spdx+json", &name]);
    let got: Vec<&str> = only_sbom["images"][0]["referrers"].as_array().unwrap().iter().map(|r| r["digest"].as_str().unwrap()).collect();
    assert_eq!(got, vec![sbom.as_str()]);
}

#[test]
fn referrers_naming_another_subject_are_refused_and_nothing_is_stored() {
    let env = Env::new();
    let reg = Registry::start(Variant::Plain);
    let img = push_one(&reg, "simple");
    let other = push_one(&reg, "zstd");
    // An SBOM of `other`, listed under `simple`'s fallback tag.
    let size = reg.raw_manifest(&other.reference).len() as u64;
    let sbom = signer::push_sbom(&reg, "test/simple", &other.digest, size, "application/vnd.oci.image.manifest.v1+json", b"{}");
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{sbom}","size":{}}}]}}"#,
        reg.raw_manifest(&format!("{}/test/simple@{sbom}", reg.host())).len()
    );
    signer::put_manifest(&reg, "test/simple", &format!("sha256-{}", hex_of(&img.digest)), "application/vnd.oci.image.index.v1+json", index.as_bytes());
    let err = env.fails(&["fetch", &img.reference]);
    assert!(err.contains(&sbom) && err.contains("not in the set"), "{err}");
    assert!(refs(&env).is_empty());
}

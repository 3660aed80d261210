//! Owns the referrer tests (issue 12): signatures, SBOMs and attestations found at fetch (the
//! fallback tag on a real distribution 2.8, cosign's `.sig` tags), carried by the store, a
//! bundle, import, an OCI layout and push (digests kept, also under `--rewrite`), and the bad
//! inputs (a referrer naming another subject, a loop) refused in one line with nothing stored.
//! Signatures are made by the test signer (`harness::signer`, openssl keys, cosign's format).
use serde_json::Value;

use crate::harness::cmd::{hex_of, s, Env};
use crate::harness::fakereg::{FakeRegistry, TestImage};
use crate::harness::fixtures::push_one;
use crate::harness::registry::{Registry, Variant};
use crate::harness::signer::{self, Key};

mod pinned;
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
    assert_eq!(size["bundle_bytes"].as_u64(), Some(std::fs::metadata(&b).unwrap().len()), "size counts the referrers: {size}");

    // An OCI layout carries them as index.json entries named by their tags; verify reads them
    // there. A docker-archive holds images only: they are left out.
    let dir = env.path().join("layout");
    env.ok(&["export", "--oci-layout", s(&dir), &name]);
    let idx: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = idx["manifests"].as_array().unwrap().iter().map(|m| m["annotations"]["io.containerd.image.name"].as_str().unwrap_or("")).collect();
    assert!(names.contains(&sig_ref.as_str()) && names.contains(&idx_ref.as_str()), "{idx}");
    let v = env.json(&["verify", &format!("oci:{}", dir.display()), "--key", s(&key.public)]);
    assert_eq!(v["signatures"][0]["verdict"], "signed", "{v}");
    env.ok(&["export", "--docker-archive", s(&env.path().join("d.tar")), "--all"]);

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

/// An SBOM (artifactType `at`) of `img` in the fake registry, by digest only (as a client of a
/// registry with the referrers API pushes it); returns its digest.
fn fake_referrer(reg: &FakeRegistry, img: &TestImage, at: &str) -> String {
    fake_referrer_of(reg, &img.repo, &img.manifest_digest, img.manifest.len(), at).0
}

/// The same for any subject (digest and size) in `repo`; returns the referrer's digest and size.
fn fake_referrer_of(reg: &FakeRegistry, repo: &str, subject: &str, subject_size: usize, at: &str) -> (String, usize) {
    let empty = reg.add_blob(repo, b"{}".to_vec());
    let body = format!(r#"{{"kind":"{at}"}}"#).into_bytes();
    let layer = reg.add_blob(repo, body.clone());
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{at}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"{at}","digest":"{layer}","size":{}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{subject_size}}}}}"#,
        body.len()
    );
    let len = m.len();
    (reg.add_manifest(repo, None, OCI_MANIFEST, m.into_bytes()), len)
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A fake registry with the referrers API, holding `app:v1` (one layer of `layer` bytes).
fn api_registry(layer: usize) -> (FakeRegistry, TestImage) {
    let src = FakeRegistry::start();
    src.set_referrers_api(true);
    let img = src.add_image("app", "v1", &[layer]);
    (src, img)
}

#[test]
fn referrers_api_is_used_where_offered_for_fetch_and_push_and_the_fallback_tag_elsewhere() {
    let env = Env::new();
    let (src, img) = api_registry(3000);
    let sbom = fake_referrer(&src, &img, "application/spdx+json");
    let _att = fake_referrer(&src, &img, "application/vnd.in-toto+json");
    let v = env.json(&["fetch", "--referrers", "application/spdx+json", &img.reference]);
    let got: Vec<&str> = v["images"][0]["referrers"].as_array().unwrap().iter().map(|r| r["digest"].as_str().unwrap()).collect();
    assert_eq!(got, vec![sbom.as_str()], "{v}");
    let log = src.log();
    let asked = log.iter().find(|r| r.path == format!("/v2/app/referrers/{}", img.manifest_digest)).unwrap_or_else(|| panic!("{}", src.log_summary()));
    assert_eq!(asked.query, vec![("artifactType".to_string(), "application/spdx+json".to_string())]);
    let hex = hex_of(&img.manifest_digest);
    assert!(!log.iter().any(|r| r.path == format!("/v2/app/manifests/sha256-{hex}")), "no fallback tag once the API answered:\n{}", src.log_summary());

    // Into a registry with the API: the referrer by digest (OCI-Subject answered), no tag index.
    let with_api = FakeRegistry::start();
    with_api.set_referrers_api(true);
    env.ok(&["push", &img.reference, "--to", &with_api.host()]);
    assert!(with_api.manifest("app", &sbom).is_some());
    let tags: Vec<String> = with_api.tags("app").into_iter().map(|(t, _)| t).collect();
    assert_eq!(tags, vec!["v1".to_string()], "no fallback tag where the API is");
    // Into one without: the fallback tag index names the referrer.
    let without = FakeRegistry::start();
    env.ok(&["push", &img.reference, "--to", &without.host()]);
    let (_, idx) = without.manifest("app", &format!("sha256-{hex}")).expect("the fallback tag");
    let idx: Value = serde_json::from_slice(&idx).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], sbom.as_str());
    assert_eq!(idx["manifests"][0]["artifactType"], "application/spdx+json");
}

#[test]
fn a_referrer_loop_is_refused_and_nothing_is_stored() {
    let env = Env::new();
    let key = Key::new(env.path(), "cosign", false);
    let reg = Registry::start(Variant::Plain);
    let img = push_one(&reg, "simple");
    let sig = signer::sign(&reg, "test/simple", &img.digest, &key);
    // The signature's own `.sig` tag names the image again: image -> sig -> image.
    let bytes = reg.raw_manifest(&img.reference);
    signer::put_manifest(&reg, "test/simple", &format!("sha256-{}.sig", hex_of(&sig.manifest_digest)), OCI_MANIFEST, &bytes);
    let err = env.fails(&["fetch", &img.reference]);
    assert!(err.contains("referrer loop") && err.contains(&img.digest), "{err}");
    assert!(refs(&env).is_empty());
    // Without referrers the image itself is fine.
    env.ok(&["fetch", "--referrers", "none", &img.reference]);
}

#[test]
fn referrers_api_pages_are_followed() {
    let env = Env::new();
    let (src, img) = api_registry(2000);
    src.set_referrers_page(2);
    let mut want: Vec<String> = (0..5).map(|i| fake_referrer(&src, &img, &format!("application/vnd.example.t{i}"))).collect();
    want.sort();
    let v = env.json(&["fetch", &img.reference]);
    let mut got: Vec<String> = v["images"][0]["referrers"].as_array().unwrap().iter().map(|r| r["digest"].as_str().unwrap().to_string()).collect();
    got.sort();
    assert_eq!(got, want, "{}", src.log_summary());
    let pages = src.log().iter().filter(|r| r.path.contains("/referrers/")).count();
    assert!(pages >= 3, "5 referrers in pages of 2: {}", src.log_summary());
}

#[test]
fn referrers_of_referrers_are_followed_to_the_depth_cap() {
    let env = Env::new();
    let (src, img) = api_registry(2000);
    // A chain six deep: each an attestation of the one before.
    let mut chain = Vec::new();
    let (mut d, mut n) = (img.manifest_digest.clone(), img.manifest.len());
    for i in 0..6 {
        (d, n) = fake_referrer_of(&src, "app", &d, n, &format!("application/vnd.example.level{}", i + 1));
        chain.push(d.clone());
    }
    let v = env.json(&["fetch", &img.reference]);
    let mut got: Vec<String> = v["images"][0]["referrers"].as_array().unwrap().iter().map(|r| r["digest"].as_str().unwrap().to_string()).collect();
    got.sort();
    let mut want = chain[..4].to_vec();
    want.sort();
    assert_eq!(got, want, "levels 1 to 4 (MAX_DEPTH) are kept, 5 and 6 are not");
    // Bundled by the image's name, the whole kept chain goes along.
    let b = env.path().join("b.obun");
    env.ok(&["bundle", "-o", s(&b), &img.reference]);
    let ins = env.json(&["inspect", s(&b)]);
    assert_eq!(ins["images"][0]["referrers"].as_array().unwrap().len(), 4, "{ins}");
}

#[test]
fn push_merges_the_fallback_tag_index_the_target_holds_already() {
    let env = Env::new();
    let (src, img) = api_registry(2000);
    let ours = fake_referrer(&src, &img, "application/spdx+json");
    env.ok(&["fetch", &img.reference]);
    // The target (no referrers API) lists another client's referrer of the same image already.
    let dst = FakeRegistry::start();
    let (theirs, size) = fake_referrer_of(&dst, "app", &img.manifest_digest, img.manifest.len(), "application/vnd.example.scan");
    let hex = hex_of(&img.manifest_digest);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{theirs}","size":{size},"artifactType":"application/vnd.example.scan"}}]}}"#
    );
    dst.add_manifest("app", Some(&format!("sha256-{hex}")), "application/vnd.oci.image.index.v1+json", index.into_bytes());
    env.ok(&["push", &img.reference, "--to", &dst.host()]);
    let (_, idx) = dst.manifest("app", &format!("sha256-{hex}")).unwrap();
    let idx: Value = serde_json::from_slice(&idx).unwrap();
    let mut listed: Vec<&str> = idx["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap()).collect();
    listed.sort();
    let mut want = vec![ours.as_str(), theirs.as_str()];
    want.sort();
    assert_eq!(listed, want, "both listed: {idx}");
    // A second push changes nothing.
    env.ok(&["push", &img.reference, "--to", &dst.host()]);
    let (_, again) = dst.manifest("app", &format!("sha256-{hex}")).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&again).unwrap(), idx);
}

//! Owns the offline signature verification tests (issue 12, the promotion gate): `verify
//! --key`, `import --key --require-signed` and `push --key --require-signed` on cosign-format
//! signatures made by the test signer, each verdict cross-checked with openssl on the same
//! payload and signature. Cases: good (ECDSA P-256 and Ed25519), wrong key, a payload for
//! another digest, another repository, a corrupted signature, a payload over its cap, a
//! signature on one platform only, a signature made after a push --rewrite, a malformed key.
use serde_json::Value;

use crate::harness::cmd::{s, Env};
use crate::harness::fixtures::{self, layout, push_one, PushMode};
use crate::harness::registry::{Registry, Variant};
use crate::harness::signer::{self, payload, push_signature, Key};

/// The verdict entry of `reference` in a `verify --json` document.
fn verdict<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    doc["signatures"].as_array().unwrap_or_else(|| panic!("no signatures in {doc}")).iter().find(|v| v["reference"] == reference).unwrap_or_else(|| panic!("no verdict for {reference} in {doc}"))
}

#[test]
fn verify_gives_each_case_its_verdict_and_openssl_agrees() {
    let env = Env::new();
    let ec = Key::new(env.path(), "cosign", false);
    let ed = Key::new(env.path(), "ed", true);
    let other = Key::new(env.path(), "other", false);
    let reg = Registry::start(Variant::Plain);
    let l = layout();
    let zstd = push_one(&reg, "zstd");
    // The same image under one repository per case: a signature is attached per repository.
    let cases = ["good", "goodED", "wrongkey", "otherdigest", "otherrepo", "corrupt", "bigpayload", "unsigned"];
    let mut digest = String::new();
    for c in cases {
        digest = fixtures::push(&reg, &l.dir, "simple", &format!("case/{}:v1", c.to_lowercase()), PushMode::Oci);
    }
    let id = |c: &str| format!("{}/case/{}", reg.host(), c.to_lowercase());
    let mut expect: Vec<(&str, &str, bool)> = Vec::new(); // (case, verdict, openssl accepts the signature with cosign.pub)
    let good = signer::sign(&reg, "case/good", &digest, &ec);
    assert!(ec.openssl_verifies(&good.payload, &good.sig));
    expect.push(("good", "signed", true));
    let good_ed = signer::sign(&reg, "case/gooded", &digest, &ed);
    assert!(ed.openssl_verifies(&good_ed.payload, &good_ed.sig) && !ec.openssl_verifies(&good_ed.payload, &good_ed.sig));
    expect.push(("goodED", "signed", false));
    let wrong = signer::sign(&reg, "case/wrongkey", &digest, &other);
    assert!(!ec.openssl_verifies(&wrong.payload, &wrong.sig) && !ed.openssl_verifies(&wrong.payload, &wrong.sig));
    expect.push(("wrongkey", "bad-signature", false));
    let pl = payload(&id("otherdigest"), &zstd.digest);
    let sig = ec.sign(&pl);
    let od = push_signature(&reg, "case/otherdigest", &digest, pl, sig);
    assert!(ec.openssl_verifies(&od.payload, &od.sig), "a valid signature of the wrong payload");
    expect.push(("otherdigest", "bad-signature", true));
    let pl = payload(&format!("{}/case/good", reg.host()), &digest);
    let sig = ec.sign(&pl);
    let or = push_signature(&reg, "case/otherrepo", &digest, pl, sig);
    assert!(ec.openssl_verifies(&or.payload, &or.sig));
    expect.push(("otherrepo", "bad-signature", true));
    let pl = payload(&id("corrupt"), &digest);
    let mut sig = ec.sign(&pl);
    let n = sig.len();
    sig[n - 3] ^= 0x55;
    let co = push_signature(&reg, "case/corrupt", &digest, pl, sig);
    assert!(!ec.openssl_verifies(&co.payload, &co.sig));
    expect.push(("corrupt", "bad-signature", false));
    let big = String::from_utf8(payload(&id("bigpayload"), &digest)).unwrap().replace("\"optional\":null", &format!("\"optional\":{{\"pad\":\"{}\"}}", "x".repeat(70 << 10)));
    let sig = ec.sign(big.as_bytes());
    let bp = push_signature(&reg, "case/bigpayload", &digest, big.into_bytes(), sig);
    assert!(ec.openssl_verifies(&bp.payload, &bp.sig));
    expect.push(("bigpayload", "bad-signature", true));
    expect.push(("unsigned", "unsigned", false));

    let names: Vec<String> = cases.iter().map(|c| format!("{}:v1", id(c))).collect();
    let mut args: Vec<&str> = vec!["fetch"];
    args.extend(names.iter().map(String::as_str));
    env.ok(&args);
    let b = env.path().join("b.obun");
    env.ok(&["bundle", "-o", s(&b), "--all"]);
    let doc = env.json(&["verify", s(&b), "--key", s(&ec.public), "--key", s(&ed.public)]);
    for (c, want, openssl_ok) in &expect {
        let v = verdict(&doc, &format!("{}:v1", id(c)));
        assert_eq!(v["verdict"], *want, "{c}: {v}");
        let sigs = v["signatures"].as_array().unwrap();
        // openssl's verdict on the same bytes with cosign.pub: a signature accepted by the
        // verifier with that key must pass openssl; one openssl rejects must not be accepted.
        for sg in sigs {
            if sg["key"].as_str().is_some_and(|k| k.starts_with("cosign.pub")) {
                assert!(openssl_ok, "{c}: accepted with cosign.pub but openssl rejects it");
            }
        }
        match *c {
            "good" => assert!(v["keys"][0].as_str().unwrap().starts_with("cosign.pub (sha256:"), "{v}"),
            "goodED" => assert!(v["keys"][0].as_str().unwrap().starts_with("ed.pub"), "{v}"),
            "wrongkey" | "corrupt" => assert!(sigs[0]["problem"].as_str().unwrap().contains("no --key verifies it"), "{v}"),
            "otherdigest" => assert!(sigs[0]["problem"].as_str().unwrap().contains(&format!("signs {}", zstd.digest)), "{v}"),
            "otherrepo" => assert!(sigs[0]["problem"].as_str().unwrap().contains("case/good, not"), "{v}"),
            "bigpayload" => assert!(sigs[0]["problem"].as_str().unwrap().contains("over the 64 KiB cap"), "{v}"),
            _ => assert!(sigs.is_empty()),
        }
        if *want == "bad-signature" {
            assert_eq!(sigs[0]["manifest"].as_str().unwrap().len(), 71, "the signature's manifest is named: {v}");
        }
    }
    // The text report: one line per image; without --require-signed a bad signature is reported, not fatal.
    let out = env.ok(&["verify", s(&b), "--key", s(&ec.public)]);
    assert!(out.contains(&format!("signed: {}:v1 by cosign.pub", id("good"))), "{out}");
    assert!(out.contains(&format!("bad signature: {}:v1: signature {}", id("corrupt"), co.manifest_digest)), "{out}");
    assert!(out.contains(&format!("unsigned: {}:v1", id("unsigned"))), "{out}");
    let err = env.fails(&["verify", s(&b), "--key", s(&ec.public), "--require-signed"]);
    assert!(err.contains("--require-signed") && err.contains("not signed"), "{err}");

    // The gate on import: refused before anything is stored; the signed ones alone pass.
    let env2 = Env::new();
    let err = env2.fails(&["import", s(&b), "--key", s(&ec.public), "--require-signed"]);
    assert!(err.contains("--require-signed"), "{err}");
    assert!(crate::harness::bundles::store_refs(&env2.store()).is_empty(), "nothing stored");
    let good_only = env.path().join("good.obun");
    env.ok(&["bundle", "-o", s(&good_only), &format!("{}:v1", id("good"))]);
    env2.ok(&["import", s(&good_only), "--key", s(&ec.public), "--require-signed"]);
}

#[test]
fn verify_judges_a_signature_on_one_platform_per_platform() {
    let env = Env::new();
    let ec = Key::new(env.path(), "cosign", false);
    let reg = Registry::start(Variant::Plain);
    let multi = push_one(&reg, "multi");
    let amd64 = multi.image.children.iter().find(|c| c.platform == "linux/amd64").unwrap().manifest.digest.clone();
    signer::sign(&reg, "test/multi", &amd64, &ec);
    env.ok(&["fetch", "--all-platforms", &multi.reference]);
    let b = env.path().join("all.obun");
    env.ok(&["bundle", "-o", s(&b), &multi.reference]);
    let doc = env.json(&["verify", s(&b), "--key", s(&ec.public)]);
    let v = verdict(&doc, &multi.reference);
    assert_eq!(v["verdict"], "unsigned", "{v}");
    let plats: Vec<(&str, &str)> = v["platforms"].as_array().unwrap().iter().map(|p| (p["platform"].as_str().unwrap(), p["verdict"].as_str().unwrap())).collect();
    assert_eq!(plats, vec![("linux/amd64", "signed"), ("linux/arm64/v8", "unsigned")], "{v}");
    // One platform picked: the signed one is signed, the other not.
    let env_amd = Env::new();
    env_amd.ok(&["fetch", "--platform", "linux/amd64", &multi.reference]);
    let b1 = env_amd.path().join("amd.obun");
    env_amd.ok(&["bundle", "-o", s(&b1), "--all"]);
    assert_eq!(verdict(&env_amd.json(&["verify", s(&b1), "--key", s(&ec.public)]), &multi.reference)["verdict"], "signed");
    let env_arm = Env::new();
    env_arm.ok(&["fetch", "--platform", "linux/arm64", &multi.reference]);
    let b2 = env_arm.path().join("arm.obun");
    env_arm.ok(&["bundle", "-o", s(&b2), "--all"]);
    assert_eq!(verdict(&env_arm.json(&["verify", s(&b2), "--key", s(&ec.public)]), &multi.reference)["verdict"], "unsigned");
    // A signature of the index covers every platform, also the one picked from it.
    signer::sign(&reg, "test/multi", &multi.digest, &ec);
    let env3 = Env::new();
    env3.ok(&["fetch", "--platform", "linux/arm64", &multi.reference]);
    let b3 = env3.path().join("arm2.obun");
    env3.ok(&["bundle", "-o", s(&b3), "--all"]);
    assert_eq!(verdict(&env3.json(&["verify", s(&b3), "--key", s(&ec.public)]), &multi.reference)["verdict"], "signed");
}

#[test]
fn push_gates_on_the_original_name_and_a_signature_made_after_a_rewrite_verifies() {
    let env = Env::new();
    let ec = Key::new(env.path(), "cosign", false);
    let a = Registry::start(Variant::Plain);
    let img = push_one(&a, "simple");
    signer::sign(&a, "test/simple", &img.digest, &ec);
    let unsigned = push_one(&a, "zstd");
    env.ok(&["fetch", &img.reference, &unsigned.reference]);
    let b = Registry::start(Variant::Plain);
    let rewrite = format!("{}/={}/site/", a.host(), b.host());
    // Unsigned in the selection: nothing is pushed.
    let err = env.fails(&["push", "--all", "--rewrite", &rewrite, "--key", s(&ec.public), "--require-signed"]);
    assert!(err.contains(&unsigned.reference) && err.contains("unsigned"), "{err}");
    assert_eq!(catalog(&b), r#"{"repositories":[]}"#, "nothing was sent");
    // The signed one passes: its signature names the original repository.
    env.ok(&["push", &img.reference, "--rewrite", &rewrite, "--key", s(&ec.public), "--require-signed"]);
    assert_eq!(b.content_digest("site/test/simple", "v1"), img.digest, "digest kept");
    // Signed again at the site under the new name (same digest): fetched from there, it verifies.
    signer::sign(&b, "site/test/simple", &img.digest, &ec);
    let env2 = Env::new();
    let new = format!("{}/site/test/simple:v1", b.host());
    env2.ok(&["fetch", &new]);
    let bun = env2.path().join("site.obun");
    env2.ok(&["bundle", "-o", s(&bun), &new]);
    let v = env2.json(&["verify", s(&bun), "--key", s(&ec.public), "--require-signed"]);
    assert_eq!(verdict(&v, &new)["verdict"], "signed");
    assert_eq!(verdict(&v, &new)["signatures"].as_array().unwrap().len(), 1, "the site's signature replaced the one carried from A under the .sig tag: {v}");

    // A malformed key: one line naming the file.
    let junk = env.path().join("junk.pub");
    std::fs::write(&junk, "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n").unwrap();
    let err = env2.fails(&["verify", s(&bun), "--key", s(&junk)]);
    assert!(err.contains("junk.pub") && err.contains("bad base64"), "{err}");
    let err = env2.fails(&["verify", s(&bun), "--key", s(&ec.private)]);
    assert!(err.contains("private key"), "{err}");
    let err = env2.fails(&["verify", s(&bun), "--require-signed"]);
    assert!(err.contains("needs at least one --key"), "{err}");
}

/// The registry's `/v2/_catalog`, trimmed.
fn catalog(reg: &Registry) -> String {
    let out = std::process::Command::new("curl").args(["-s", "-f", "--noproxy", "*"]).arg(format!("{}/v2/_catalog", reg.url())).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

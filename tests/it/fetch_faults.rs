//! Owns the fault-injection fetch tests: `ocibundle fetch` against the in-process fake registry.
//!
//! Each test starts its own `FakeRegistry` on 127.0.0.1 (plain HTTP), fetches from it with
//! `ocibundle --store STORE fetch 127.0.0.1:PORT/REPO:TAG`, and checks the outcome, the store
//! and the server's request log.
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::cmd::{Env, files_under, hex_of, sha256};
use crate::harness::fakereg::{Auth, FakeRegistry, OCI_MANIFEST, Req, TestImage};
use crate::harness::procfs;

fn store_str(env: &Env) -> String {
    env.store().to_str().unwrap().to_string()
}

/// `--store STORE fetch EXTRA... REF`
fn fetch_args(env: &Env, extra: &[&str], reference: &str) -> Vec<String> {
    let mut a = vec!["--store".to_string(), store_str(env), "fetch".to_string()];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push(reference.to_string());
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}



fn partial_path(env: &Env, digest: &str) -> PathBuf {
    env.store()
        .join(".ocibundle/tmp")
        .join(format!("{}.partial", hex_of(digest)))
}

/// The stored blob exists and hashes to its name.
fn assert_blob_ok(env: &Env, digest: &str) {
    let p = env.blob_path(digest);
    let data = std::fs::read(&p)
        .unwrap_or_else(|e| panic!("blob {digest} not in store ({}): {e}", p.display()));
    assert_eq!(
        sha256(&data),
        digest,
        "stored blob {} does not hash to its name",
        p.display()
    );
}

fn assert_image_stored(env: &Env, img: &TestImage) {
    assert_blob_ok(env, &img.manifest_digest);
    for b in img.blobs() {
        assert_blob_ok(env, &b.digest);
    }
}

fn gets(reqs: &[Req]) -> Vec<&Req> {
    reqs.iter().filter(|r| r.method == "GET").collect()
}

#[test]
fn plain_fetch_json_reports_the_image_and_refetch_is_present() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("test/simple", "v1", &[40_000, 3_000]);
    let env = Env::new();
    let v = env.json(&strs(&fetch_args(&env, &[], &img.reference)));
    let im = &v["images"][0];
    assert_eq!(im["reference"], img.reference.as_str(), "{v}");
    assert_eq!(im["digest"], img.manifest_digest.as_str(), "{v}");
    assert_eq!(im["media_type"], OCI_MANIFEST, "{v}");
    let layers: Vec<&str> = im["manifests"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        img.layers
            .iter()
            .map(|l| l.digest.as_str())
            .collect::<Vec<_>>(),
        "{v}"
    );
    assert_eq!(
        im["manifests"][0]["config"]["digest"],
        img.config.digest.as_str(),
        "{v}"
    );
    let blob_bytes: u64 = img.blobs().iter().map(|b| b.size).sum();
    assert_eq!(v["blobs_fetched"], 3, "{v}");
    assert_eq!(v["bytes_fetched"], blob_bytes, "{v}");
    assert_eq!(v["blobs_present"], 0, "{v}");
    assert_image_stored(&env, &img);

    let v = env.json(&strs(&fetch_args(&env, &[], &img.reference)));
    assert_eq!(v["blobs_fetched"], 0, "{v}");
    assert_eq!(v["blobs_present"], 3, "{v}");
    assert_eq!(v["bytes_present"], blob_bytes, "{v}");
    for b in img.blobs() {
        assert_eq!(
            gets(&reg.blob_requests("test/simple", &b.digest)).len(),
            1,
            "{}",
            reg.log_summary()
        );
    }
}

#[test]
fn bearer_token_flow_anonymous() {
    let reg = FakeRegistry::with_auth(Auth::bearer());
    let img = reg.add_image("library/tokenized", "v1", &[20_000]);
    let env = Env::new();
    env.ok(&strs(&fetch_args(&env, &[], &img.reference)));
    assert_image_stored(&env, &img);
    let toks = reg.token_requests();
    assert!(
        !toks.is_empty(),
        "token endpoint never used:\n{}",
        reg.log_summary()
    );
    assert!(
        toks.iter().any(
            |t| t.query_value("scope") == Some("repository:library/tokenized:pull")
                && t.query_value("service") == Some("fake-registry")
        ),
        "no token request with scope repository:library/tokenized:pull and service fake-registry:\n{:?}",
        toks
    );
    assert!(
        toks.iter().all(|t| t.auth.is_none()),
        "credentials sent without --creds:\n{}",
        reg.log_summary()
    );
    // Everything served under /v2/<repo> went to a bearer-authenticated request.
    for r in reg
        .log()
        .iter()
        .filter(|r| r.path.starts_with("/v2/library/") && r.status < 300)
    {
        assert_eq!(r.auth.as_deref(), Some("Bearer"), "{}", reg.log_summary());
    }
}

#[test]
fn bearer_token_flow_with_creds() {
    let reg = FakeRegistry::with_auth(Auth::bearer_with_creds("tokuser", "tok-pass-9f2"));
    let img = reg.add_image("team/app", "v2", &[20_000]);
    let env = Env::new();
    env.ok(&strs(&fetch_args(
        &env,
        &["--creds", "tokuser:tok-pass-9f2"],
        &img.reference,
    )));
    assert_image_stored(&env, &img);
    let toks = reg.token_requests();
    assert!(
        toks.iter().any(|t| t.status == 200
            && t.auth.as_deref() == Some("Basic")
            && t.query_value("scope") == Some("repository:team/app:pull")),
        "no successful token request with Basic credentials and the pull scope:\n{}",
        reg.log_summary()
    );

    // Without credentials the token endpoint refuses: a clean failure naming the image.
    let env2 = Env::new();
    let err = env2.fails(&strs(&fetch_args(&env2, &[], &img.reference)));
    eprintln!("{err}");
    assert!(
        err.contains(&img.reference),
        "error does not name {}: {err}",
        img.reference
    );

    // Wrong password: fails, and the password is nowhere in the output.
    let env3 = Env::new();
    let out = env3.run(&strs(&fetch_args(
        &env3,
        &["--creds", "tokuser:wrong-pass-77c"],
        &img.reference,
    )));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("wrong-pass-77c"),
        "password leaked into output"
    );
    assert!(
        !env3
            .store()
            .join("blobs/sha256")
            .join(hex_of(&img.manifest_digest))
            .exists()
    );
}

#[test]
fn basic_auth_needs_creds() {
    let reg = FakeRegistry::with_auth(Auth::basic("alice", "b4sic-s3cret"));
    let img = reg.add_image("private/img", "v1", &[20_000]);
    let env = Env::new();
    env.ok(&strs(&fetch_args(
        &env,
        &["--creds", "alice:b4sic-s3cret"],
        &img.reference,
    )));
    assert_image_stored(&env, &img);
    for r in reg
        .log()
        .iter()
        .filter(|r| r.path.starts_with("/v2/private/") && r.status < 300)
    {
        assert_eq!(r.auth.as_deref(), Some("Basic"), "{}", reg.log_summary());
    }

    let env2 = Env::new();
    let err = env2.fails(&strs(&fetch_args(&env2, &[], &img.reference)));
    eprintln!("{err}");
    assert!(
        err.contains(&img.reference),
        "error does not name {}: {err}",
        img.reference
    );
    assert!(!env2.blob_path(&img.manifest_digest).exists());
}

#[test]
fn wrong_bytes_fail_and_leave_nothing_claiming_to_be_the_blob() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("test/corrupt", "v1", &[200_000, 30_000]);
    let bad = img.layers[0].clone();
    reg.wrong_bytes(&bad.digest);
    let env = Env::new();
    let err = env.fails(&strs(&fetch_args(&env, &[], &img.reference)));
    eprintln!("{err}");
    assert!(
        err.contains(bad.hex()),
        "error does not name blob {}: {err}",
        bad.digest
    );
    assert!(
        err.contains(&img.reference),
        "error does not name image {}: {err}",
        img.reference
    );
    assert!(
        !env.blob_path(&bad.digest).exists(),
        "corrupt blob stored under its digest"
    );
    // No file anywhere in the store may pass for the complete blob: a leftover partial is
    // fine only if shorter than the blob.
    for f in files_under(&env.store()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if !name.contains(bad.hex()) {
            continue;
        }
        assert_eq!(
            f,
            partial_path(&env, &bad.digest),
            "unexpected file for the bad blob: {}",
            f.display()
        );
        let len = std::fs::metadata(&f).unwrap().len();
        assert!(
            len < bad.size,
            "{} has all {len} bytes of a blob that failed verification",
            f.display()
        );
    }
    if let Ok(index) = std::fs::read_to_string(env.store().join("index.json")) {
        assert!(
            !index.contains(&img.manifest_digest),
            "index.json references the failed image: {index}"
        );
    }

    // Once the registry serves the right bytes, a rerun completes.
    reg.clear_faults(&bad.digest);
    env.ok(&strs(&fetch_args(&env, &[], &img.reference)));
    assert_image_stored(&env, &img);
}

#[test]
fn connection_cut_mid_blob_resumes_with_range() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("test/cut", "v1", &[3_000_000]);
    let layer = img.layers[0].clone();
    reg.cut_after(&layer.digest, 1_000_000, 2);
    let env = Env::new();
    env.ok(&strs(&fetch_args(&env, &[], &img.reference)));
    assert_image_stored(&env, &img);
    let reqs = reg.blob_requests("test/cut", &layer.digest);
    let got = gets(&reqs);
    assert!(
        got.len() >= 3,
        "expected two cut GETs and a complete one:\n{}",
        reg.log_summary()
    );
    assert!(
        got.iter()
            .any(|r| r.range_start().is_some_and(|n| n > 0) && r.status == 206),
        "no resumed request with Range: bytes=N- (N > 0):\n{}",
        reg.log_summary()
    );
    // Refetching from scratch each time would cost 1 + 1 + 3 MB = 1.67x the blob.
    let served: u64 = reqs.iter().map(|r| r.body_sent).sum();
    assert!(
        served * 2 < layer.size * 3,
        "served {served} bytes for a {}-byte blob (want < 1.5x):\n{}",
        layer.size,
        reg.log_summary()
    );
}

/// Regression (issue 11, "a bad network ends the fetch"): the retry budget (5) was spent by
/// cuts that each brought new bytes, so a blob that advanced on every try still failed.
#[test]
fn cuts_that_each_bring_new_bytes_never_end_the_fetch() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("test/flaky", "v1", &[240_000]);
    let layer = img.layers[0].clone();
    // 12 cuts in a row, twice the retry budget, each 20 kB further on.
    reg.cut_after(&layer.digest, 20_000, 12);
    let env = Env::new();
    let mut cmd = env.cmd();
    cmd.env("OCIBUNDLE_RETRY_BASE_MS", "1").args(strs(&fetch_args(&env, &[], &img.reference)));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "fetch gave up while making progress:\n{}\n{}", crate::harness::cmd::text(&out), reg.log_summary());
    assert_image_stored(&env, &img);
    let got = gets(&reg.blob_requests("test/flaky", &layer.digest)).len();
    assert_eq!(got, 13, "12 cut GETs and the one that finished:\n{}", reg.log_summary());
    // The text summary says so: 12 retries, each resuming 20 kB further on.
    let resumed: u64 = (1..=12).map(|i| i * 20_000).sum();
    let note = format!("fetched 1 image (12 retries, {:.1} MB resumed)", resumed as f64 / 1e6);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&note), "no {note:?} on stderr:\n{}", crate::harness::cmd::text(&out));
}

/// Regression (issue 11, "partial success is kept"): one image whose blob always fails used to
/// leave every image of the run uncommitted, even those whose blobs had all arrived.
#[test]
fn a_failing_image_does_not_cost_the_good_ones() {
    let reg = FakeRegistry::start();
    let good = reg.add_image("test/good", "v1", &[40_000]);
    let bad = reg.add_image("test/bad", "v1", &[30_000]);
    reg.status(&bad.layers[0].digest, 500, u32::MAX);
    let env = Env::new();
    let mut args = fetch_args(&env, &[], &good.reference);
    args.push(bad.reference.clone());
    let line = env.fails(&strs(&args));
    assert!(line.contains("1 of 2 images failed") && line.contains("test/bad") && line.contains("1 stored"), "{line}");
    assert_image_stored(&env, &good);
    let ls = env.json(&["--store", &store_str(&env), "store", "ls"]);
    let names: Vec<&str> = ls["images"].as_array().unwrap().iter().map(|i| i["reference"].as_str().unwrap()).collect();
    assert!(names.iter().any(|n| n.ends_with("test/good:v1")) && !names.iter().any(|n| n.contains("test/bad")), "{ls}");
    // Once the registry mends, the rerun fetches only what is missing.
    reg.clear_faults(&bad.layers[0].digest);
    let doc = env.json(&strs(&args));
    assert_eq!(doc["blobs_fetched"], 1, "only the failed layer again: {doc}");
    assert_image_stored(&env, &bad);
}

#[test]
fn status_429_twice_then_ok() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("test/busy", "v1", &[50_000]);
    let layer = img.layers[0].clone();
    reg.status(&layer.digest, 429, 2);
    let env = Env::new();
    env.ok(&strs(&fetch_args(&env, &[], &img.reference)));
    assert_image_stored(&env, &img);
    let reqs = reg.blob_requests("test/busy", &layer.digest);
    assert_eq!(
        reqs.iter().filter(|r| r.status == 429).count(),
        2,
        "{}",
        reg.log_summary()
    );
    assert!(
        reqs.iter().any(|r| r.status == 200),
        "{}",
        reg.log_summary()
    );
}

#[test]
fn manifest_503_twice_then_ok() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("test/flaky", "v1", &[10_000]);
    reg.status("test/flaky:v1", 503, 2);
    let env = Env::new();
    env.ok(&strs(&fetch_args(&env, &[], &img.reference)));
    assert_image_stored(&env, &img);
    let reqs = reg.manifest_requests("test/flaky", "v1");
    assert_eq!(
        reqs.iter().filter(|r| r.status == 503).count(),
        2,
        "{}",
        reg.log_summary()
    );
}

#[test]
fn status_500_forever_gives_up_after_bounded_retries() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("test/broken", "v1", &[50_000]);
    let layer = img.layers[0].clone();
    reg.status(&layer.digest, 500, u32::MAX);
    let env = Env::new();
    let err = env.fails(&strs(&fetch_args(&env, &[], &img.reference)));
    eprintln!("{err}");
    assert!(
        err.contains(layer.hex()),
        "error does not name blob {}: {err}",
        layer.digest
    );
    let n = reg.blob_requests("test/broken", &layer.digest).len();
    assert!(
        (2..=6).contains(&n),
        "{n} requests for a blob that always fails (want 1 + up to 5 retries):\n{}",
        reg.log_summary()
    );
    assert!(!env.blob_path(&layer.digest).exists());

    // Same for a manifest that always fails.
    let img2 = reg.add_image("test/broken2", "v1", &[1_000]);
    reg.status("test/broken2:v1", 500, u32::MAX);
    let err = env.fails(&strs(&fetch_args(&env, &[], &img2.reference)));
    eprintln!("{err}");
    assert!(
        err.contains(&img2.reference),
        "error does not name {}: {err}",
        img2.reference
    );
    let n = reg.manifest_requests("test/broken2", "v1").len();
    assert!(
        (2..=6).contains(&n),
        "{n} requests for a manifest that always fails:\n{}",
        reg.log_summary()
    );
}

#[test]
fn missing_tag_fails_without_retry() {
    let reg = FakeRegistry::start();
    reg.add_image("test/exists", "v1", &[1_000]);
    let reference = reg.reference("test/exists", "nope");
    let env = Env::new();
    let err = env.fails(&strs(&fetch_args(&env, &[], &reference)));
    eprintln!("{err}");
    assert!(
        err.contains(&reference),
        "error does not name {reference}: {err}"
    );
    assert_eq!(
        reg.manifest_requests("test/exists", "nope").len(),
        1,
        "404 was retried:\n{}",
        reg.log_summary()
    );
}

/// The store buffers partial writes (up to 1 MiB), so the stall point is well past that:
/// whatever reached the disk before the kill must be kept and resumed from.
#[test]
fn killed_mid_download_resumes_from_partial() {
    const STALL: u64 = 3_000_000;
    let reg = FakeRegistry::start();
    let img = reg.add_image("test/kill", "v1", &[4_000_000]);
    let layer = img.layers[0].clone();
    reg.stall_after(&layer.digest, STALL);
    let env = Env::new();
    let args = fetch_args(&env, &[], &img.reference);
    let mut child = env
        .cmd()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ocibundle");
    let blob_url = format!("/v2/test/kill/blobs/{}", layer.digest);
    let stalled = reg.wait_until(Duration::from_secs(60), |log| {
        log.iter().any(|r| r.path == blob_url && r.stalled)
    });
    if !stalled {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the client never reached the stalled blob:\n{}",
            reg.log_summary()
        );
    }
    let partial = partial_path(&env, &layer.digest);
    // Kill only once the client has taken in every byte sent (all but its last buffer, at most
    // 1 MiB, is then on disk), so what is kept does not depend on how fast this machine is.
    let drained = procfs::wait_blocked_reading(child.id(), reg.port(), Duration::from_secs(60));
    if !drained {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the client never finished reading the bytes sent before the stall");
    }
    child.kill().expect("kill ocibundle");
    child.wait().unwrap();
    // The kill, not a client timeout or the server giving up on the stall, ended the download.
    let before_kill = reg.blob_requests("test/kill", &layer.digest);
    assert_eq!(
        before_kill.len(),
        1,
        "expected the one stalled request before the kill:\n{}",
        reg.log_summary()
    );
    assert!(before_kill[0].stalled);
    let kept = std::fs::metadata(&partial)
        .unwrap_or_else(|e| {
            panic!(
                "no partial download at {} after kill: {e}",
                partial.display()
            )
        })
        .len();
    assert!(
        (STALL - (1 << 20)..=STALL).contains(&kept),
        "partial has {kept} bytes (server sent {STALL}, the client buffers at most 1 MiB)"
    );
    assert!(!env.blob_path(&layer.digest).exists());

    reg.clear_faults(&layer.digest);
    let mark = reg.log().len();
    env.ok(&strs(&fetch_args(&env, &[], &img.reference)));
    assert_image_stored(&env, &img);
    let rerun: Vec<Req> = reg.log()[mark..]
        .iter()
        .filter(|r| r.path == blob_url)
        .cloned()
        .collect();
    let resumed = rerun
        .iter()
        .find(|r| r.method == "GET" && r.range_start().is_some_and(|n| n > 0));
    let Some(resumed) = resumed else {
        panic!(
            "the rerun did not resume with Range: bytes=N- (partial had {kept} bytes):\n{}",
            reg.log_summary()
        )
    };
    let n = resumed.range_start().unwrap();
    assert!(n <= kept, "resumed at {n} but only {kept} bytes were kept");
    assert_eq!(resumed.status, 206);
    let served_again: u64 = rerun.iter().map(|r| r.body_sent).sum();
    assert!(
        served_again < layer.size,
        "rerun downloaded {served_again} of {} bytes again",
        layer.size
    );
    assert!(
        !partial.exists(),
        "partial left behind after the blob completed"
    );
}

#[test]
fn oversized_manifest_is_refused() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("test/huge", "v1", &[1_000]);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": img.config.media_type, "digest": img.config.digest, "size": img.config.size},
        "layers": [{"mediaType": img.layers[0].media_type, "digest": img.layers[0].digest, "size": img.layers[0].size}],
        "annotations": {"padding": "x".repeat(4 * 1024 * 1024 + 1000)},
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    assert!(bytes.len() > 4 * 1024 * 1024);
    let digest = reg.add_manifest("test/huge", Some("big"), OCI_MANIFEST, bytes);
    let reference = reg.reference("test/huge", "big");
    let env = Env::new();
    let err = env.fails(&strs(&fetch_args(&env, &[], &reference)));
    eprintln!("{err}");
    assert!(
        err.contains(&reference),
        "error does not name {reference}: {err}"
    );
    let low = err.to_lowercase();
    assert!(
        low.contains("manifest"),
        "error does not say the manifest is at fault: {err}"
    );
    assert!(
        [
            "large", "big", "exceed", "limit", "cap", "size", "mib", "4194304"
        ]
        .iter()
        .any(|w| low.contains(w)),
        "error does not say the manifest is too big: {err}"
    );
    assert!(!env.blob_path(&digest).exists());
    assert!(!env.blob_path(&img.layers[0].digest).exists());
}

#[test]
fn unsupported_manifest_media_type_is_refused() {
    let reg = FakeRegistry::start();
    let weird = "application/vnd.example.unknown.manifest.v1+json";
    let body = serde_json::json!({"schemaVersion": 2, "mediaType": weird, "stuff": []});
    reg.add_manifest(
        "test/odd",
        Some("v1"),
        weird,
        serde_json::to_vec(&body).unwrap(),
    );
    let env = Env::new();
    let reference = reg.reference("test/odd", "v1");
    let err = env.fails(&strs(&fetch_args(&env, &[], &reference)));
    eprintln!("{err}");
    assert!(
        err.contains(weird),
        "error does not name media type {weird}: {err}"
    );

    // Docker schema 1, still found on old registries: no mediaType in the body, only the header.
    let schema1 = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    let body = serde_json::json!({"schemaVersion": 1, "name": "test/old", "tag": "v1", "architecture": "amd64",
        "fsLayers": [], "history": []});
    reg.add_manifest(
        "test/old",
        Some("v1"),
        schema1,
        serde_json::to_vec(&body).unwrap(),
    );
    let reference = reg.reference("test/old", "v1");
    let err = env.fails(&strs(&fetch_args(&env, &[], &reference)));
    eprintln!("{err}");
    assert!(
        err.contains(schema1),
        "error does not name media type {schema1}: {err}"
    );
}

#[test]
fn manifest_cut_mid_body_is_retried() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("test/cutmanifest", "v1", &[5_000]);
    reg.cut_after("test/cutmanifest:v1", 100, 1);
    let env = Env::new();
    env.ok(&strs(&fetch_args(&env, &[], &img.reference)));
    assert_image_stored(&env, &img);
    let reqs = reg.manifest_requests("test/cutmanifest", "v1");
    assert!(
        reqs.iter().any(|r| r.body_sent == 100) && reqs.len() >= 2,
        "{}",
        reg.log_summary()
    );
}

/// Ctrl-C (SIGINT) mid-download: exit 130, everything received so far is kept (flushed, unlike
/// a kill), and the next run resumes exactly there.
#[test]
fn interrupted_fetch_keeps_all_received_bytes_and_resumes() {
    const STALL: u64 = 2_500_000;
    let reg = FakeRegistry::start();
    let img = reg.add_image("test/sigint", "v1", &[4_000_000]);
    let layer = img.layers[0].clone();
    reg.stall_after(&layer.digest, STALL);
    let env = Env::new();
    let args = fetch_args(&env, &[], &img.reference);
    let child = env
        .cmd()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ocibundle");
    let blob_url = format!("/v2/test/sigint/blobs/{}", layer.digest);
    let stalled = reg.wait_until(Duration::from_secs(60), |log| log.iter().any(|r| r.path == blob_url && r.stalled));
    assert!(stalled, "the client never reached the stalled blob:\n{}", reg.log_summary());
    // The server has sent its bytes; wait until the client has taken in all of them (a slow
    // client may still have some in the socket queue, which Ctrl-C rightly does not wait for).
    let drained = procfs::wait_blocked_reading(child.id(), reg.port(), Duration::from_secs(60));
    assert!(drained, "the client never finished reading the bytes sent before the stall");
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    // The stalled read returns once the server lets go; the client must then stop, not retry.
    std::thread::sleep(Duration::from_millis(200));
    reg.release_stalls();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr: {stderr}");
    assert!(stderr.contains("error: interrupted"), "stderr: {stderr}");
    assert_eq!(reg.blob_requests("test/sigint", &layer.digest).len(), 1, "retried after Ctrl-C:\n{}", reg.log_summary());
    let partial = partial_path(&env, &layer.digest);
    let kept = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert_eq!(kept, STALL, "every received byte must be in the partial");

    reg.clear_faults(&layer.digest);
    let mark = reg.log().len();
    env.ok(&strs(&fetch_args(&env, &[], &img.reference)));
    assert_image_stored(&env, &img);
    let resumed: Vec<Req> = reg.log()[mark..].iter().filter(|r| r.path == blob_url && r.method == "GET").cloned().collect();
    assert_eq!(resumed.len(), 1, "{}", reg.log_summary());
    assert_eq!(resumed[0].range_start(), Some(STALL), "the rerun must resume at byte {STALL}");
}

/// Issue 11, `--retry-timeout`: a blob cut on every try, each try bringing new bytes, would go
/// on for as long as it takes; the deadline ends it with one line naming image and blob.
#[test]
fn retry_timeout_ends_a_blob_that_keeps_failing_despite_progress() {
    let reg = FakeRegistry::start();
    // 2 MB in 10 kB steps is 200 tries; 50 ms between tries makes that 10 s at the least.
    let img = reg.add_image("test/trickle", "v1", &[2_000_000]);
    let layer = img.layers[0].clone();
    reg.cut_after(&layer.digest, 10_000, u32::MAX);
    let env = Env::new();
    let args = fetch_args(&env, &["--retry-timeout", "3s"], &img.reference);
    let out = env.cmd().env("OCIBUNDLE_RETRY_BASE_MS", "50").args(strs(&args)).output().unwrap();
    let line = crate::harness::cmd::error_line(&strs(&args), &out);
    assert!(line.contains(&img.reference) && line.contains(&layer.digest), "error does not name image and blob: {line}");
    assert!(line.contains("--retry-timeout 3s"), "error does not say the deadline ended it: {line}");
    let starts: Vec<u64> = gets(&reg.blob_requests("test/trickle", &layer.digest)).iter().map(|r| r.range_start().unwrap_or(0)).collect();
    assert!(starts.len() > 6, "no more tries than the no-progress budget (1 + 5) allows: {starts:?}");
    assert!(starts.windows(2).all(|w| w[1] > w[0]), "every try resumed further on: {starts:?}");
    assert!(!env.blob_path(&layer.digest).exists());
}

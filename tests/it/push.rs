//! Owns the `ocibundle push` tests: real registries (round trip, naming, rewrites, bundles, dry run, auth, TLS) and the in-process fake registry (mounts, idempotence, cut and refused uploads, resume, bounded retries).
//!
//! Each test starts its own registries. Sources are filled with `fetch` (or `bundle` /
//! `import`), then pushed into a second registry; what arrived is checked with skopeo and
//! `Docker-Content-Digest` (real registry) or the fake registry's state and request log.
//! Expected values come from the registries (served manifest bytes and their sha256), the
//! images the test built, and docs/cli.md (`push`: naming rule, counts, errors). Blob
//! counts cover configs and layers, as for `fetch`. No test asserts on timing.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::bundles::{Layer, add_image_with, layer, volume};
use crate::harness::cmd::{Env, error_line, fails, s, sha256, text, tool};
use crate::harness::fakereg::{Auth, FakeRegistry, Req, TestImage};
use crate::harness::fixtures::{self, PushMode, Pushed, push_one};
use crate::harness::registry::{Registry, Variant};

// ---------------------------------------------------------------------------------------------
// helpers

fn as_u64(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned number: {v}"))
}

/// The `images[]` entry of a push report whose `source` is `source`.
fn image<'a>(v: &'a Value, source: &str) -> &'a Value {
    v["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images array: {v}"))
        .iter()
        .find(|i| i["source"] == source)
        .unwrap_or_else(|| panic!("no image with source {source} in {v}"))
}

const COUNT_FIELDS: [&str; 6] = [
    "pushed_bytes",
    "mounted_bytes",
    "present_bytes",
    "pushed_blobs",
    "mounted_blobs",
    "present_blobs",
];

/// The six counters of an image (or of the whole report).
fn counts(v: &Value) -> [u64; 6] {
    COUNT_FIELDS.map(|f| as_u64(&v[f]))
}

/// Shape of a push report: every counter present, top-level counters are the sums of the
/// images', and each image's pushed + mounted + present = `want[source]` (bytes, blobs).
fn assert_report(v: &Value, want: &BTreeMap<String, (u64, u64)>) {
    let imgs = v["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images array: {v}"));
    assert_eq!(imgs.len(), want.len(), "image count in {v}");
    let mut sum = [0u64; 6];
    for i in imgs {
        let c = counts(i);
        for k in 0..6 {
            sum[k] += c[k];
        }
        let src = i["source"].as_str().unwrap();
        let (bytes, blobs) = want
            .get(src)
            .unwrap_or_else(|| panic!("unexpected image {src} in {v}"));
        assert_eq!(
            c[0] + c[1] + c[2],
            *bytes,
            "{src}: pushed + mounted + present bytes = its config and layer bytes: {i}"
        );
        assert_eq!(
            c[3] + c[4] + c[5],
            *blobs,
            "{src}: pushed + mounted + present blobs = its configs and layers: {i}"
        );
    }
    assert_eq!(
        counts(v),
        sum,
        "top-level counters are the sums of the images': {v}"
    );
}

/// Every image's `source -> target` is the result of one `mapping` entry read as a prefix
/// rule (`--to REG/PFX` keeps the repository path and drops the source registry; a
/// `--rewrite` rule is one as given).
fn assert_mapping_explains(v: &Value) {
    let rules: Vec<(String, String)> = v["mapping"]
        .as_array()
        .unwrap_or_else(|| panic!("no mapping array: {v}"))
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap().to_string(),
                m["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!rules.is_empty(), "empty mapping: {v}");
    for i in v["images"].as_array().unwrap() {
        let (src, tgt) = (i["source"].as_str().unwrap(), i["target"].as_str().unwrap());
        assert!(
            rules.iter().any(|(f, t)| src
                .strip_prefix(f.as_str())
                .is_some_and(|rest| format!("{t}{rest}") == tgt)),
            "no mapping entry turns {src} into {tgt}: {:?}",
            rules
        );
    }
}

/// One text line `SOURCE -> TARGET DIGEST pushed B mounted B present B` (or, dry run,
/// `... would push B mount B skip B`).
#[derive(Debug, PartialEq, Eq)]
struct Line {
    source: String,
    target: String,
    digest: String,
    bytes: [u64; 3],
}

fn parse_lines(out: &str, dry_run: bool) -> Vec<Line> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let words: &[&str] = if dry_run {
                &["would", "push", "mount", "skip"]
            } else {
                &["pushed", "mounted", "present"]
            };
            let ok = if dry_run {
                w.len() == 11
                    && w[1] == "->"
                    && w[4] == words[0]
                    && w[5] == words[1]
                    && w[7] == words[2]
                    && w[9] == words[3]
            } else {
                w.len() == 10
                    && w[1] == "->"
                    && w[4] == words[0]
                    && w[6] == words[1]
                    && w[8] == words[2]
            };
            assert!(ok, "push output line does not follow the contract: {l:?}");
            let n = |i: usize| {
                w[i].parse::<u64>()
                    .unwrap_or_else(|_| panic!("not a byte count in {l:?}"))
            };
            let bytes = if dry_run {
                [n(6), n(8), n(10)]
            } else {
                [n(5), n(7), n(9)]
            };
            Line {
                source: w[0].into(),
                target: w[2].into(),
                digest: w[3].into(),
                bytes,
            }
        })
        .collect()
}

/// The config and layer blobs (digest -> size) of what `reg` serves for `repo@digest`,
/// through every child of an index.
fn served_content(reg: &Registry, repo: &str, digest: &str) -> BTreeMap<String, u64> {
    let raw = reg.raw_manifest(&format!("{}/{repo}@{digest}", reg.host()));
    assert_eq!(sha256(&raw), digest);
    let m: Value = serde_json::from_slice(&raw).unwrap();
    let mut out = BTreeMap::new();
    if let Some(children) = m["manifests"].as_array() {
        for c in children {
            out.extend(served_content(reg, repo, c["digest"].as_str().unwrap()));
        }
    } else {
        out.insert(
            m["config"]["digest"].as_str().unwrap().to_string(),
            as_u64(&m["config"]["size"]),
        );
        for l in m["layers"].as_array().unwrap() {
            out.insert(
                l["digest"].as_str().unwrap().to_string(),
                as_u64(&l["size"]),
            );
        }
    }
    out
}

/// (bytes, blobs) of a pushed fixture's configs and layers, from the registry serving it.
fn want_of(reg: &Registry, p: &Pushed) -> (u64, u64) {
    let c = served_content(reg, &p.repo, &p.digest);
    (c.values().sum(), c.len() as u64)
}

/// (bytes, blobs) of a fake-registry image's config and layers.
fn want_fake(i: &TestImage) -> (u64, u64) {
    (
        i.blobs().iter().map(|b| b.size).sum(),
        i.blobs().len() as u64,
    )
}

/// sha256 of the manifest `reg` serves for `reference` (no platform resolution).
fn served_digest(reg: &Registry, reference: &str) -> String {
    sha256(&reg.raw_manifest(reference))
}

/// `curl` GET of `path` on a real registry (creds and CA as needed), parsed as JSON.
fn registry_json(reg: &Registry, path: &str) -> Value {
    let mut c = Command::new("curl");
    c.args(["-s", "-f", "--max-time", "10", "--noproxy", "*"]);
    if reg.variant.auth() {
        c.arg("-u").arg(reg.creds());
    }
    if reg.variant.tls() {
        c.arg("--cacert").arg(reg.cert_dir().join("ca.crt"));
    }
    c.arg(format!("{}{path}", reg.url()));
    let out = c.output().expect("spawn curl");
    assert!(out.status.success(), "curl {path} failed ({})", out.status);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{path}: not JSON ({e})"))
}

/// Repositories and their tags, as the registry lists them.
fn catalog_and_tags(reg: &Registry) -> BTreeMap<String, BTreeSet<String>> {
    let cat = registry_json(reg, "/v2/_catalog");
    let mut out = BTreeMap::new();
    for r in cat["repositories"].as_array().unwrap() {
        let r = r.as_str().unwrap();
        let t = registry_json(reg, &format!("/v2/{r}/tags/list"));
        let tags = t["tags"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        out.insert(r.to_string(), tags);
    }
    out
}

/// `skopeo copy --all` of `reference` out of `reg` into a `dir:` works.
fn assert_skopeo_copies(reg: &Registry, reference: &str) {
    let out = tempfile::tempdir().unwrap();
    let dest = format!("dir:{}", out.path().join("img").display());
    let src = format!("docker://{reference}");
    let mut args: Vec<String> = vec!["copy".into(), "--quiet".into(), "--all".into()];
    args.extend(reg.skopeo_flags("src"));
    args.push(src);
    args.push(dest);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    tool("skopeo", &a);
    assert!(
        out.path().join("img/manifest.json").exists(),
        "skopeo copy of {reference} wrote no manifest.json"
    );
}

/// Requests in `log` after position `mark`.
fn since(log: &[Req], mark: usize) -> &[Req] {
    &log[mark.min(log.len())..]
}

/// Writes that carry or mount blob data (`POST`/`PATCH`/`PUT`/`DELETE` on `/blobs/uploads/`).
fn blob_writes(reqs: &[Req]) -> Vec<&Req> {
    reqs.iter()
        .filter(|r| r.is_write() && r.is_upload())
        .collect()
}

fn render(reqs: &[Req]) -> String {
    reqs.iter()
        .map(|r| {
            let q: Vec<String> = r.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "{} {}{}{} cr={:?} recv={} -> {}{}\n",
                r.method,
                r.path,
                if q.is_empty() { "" } else { "?" },
                q.join("&"),
                r.content_range,
                r.body_received,
                r.status,
                if r.cut { " (cut)" } else { "" }
            )
        })
        .collect()
}

/// Digests of the blobs a logged write request names (`?digest=`, `?mount=`).
fn named_digest(r: &Req) -> Option<&str> {
    r.query_value("digest").or(r.query_value("mount"))
}

// ---------------------------------------------------------------------------------------------
// 1. real registry round trip, naming rule, rewrites

/// Fixtures (a multi-arch index with `--all-platforms`, Docker schema2, zstd, two images
/// sharing a layer) from registry A into a store, `push --all --to B/mirror`: B serves every
/// manifest byte for byte (same digest), skopeo copies everything back out, the shared
/// layer is mounted, and a second push finds everything present.
#[test]
fn push_real_round_trip_all_fixtures() {
    let a = Registry::start(Variant::Plain);
    let b = Registry::start(Variant::Plain);
    let fx: Vec<Pushed> = ["simple", "schema2", "zstd", "multi", "shared"]
        .iter()
        .map(|n| push_one(&a, n))
        .collect();
    let env = Env::new();
    let singles: Vec<&str> = fx
        .iter()
        .filter(|p| p.repo != "test/multi")
        .map(|p| p.reference.as_str())
        .collect();
    let mut args = vec!["fetch"];
    args.extend(&singles);
    env.ok(&args);
    let multi = fx.iter().find(|p| p.repo == "test/multi").unwrap();
    env.ok(&["fetch", "--all-platforms", &multi.reference]);

    let to = format!("{}/mirror", b.host());
    let v = env.json(&["push", "--all", "--to", &to]);
    assert_eq!(v["dry_run"], false, "{v}");
    let want: BTreeMap<String, (u64, u64)> = fx
        .iter()
        .map(|p| (p.reference.clone(), want_of(&a, p)))
        .collect();
    assert_report(&v, &want);
    assert_mapping_explains(&v);
    for p in &fx {
        let i = image(&v, &p.reference);
        let target = format!("{}/mirror/{}:v1", b.host(), p.repo);
        assert_eq!(
            i["target"],
            target.as_str(),
            "--to keeps the repository path, drops the source registry: {i}"
        );
        assert_eq!(i["digest"], p.digest.as_str(), "{i}");
        assert_eq!(
            served_digest(&b, &target),
            p.digest,
            "B serves {target} byte for byte"
        );
        assert_eq!(
            b.content_digest(&format!("mirror/{}", p.repo), "v1"),
            p.digest
        );
        assert_eq!(as_u64(&i["present_bytes"]), 0, "nothing was in B: {i}");
        assert_skopeo_copies(&b, &target);
    }
    // Every child of the index is in B by digest.
    let idx: Value =
        serde_json::from_slice(&b.raw_manifest(&format!("{to}/test/multi:v1"))).unwrap();
    let children = idx["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    for c in children {
        let d = c["digest"].as_str().unwrap();
        assert_eq!(served_digest(&b, &format!("{to}/test/multi@{d}")), d);
    }
    // simple and shared share their first layer: one of the two repositories mounts it.
    let simple = fx.iter().find(|p| p.repo == "test/simple").unwrap();
    let l1 = &simple.image.layers[0];
    assert_eq!(
        as_u64(&v["mounted_blobs"]),
        1,
        "the shared layer is mounted once: {v}"
    );
    assert_eq!(as_u64(&v["mounted_bytes"]), l1.size, "{v}");
    assert_eq!(as_u64(&v["present_bytes"]), 0, "{v}");

    // Again: nothing to send.
    let v2 = env.json(&["push", "--all", "--to", &to]);
    assert_report(&v2, &want);
    assert_eq!(
        as_u64(&v2["pushed_bytes"]),
        0,
        "second push uploads nothing: {v2}"
    );
    assert_eq!(
        as_u64(&v2["mounted_bytes"]),
        0,
        "second push mounts nothing: {v2}"
    );
    assert_eq!(
        as_u64(&v2["present_bytes"]),
        want.values().map(|w| w.0).sum::<u64>(),
        "{v2}"
    );
    for p in &fx {
        assert_eq!(image(&v2, &p.reference)["digest"], p.digest.as_str());
    }
}

/// `--to REG` without a prefix, `--rewrite FROM=TO` (text and JSON), rules tried in order
/// before `--to`, and `--to` for what no rule maps.
#[test]
fn push_real_naming_rule_and_rewrites() {
    let a = Registry::start(Variant::Plain);
    let b = Registry::start(Variant::Plain);
    let fx: Vec<Pushed> = ["simple", "zstd", "multi", "shared", "schema2"]
        .iter()
        .map(|n| push_one(&a, n))
        .collect();
    let p = |repo: &str| fx.iter().find(|p| p.repo == repo).unwrap();
    let env = Env::new();
    let mut args = vec!["fetch", "--all-platforms"];
    args.extend(fx.iter().map(|p| p.reference.as_str()));
    env.ok(&args);
    let (ha, hb) = (a.host(), b.host());

    // --to REGISTRY (no prefix), text output.
    let out = env.ok(&["push", "--to", &hb, &p("test/simple").reference]);
    let lines = parse_lines(&out, false);
    let want_target = format!("{hb}/test/simple:v1");
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0].source, p("test/simple").reference);
    assert_eq!(lines[0].target, want_target);
    assert_eq!(lines[0].digest, p("test/simple").digest);
    assert_eq!(
        lines[0].bytes.iter().sum::<u64>(),
        want_of(&a, p("test/simple")).0,
        "{out}"
    );
    assert_eq!(served_digest(&b, &want_target), p("test/simple").digest);

    // --rewrite, text: the mapping shows in each line.
    let rule = format!("{ha}/test/={hb}/other/");
    let out = env.ok(&[
        "push",
        "--rewrite",
        &rule,
        &p("test/zstd").reference,
        &p("test/multi").reference,
    ]);
    let lines = parse_lines(&out, false);
    assert_eq!(lines.len(), 2, "{out}");
    for name in ["zstd", "multi"] {
        let src = &p(&format!("test/{name}")).reference;
        let l = lines
            .iter()
            .find(|l| &l.source == src)
            .unwrap_or_else(|| panic!("no line for {src}: {out}"));
        assert_eq!(l.target, format!("{hb}/other/{name}:v1"), "{out}");
        assert_eq!(l.digest, p(&format!("test/{name}")).digest);
        assert_eq!(served_digest(&b, &l.target), l.digest);
    }

    // --rewrite, JSON: rules in order (the first match wins), --to for the rest.
    let r1 = format!("{ha}/test/schema2:={hb}/renamed/s2:");
    let r2 = format!("{ha}/test/s={hb}/second/s");
    let v = env.json(&[
        "push",
        "--rewrite",
        &r1,
        "--rewrite",
        &r2,
        "--to",
        &format!("{hb}/fallback"),
        &p("test/schema2").reference,
        &p("test/shared").reference,
        &p("test/zstd").reference,
    ]);
    let want: BTreeMap<String, (u64, u64)> = ["test/schema2", "test/shared", "test/zstd"]
        .iter()
        .map(|r| (p(r).reference.clone(), want_of(&a, p(r))))
        .collect();
    assert_report(&v, &want);
    assert_mapping_explains(&v);
    for (repo, target) in [
        ("test/schema2", format!("{hb}/renamed/s2:v1")),
        ("test/shared", format!("{hb}/second/shared:v1")),
        ("test/zstd", format!("{hb}/fallback/test/zstd:v1")),
    ] {
        let i = image(&v, &p(repo).reference);
        assert_eq!(i["target"], target.as_str(), "{v}");
        assert_eq!(i["digest"], p(repo).digest.as_str());
        assert_eq!(served_digest(&b, &target), p(repo).digest, "{target}");
    }
    let mapping = v["mapping"].to_string();
    for r in [&r1, &r2] {
        let (f, t) = r.split_once('=').unwrap();
        assert!(
            v["mapping"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["from"] == f && m["to"] == t),
            "--rewrite {r} is not in the JSON mapping: {mapping}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. idempotence (fake registry: the request log)

/// The same images pushed twice: the second run reports nothing pushed and sends no blob
/// data (no POST/PATCH/PUT on `/blobs/uploads/`), only existence checks.
#[test]
fn push_twice_second_run_sends_no_blobs() {
    let src = FakeRegistry::start();
    let dst = FakeRegistry::start();
    let i1 = src.add_image("app/one", "v1", &[300_000, 20_000]);
    let i2 = src.add_image("app/two", "v2", &[50_000]);
    let env = Env::new();
    env.ok(&["fetch", &i1.reference, &i2.reference]);
    let to = format!("{}/m", dst.host());
    let want: BTreeMap<String, (u64, u64)> = [&i1, &i2]
        .iter()
        .map(|i| (i.reference.clone(), want_fake(i)))
        .collect();

    let v1 = env.json(&["push", "--all", "--to", &to]);
    assert_report(&v1, &want);
    assert_eq!(
        as_u64(&v1["pushed_bytes"]),
        want.values().map(|w| w.0).sum::<u64>(),
        "{v1}"
    );
    for i in [&i1, &i2] {
        let repo = format!("m/{}", i.repo);
        assert_eq!(
            dst.tags(&repo),
            vec![(i.tag.clone(), i.manifest_digest.clone())]
        );
        assert_eq!(
            dst.manifest(&repo, &i.tag).unwrap().1,
            i.manifest,
            "manifest bytes pushed as they are"
        );
        for b in i.blobs() {
            assert!(dst.has_blob(&repo, &b.digest), "{repo} lacks {}", b.digest);
        }
    }
    assert!(
        dst.open_uploads().is_empty(),
        "unfinished uploads left: {:?}",
        dst.open_uploads()
    );

    let mark = dst.log().len();
    let v2 = env.json(&["push", "--all", "--to", &to]);
    assert_report(&v2, &want);
    assert_eq!(as_u64(&v2["pushed_bytes"]), 0, "{v2}");
    assert_eq!(as_u64(&v2["pushed_blobs"]), 0, "{v2}");
    assert_eq!(as_u64(&v2["mounted_bytes"]), 0, "{v2}");
    assert_eq!(
        as_u64(&v2["present_bytes"]),
        as_u64(&v1["pushed_bytes"]),
        "{v2}"
    );
    let log = dst.log();
    let run2 = since(&log, mark);
    assert!(
        blob_writes(run2).is_empty(),
        "second push wrote blobs:\n{}",
        render(run2)
    );
    let received: u64 = run2
        .iter()
        .filter(|r| r.is_upload())
        .map(|r| r.body_received)
        .sum();
    assert_eq!(received, 0, "{}", render(run2));
    assert!(
        run2.iter()
            .any(|r| r.method == "HEAD" && r.path.contains("/blobs/sha256:")),
        "the second push never asked whether blobs exist:\n{}",
        render(run2)
    );
    // Manifests and tags are there too: nothing at all is written again.
    let writes: Vec<&Req> = run2.iter().filter(|r| r.is_write()).collect();
    assert!(
        writes.is_empty(),
        "second push wrote again:\n{}",
        render(run2)
    );
}

// ---------------------------------------------------------------------------------------------
// 3. cross-repository mounts

/// Two images sharing a layer, pushed into different repositories in one run: the layer is
/// uploaded once and mounted into the other repository (`POST ?mount=&from=` answered 201).
#[test]
fn push_shared_layer_is_mounted_across_repositories() {
    let src = FakeRegistry::start();
    let dst = FakeRegistry::start();
    let shared: Layer = layer("push-mount-shared", 400_000);
    let i1 = add_image_with(
        &src,
        "team/front",
        "v1",
        &[&shared, &layer("push-mount-1", 30_000)],
    );
    let i2 = add_image_with(
        &src,
        "team/back",
        "v1",
        &[&shared, &layer("push-mount-2", 40_000)],
    );
    let sd = i1.layers[0].digest.clone();
    assert_eq!(sd, i2.layers[0].digest);
    let env = Env::new();
    env.ok(&["fetch", &i1.reference, &i2.reference]);
    let v = env.json(&[
        "push",
        &i1.reference,
        &i2.reference,
        "--to",
        &format!("{}/mirror", dst.host()),
    ]);
    let want: BTreeMap<String, (u64, u64)> = [&i1, &i2]
        .iter()
        .map(|i| (i.reference.clone(), want_fake(i)))
        .collect();
    assert_report(&v, &want);
    assert!(as_u64(&v["mounted_bytes"]) > 0, "nothing mounted: {v}");
    assert_eq!(as_u64(&v["mounted_bytes"]), shared.1.len() as u64, "{v}");
    assert_eq!(as_u64(&v["mounted_blobs"]), 1, "{v}");

    let log = dst.log();
    let mounts: Vec<&Req> = log
        .iter()
        .filter(|r| {
            r.method == "POST" && r.query_value("mount") == Some(sd.as_str()) && r.status == 201
        })
        .collect();
    assert_eq!(
        mounts.len(),
        1,
        "want one POST ?mount={sd} answered 201:\n{}",
        render(&log)
    );
    let from = mounts[0].query_value("from").unwrap();
    assert!(
        from == "mirror/team/front" || from == "mirror/team/back",
        "mounted from {from}"
    );
    let uploads_of_shared = log
        .iter()
        .filter(|r| {
            r.method == "PUT" && r.query_value("digest") == Some(sd.as_str()) && r.status == 201
        })
        .count();
    assert_eq!(
        uploads_of_shared,
        1,
        "the shared layer is uploaded exactly once:\n{}",
        render(&log)
    );
    assert_eq!(
        dst.bytes_received_for(&sd),
        shared.1.len() as u64,
        "shared layer bytes received"
    );
    for i in [&i1, &i2] {
        let repo = format!("mirror/{}", i.repo);
        assert!(dst.has_blob(&repo, &sd));
        assert_eq!(
            dst.tags(&repo),
            vec![("v1".to_string(), i.manifest_digest.clone())]
        );
        // The image that got the mount reports it; the other pushed it.
        let im = image(&v, &i.reference);
        if repo
            == mounts[0]
                .path
                .trim_start_matches("/v2/")
                .trim_end_matches("/blobs/uploads/")
        {
            assert_eq!(as_u64(&im["mounted_bytes"]), shared.1.len() as u64, "{im}");
        } else {
            assert_eq!(as_u64(&im["mounted_bytes"]), 0, "{im}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. from a bundle

/// `bundle` then `push --from BUNDLE` (an empty store, any volume of a split bundle) into
/// a fresh registry gives the registry's digests; a delta bundle without its base in the
/// store fails naming the missing blob, and works once the base is imported.
#[test]
fn push_from_bundle_volumes_and_delta() {
    let a = Registry::start(Variant::Plain);
    let b = Registry::start(Variant::Plain);
    let fx: Vec<Pushed> = ["simple", "shared", "multi", "zstd"]
        .iter()
        .map(|n| push_one(&a, n))
        .collect();
    let p = |repo: &str| fx.iter().find(|p| p.repo == repo).unwrap();
    let env = Env::new();
    let mut args = vec!["fetch", "--all-platforms"];
    args.extend(fx.iter().map(|p| p.reference.as_str()));
    env.ok(&args);
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.obun");
    env.ok(&["bundle", "-o", s(&full), "--all"]);

    let offline = Env::new();
    let v = offline.json(&[
        "push",
        "--from",
        s(&full),
        "--all",
        "--to",
        &format!("{}/site", b.host()),
    ]);
    let want: BTreeMap<String, (u64, u64)> = fx
        .iter()
        .map(|p| (p.reference.clone(), want_of(&a, p)))
        .collect();
    assert_report(&v, &want);
    for p in &fx {
        let target = format!("{}/site/{}:v1", b.host(), p.repo);
        assert_eq!(image(&v, &p.reference)["target"], target.as_str());
        assert_eq!(served_digest(&b, &target), p.digest, "{target}");
    }
    assert_skopeo_copies(&b, &format!("{}/site/test/multi:v1", b.host()));

    // A split bundle: push from its second volume.
    let split = dir.path().join("split.obun");
    env.ok(&[
        "bundle",
        "-o",
        s(&split),
        "--split-size",
        "4200",
        &p("test/simple").reference,
        &p("test/zstd").reference,
    ]);
    let vol2 = volume(&split, 2);
    assert!(vol2.exists(), "no second volume");
    let o = Env::new();
    o.ok(&[
        "push",
        "--from",
        s(&vol2),
        "--all",
        "--to",
        &format!("{}/vol", b.host()),
    ]);
    for r in ["test/simple", "test/zstd"] {
        assert_eq!(
            served_digest(&b, &format!("{}/vol/{r}:v1", b.host())),
            p(r).digest
        );
    }

    // Delta: shared's first layer is simple's, carried by the base only.
    let base = dir.path().join("base.obun");
    let delta = dir.path().join("delta.obun");
    env.ok(&["bundle", "-o", s(&base), &p("test/simple").reference]);
    env.ok(&[
        "bundle",
        "-o",
        s(&delta),
        "--since",
        s(&base),
        &p("test/shared").reference,
    ]);
    let l1 = p("test/simple").image.layers[0].digest.clone();
    assert_eq!(p("test/shared").image.layers[0].digest, l1);
    let lone = Env::new();
    let to = format!("{}/delta", b.host());
    let e = fails(&lone, &["push", "--from", s(&delta), "--all", "--to", &to]);
    eprintln!("{e}");
    assert!(
        e.contains(&l1),
        "push of a delta without its base does not name the missing blob {l1}: {e}"
    );
    lone.ok(&["import", s(&base)]);
    let v = lone.json(&["push", "--from", s(&delta), "--all", "--to", &to]);
    assert_eq!(
        image(&v, &p("test/shared").reference)["digest"],
        p("test/shared").digest.as_str()
    );
    assert_eq!(
        served_digest(&b, &format!("{to}/test/shared:v1")),
        p("test/shared").digest
    );
}

// ---------------------------------------------------------------------------------------------
// 5. dry run

/// `--dry-run` sends no write request and changes nothing (fake registry: log and state),
/// its plan (text and JSON) says what will be skipped, mounted and pushed, and the real
/// push then does exactly that.
#[test]
fn push_dry_run_changes_nothing_and_matches_the_push() {
    let src = FakeRegistry::start();
    let dst = FakeRegistry::start();
    let shared: Layer = layer("push-dry-shared", 200_000);
    let i1 = add_image_with(
        &src,
        "dry/one",
        "v1",
        &[&shared, &layer("push-dry-1", 10_000)],
    );
    let i2 = add_image_with(
        &src,
        "dry/two",
        "v1",
        &[&shared, &layer("push-dry-2", 20_000)],
    );
    let i3 = src.add_image("dry/three", "v1", &[5_000]);
    let env = Env::new();
    env.ok(&["fetch", &i1.reference, &i2.reference, &i3.reference]);
    let to = format!("{}/m", dst.host());
    // i1 is already there.
    env.ok(&["push", &i1.reference, "--to", &to]);
    let repos_before = dst.repos();
    let tags_before: Vec<_> = repos_before.iter().map(|r| dst.tags(r)).collect();
    let blobs_before: Vec<_> = repos_before.iter().map(|r| dst.blob_digests(r)).collect();

    let mark = dst.log().len();
    let plan = env.json(&["push", "--all", "--dry-run", "--to", &to]);
    let out = env.ok(&["push", "--all", "--dry-run", "--to", &to]);
    let log = dst.log();
    let run = since(&log, mark);
    let writes: Vec<&Req> = run
        .iter()
        .filter(|r| r.is_write() || r.is_upload())
        .collect();
    assert!(writes.is_empty(), "--dry-run sent writes:\n{}", render(run));
    assert_eq!(dst.repos(), repos_before, "--dry-run created repositories");
    assert_eq!(
        repos_before.iter().map(|r| dst.tags(r)).collect::<Vec<_>>(),
        tags_before
    );
    assert_eq!(
        repos_before
            .iter()
            .map(|r| dst.blob_digests(r))
            .collect::<Vec<_>>(),
        blobs_before
    );

    assert_eq!(plan["dry_run"], true, "{plan}");
    let want: BTreeMap<String, (u64, u64)> = [&i1, &i2, &i3]
        .iter()
        .map(|i| (i.reference.clone(), want_fake(i)))
        .collect();
    assert_report(&plan, &want);
    let p1 = image(&plan, &i1.reference);
    assert_eq!(
        as_u64(&p1["present_bytes"]),
        want_fake(&i1).0,
        "i1 is in the registry already: {p1}"
    );
    let p2 = image(&plan, &i2.reference);
    assert_eq!(
        as_u64(&p2["mounted_bytes"]),
        shared.1.len() as u64,
        "i2's shared layer would be mounted from i1's repository: {p2}"
    );
    assert_eq!(
        as_u64(&p2["pushed_bytes"]),
        want_fake(&i2).0 - shared.1.len() as u64,
        "{p2}"
    );
    let p3 = image(&plan, &i3.reference);
    assert_eq!(as_u64(&p3["pushed_bytes"]), want_fake(&i3).0, "{p3}");

    // Text plan: the same figures.
    let lines = parse_lines(&out, true);
    assert_eq!(lines.len(), 3, "{out}");
    for l in &lines {
        let j = image(&plan, &l.source);
        assert_eq!(j["target"], l.target.as_str());
        assert_eq!(j["digest"], l.digest.as_str());
        assert_eq!(
            l.bytes,
            [
                as_u64(&j["pushed_bytes"]),
                as_u64(&j["mounted_bytes"]),
                as_u64(&j["present_bytes"])
            ],
            "{out}\n{plan}"
        );
    }

    // The push does what the plan said.
    let done = env.json(&["push", "--all", "--to", &to]);
    assert_eq!(done["dry_run"], false);
    for i in [&i1, &i2, &i3] {
        assert_eq!(
            counts(image(&done, &i.reference)),
            counts(image(&plan, &i.reference)),
            "plan vs push for {}:\n{plan}\n{done}",
            i.reference
        );
        assert_eq!(
            dst.tags(&format!("m/{}", i.repo)),
            vec![("v1".to_string(), i.manifest_digest.clone())]
        );
    }
    assert_eq!(counts(&done), counts(&plan));
}

/// Against a real registry: `--dry-run` leaves catalog and tags as they were, and its
/// counts are those of the push that follows.
#[test]
fn push_dry_run_real_registry() {
    let a = Registry::start(Variant::Plain);
    let b = Registry::start(Variant::Plain);
    let fx: Vec<Pushed> = ["simple", "shared", "zstd"]
        .iter()
        .map(|n| push_one(&a, n))
        .collect();
    let env = Env::new();
    let mut args = vec!["fetch"];
    args.extend(fx.iter().map(|p| p.reference.as_str()));
    env.ok(&args);
    let to = format!("{}/dry", b.host());
    env.ok(&["push", &fx[2].reference, "--to", &to]);
    let before = catalog_and_tags(&b);
    assert_eq!(before.len(), 1, "{before:?}");
    let plan = env.json(&["push", "--all", "--dry-run", "--to", &to]);
    assert_eq!(
        catalog_and_tags(&b),
        before,
        "--dry-run changed the registry"
    );
    assert_eq!(plan["dry_run"], true);
    let want: BTreeMap<String, (u64, u64)> = fx
        .iter()
        .map(|p| (p.reference.clone(), want_of(&a, p)))
        .collect();
    assert_report(&plan, &want);
    assert_eq!(
        as_u64(&image(&plan, &fx[2].reference)["present_bytes"]),
        want_of(&a, &fx[2]).0,
        "{plan}"
    );
    assert_eq!(
        as_u64(&plan["mounted_blobs"]),
        1,
        "simple and shared share a layer: {plan}"
    );
    let done = env.json(&["push", "--all", "--to", &to]);
    for p in &fx {
        assert_eq!(
            counts(image(&done, &p.reference)),
            counts(image(&plan, &p.reference)),
            "{}:\n{plan}\n{done}",
            p.reference
        );
        assert_eq!(served_digest(&b, &format!("{to}/{}:v1", p.repo)), p.digest);
    }
    assert_eq!(catalog_and_tags(&b).len(), 3);
}

// ---------------------------------------------------------------------------------------------
// 6. auth and TLS

/// htpasswd registry: without credentials exit 1 naming the image (and no password in the
/// output); with `--creds` or `--authfile` it works. TLS registry: with `--cert-dir` it
/// works, without it fails. Bearer (fake): the token is asked for with a push scope.
#[test]
fn push_auth_and_tls() {
    let a = Registry::start(Variant::Plain);
    let simple = push_one(&a, "simple");
    let env = Env::new();
    env.ok(&["fetch", &simple.reference]);

    let auth = Registry::start(Variant::Auth);
    let to = format!("{}/sec", auth.host());
    let target = format!("{to}/test/simple:v1");
    let args = ["push", simple.reference.as_str(), "--to", to.as_str()];
    let o = env.run(&args);
    let e = error_line(&args, &o);
    eprintln!("{e}");
    assert!(
        e.contains(&target) || e.contains(&simple.reference),
        "error does not name the image: {e}"
    );
    assert!(!text(&o).contains(&auth.pass), "password in the output");
    assert!(catalog_and_tags(&auth).is_empty());

    let wrong = format!("{}:not-the-password", auth.user);
    let args = [
        "push",
        simple.reference.as_str(),
        "--to",
        to.as_str(),
        "--creds",
        wrong.as_str(),
    ];
    let o = env.run(&args);
    let e = error_line(&args, &o);
    eprintln!("{e}");
    assert!(
        e.contains(&target) || e.contains(&simple.reference),
        "error does not name the image: {e}"
    );
    assert!(
        !text(&o).contains("not-the-password"),
        "password in the output: {}",
        text(&o)
    );

    let creds = auth.creds();
    let o = env.run(&["push", &simple.reference, "--to", &to, "--creds", &creds]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(&auth.pass), "password in the output");
    assert_eq!(served_digest(&auth, &target), simple.digest);

    use base64::Engine as _;
    let authfile = env.path().join("auth.json");
    let token = base64::engine::general_purpose::STANDARD.encode(&creds);
    let mut auths = serde_json::Map::new();
    auths.insert(auth.host(), serde_json::json!({ "auth": token }));
    fs::write(&authfile, serde_json::json!({ "auths": auths }).to_string()).unwrap();
    let to2 = format!("{}/viafile", auth.host());
    env.ok(&[
        "push",
        &simple.reference,
        "--to",
        &to2,
        "--authfile",
        s(&authfile),
    ]);
    assert_eq!(
        served_digest(&auth, &format!("{to2}/test/simple:v1")),
        simple.digest
    );

    let tls = Registry::start(Variant::Tls);
    let to = format!("{}/tls", tls.host());
    let args = ["push", simple.reference.as_str(), "--to", to.as_str()];
    let o = env.run(&args);
    error_line(&args, &o);
    let certs = tls.cert_dir();
    env.ok(&[
        "push",
        &simple.reference,
        "--to",
        &to,
        "--cert-dir",
        s(&certs),
    ]);
    assert_eq!(
        served_digest(&tls, &format!("{to}/test/simple:v1")),
        simple.digest
    );

    let bearer = FakeRegistry::with_auth(Auth::bearer_with_creds("pusher", "bearer-pw-41c"));
    let to = format!("{}/tok", bearer.host());
    env.ok(&[
        "push",
        &simple.reference,
        "--to",
        &to,
        "--creds",
        "pusher:bearer-pw-41c",
    ]);
    assert_eq!(
        bearer.tags("tok/test/simple"),
        vec![("v1".to_string(), simple.digest.clone())]
    );
    let toks = bearer.token_requests();
    assert!(
        toks.iter().any(|t| t.status == 200
            && t.query_value("scope").is_some_and(
                |sc| sc.contains("repository:tok/test/simple:") && sc.contains("push")
            )),
        "no token asked for with a push scope:\n{}",
        bearer.log_summary()
    );
}

// ---------------------------------------------------------------------------------------------
// 7. faults (fake registry)

/// An image whose only layer is `size` bytes, fetched from its own fake registry into `env`.
fn big_image(env: &Env, size: usize) -> (FakeRegistry, TestImage) {
    let src = FakeRegistry::start();
    let img = src.add_image("big/img", "v1", &[size]);
    env.ok(&["fetch", &img.reference]);
    (src, img)
}

/// A blob above 8 MiB goes up with PATCH; cut in the middle of its PATCH, the upload goes on
/// from the offset the registry reports (`GET` on the upload URL, then a PATCH starting
/// there), without sending the first part again.
#[test]
fn push_cut_patch_resumes_from_registry_offset() {
    let env = Env::new();
    let (_src, img) = big_image(&env, 20_000_000);
    let layer = img.layers[0].clone();
    assert!(layer.size > 8 << 20);
    let dst = FakeRegistry::start();
    dst.cut_upload("PATCH", 6_000_000, 1);
    let v = env.json(&["push", &img.reference, "--to", &format!("{}/m", dst.host())]);
    assert_eq!(
        image(&v, &img.reference)["digest"],
        img.manifest_digest.as_str()
    );
    assert_eq!(
        dst.tags("m/big/img"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    assert!(dst.has_blob("m/big/img", &layer.digest));

    let log = dst.log();
    let cut = log
        .iter()
        .find(|r| r.cut)
        .unwrap_or_else(|| panic!("no cut request:\n{}", render(&log)));
    assert_eq!(cut.method, "PATCH", "{}", render(&log));
    assert_eq!(cut.body_received, 6_000_000);
    let uuid = cut.upload.clone().unwrap();
    let after: Vec<&Req> = log
        .iter()
        .skip_while(|r| !r.cut)
        .skip(1)
        .filter(|r| r.upload.as_deref() == Some(uuid.as_str()))
        .collect();
    let get = after
        .iter()
        .position(|r| r.method == "GET" && r.status == 204);
    assert!(
        get.is_some(),
        "no GET on the upload URL after the cut:\n{}",
        render(&log)
    );
    let resumed = after
        .iter()
        .find(|r| r.method == "PATCH" && r.status == 202);
    let resumed = resumed.unwrap_or_else(|| {
        panic!(
            "no PATCH on the same upload after the cut:\n{}",
            render(&log)
        )
    });
    assert_eq!(
        resumed.content_range_start(),
        Some(6_000_000),
        "the PATCH after the cut starts where the registry stands:\n{}",
        render(&log)
    );
    assert_eq!(
        dst.upload_digest(&uuid).as_deref(),
        Some(layer.digest.as_str()),
        "the resumed session became the layer"
    );
    let got = dst.bytes_received_for(&layer.digest);
    assert!(
        got < layer.size + layer.size / 4,
        "{got} bytes received for a {} byte layer (resume re-sent data):\n{}",
        layer.size,
        render(&log)
    );
    assert!(dst.open_uploads().is_empty(), "{:?}", dst.open_uploads());

    // The same from a bundle (the blob is read from the bundle file at the resume offset).
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("big.obun");
    env.ok(&["bundle", "-o", s(&bundle), &img.reference]);
    let offline = Env::new();
    let dst = FakeRegistry::start();
    dst.cut_upload("PATCH", 9_000_000, 1);
    offline.ok(&[
        "push",
        "--from",
        s(&bundle),
        "--all",
        "--to",
        &format!("{}/b", dst.host()),
    ]);
    assert_eq!(dst.tags("m/big/img"), vec![]);
    assert_eq!(
        dst.tags("b/big/img"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    let log = dst.log();
    assert!(log.iter().any(|r| r.cut), "{}", render(&log));
    assert!(
        log.iter().any(|r| r.method == "PATCH"
            && r.status == 202
            && r.content_range_start() == Some(9_000_000)),
        "no PATCH resuming at 9000000 (from the bundle):\n{}",
        render(&log)
    );
    let got = dst.bytes_received_for(&layer.digest);
    assert!(
        got < layer.size + layer.size / 4,
        "{got} bytes received for {}:\n{}",
        layer.size,
        render(&log)
    );
}

/// A monolithic PUT (blob below 8 MiB) cut mid-body is retried and the push succeeds.
#[test]
fn push_cut_monolithic_put_is_retried() {
    let env = Env::new();
    let (_src, img) = big_image(&env, 600_000);
    let dst = FakeRegistry::start();
    dst.cut_upload("PUT", 100_000, 2);
    env.ok(&["push", &img.reference, "--to", &format!("{}/m", dst.host())]);
    assert_eq!(
        dst.tags("m/big/img"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    let log = dst.log();
    assert_eq!(log.iter().filter(|r| r.cut).count(), 2, "{}", render(&log));
    let d = &img.layers[0].digest;
    let ok = log
        .iter()
        .filter(|r| {
            r.method == "PUT" && r.query_value("digest") == Some(d.as_str()) && r.status == 201
        })
        .count();
    assert_eq!(ok, 1, "{}", render(&log));
}

/// 429 and 503 a couple of times (blob existence check, upload start, final PUT): retried,
/// and the push succeeds.
#[test]
fn push_429_and_503_twice_then_ok() {
    let env = Env::new();
    let src = FakeRegistry::start();
    let img = src.add_image("busy/app", "v1", &[120_000, 3_000]);
    env.ok(&["fetch", &img.reference]);
    let dst = FakeRegistry::start();
    let l0 = img.layers[0].digest.clone();
    dst.upload_status("HEAD", &l0, 429, 2);
    dst.upload_status("POST", "*", 429, 2);
    dst.upload_status("PUT", &l0, 503, 2);
    let v = env.json(&["push", &img.reference, "--to", &format!("{}/m", dst.host())]);
    assert_eq!(
        image(&v, &img.reference)["digest"],
        img.manifest_digest.as_str()
    );
    assert_eq!(
        dst.tags("m/busy/app"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    let log = dst.log();
    let puts: Vec<u16> = log
        .iter()
        .filter(|r| r.method == "PUT" && r.query_value("digest") == Some(l0.as_str()))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        puts,
        vec![503, 503, 201],
        "PUT ?digest={l0} answers:\n{}",
        render(&log)
    );
    let heads: Vec<u16> = log
        .iter()
        .filter(|r| r.method == "HEAD" && r.path.ends_with(&l0))
        .map(|r| r.status)
        .collect();
    assert!(
        heads.starts_with(&[429, 429]) && heads.len() >= 3,
        "HEAD answers {heads:?}"
    );
    assert_eq!(
        log.iter()
            .filter(|r| r.method == "POST" && r.status == 429)
            .count(),
        2
    );
}

/// 500 forever on one blob's upload: the push fails after a bounded number of attempts
/// with one error line naming the blob and the image; a rerun (registry healthy again)
/// completes and does not send again any blob that arrived in the first run.
#[test]
fn push_500_forever_fails_bounded_then_rerun_sends_only_the_rest() {
    let env = Env::new();
    let src = FakeRegistry::start();
    let img = src.add_image("flaky/app", "v1", &[300_000, 100_000, 50_000]);
    env.ok(&["fetch", &img.reference]);
    let dst = FakeRegistry::start();
    let bad = img.layers[0].digest.clone();
    dst.upload_status("PUT", &bad, 500, u32::MAX);
    let to = format!("{}/m", dst.host());
    let target = format!("{to}/flaky/app:v1");
    let e = fails(&env, &["push", &img.reference, "--to", &to]);
    eprintln!("{e}");
    assert!(e.contains(&bad), "error does not name the blob {bad}: {e}");
    assert!(
        e.contains(&target) || e.contains(&img.reference),
        "error does not name the image: {e}"
    );
    let log = dst.log();
    let attempts = log
        .iter()
        .filter(|r| r.method == "PUT" && r.query_value("digest") == Some(bad.as_str()))
        .count();
    eprintln!("{attempts} attempts at PUT ?digest={bad}");
    assert!(
        (2..=12).contains(&attempts),
        "{attempts} attempts at PUT ?digest={bad} (want retries, bounded):\n{}",
        render(&log)
    );
    assert!(
        dst.tags("m/flaky/app").is_empty(),
        "a tag was pushed for an incomplete image"
    );

    let arrived: Vec<String> = img
        .blobs()
        .iter()
        .map(|b| b.digest.clone())
        .filter(|d| dst.has_blob("m/flaky/app", d))
        .collect();
    assert!(!arrived.contains(&bad));
    dst.clear_upload_faults();
    let mark = dst.log().len();
    let v = env.json(&["push", &img.reference, "--to", &to]);
    assert_eq!(
        image(&v, &img.reference)["digest"],
        img.manifest_digest.as_str()
    );
    assert_eq!(
        dst.tags("m/flaky/app"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    let log = dst.log();
    let run2 = since(&log, mark);
    for r in blob_writes(run2) {
        if let Some(d) = named_digest(r) {
            assert!(
                !arrived.iter().any(|a| a == d),
                "rerun sent {d} again although it had arrived:\n{}",
                render(run2)
            );
        }
    }
    let sent: u64 = run2
        .iter()
        .filter(|r| r.is_upload())
        .map(|r| r.body_received)
        .sum();
    let missing: u64 = img
        .blobs()
        .iter()
        .filter(|b| !arrived.contains(&b.digest))
        .map(|b| b.size)
        .sum();
    assert_eq!(
        sent,
        missing,
        "rerun sends exactly the blobs that had not arrived:\n{}",
        render(run2)
    );
    let present = as_u64(&image(&v, &img.reference)["present_bytes"]);
    let arrived_bytes: u64 = img
        .blobs()
        .iter()
        .filter(|b| arrived.contains(&b.digest))
        .map(|b| b.size)
        .sum();
    assert_eq!(present, arrived_bytes, "{v}");
}

/// A manifest the registry refuses: one error line with the registry's code and message,
/// naming the image; no tag. Also with a chosen status (403 DENIED) on the tag only.
#[test]
fn push_refused_manifest_shows_registry_error() {
    let env = Env::new();
    let src = FakeRegistry::start();
    let img = src.add_image("refused/app", "v1", &[10_000]);
    env.ok(&["fetch", &img.reference]);
    let dst = FakeRegistry::start();
    let to = format!("{}/m", dst.host());
    let target = format!("{to}/refused/app:v1");

    dst.refuse_manifests(
        "*",
        400,
        "MANIFEST_INVALID",
        "manifest invalid: fake registry says no",
        u32::MAX,
    );
    let e = fails(&env, &["push", &img.reference, "--to", &to]);
    eprintln!("{e}");
    assert!(
        e.contains("MANIFEST_INVALID"),
        "error does not show the registry's code: {e}"
    );
    assert!(
        e.contains("fake registry says no"),
        "error does not show the registry's message: {e}"
    );
    assert!(
        e.contains(&target) || e.contains(&img.reference),
        "error does not name the image: {e}"
    );
    assert!(dst.tags("m/refused/app").is_empty());
    let puts = dst
        .log()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .count();
    assert_eq!(
        puts,
        1,
        "a 400 is final, not retried:\n{}",
        dst.log_summary()
    );

    dst.clear_upload_faults();
    dst.refuse_manifests(
        "m/refused/app:v1",
        403,
        "DENIED",
        "requested access to the resource is denied: tag quota",
        u32::MAX,
    );
    let e = fails(&env, &["push", &img.reference, "--to", &to]);
    eprintln!("{e}");
    assert!(
        e.contains("DENIED") && e.contains("tag quota"),
        "error does not show the registry's code and message: {e}"
    );
    assert!(
        e.contains(&target) || e.contains(&img.reference),
        "error does not name the image: {e}"
    );
    assert!(dst.tags("m/refused/app").is_empty());
    // The manifest itself went in by digest before the tag was refused.
    assert!(
        dst.manifest("m/refused/app", &img.manifest_digest)
            .is_some(),
        "{}",
        dst.log_summary()
    );

    // Once the registry accepts it, a rerun only adds the tag: every blob is present.
    dst.clear_upload_faults();
    let mark = dst.log().len();
    let v = env.json(&["push", &img.reference, "--to", &to]);
    assert_eq!(as_u64(&v["pushed_bytes"]), 0, "{v}");
    assert_eq!(as_u64(&v["present_bytes"]), want_fake(&img).0, "{v}");
    assert_eq!(
        dst.tags("m/refused/app"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    let log = dst.log();
    let run = since(&log, mark);
    assert!(blob_writes(run).is_empty(), "{}", render(run));
}

/// A PATCH that can never get past 7 MB fails the run; the next run (registry healthy
/// again) picks up the same upload from the URL kept in the store: a GET on it, then a PATCH
/// from 7 MB, instead of starting again from byte 0.
#[test]
fn push_restart_resumes_the_kept_upload() {
    let env = Env::new();
    let (_src, img) = big_image(&env, 20_000_000);
    let layer = img.layers[0].clone();
    let dst = FakeRegistry::start();
    dst.cut_upload_at(7_000_000, u32::MAX);
    let to = format!("{}/m", dst.host());
    let e = fails(&env, &["push", &img.reference, "--to", &to]);
    eprintln!("{e}");
    assert!(
        e.contains(&layer.digest),
        "error does not name the blob: {e}"
    );
    let open = dst.open_uploads();
    assert_eq!(open.len(), 1, "{open:?}\n{}", dst.log_summary());
    let (uuid, _, held) = open[0].clone();
    assert_eq!(held, 7_000_000);
    let kept = env.store().join(".ocibundle/uploads");
    let kept_after_failure = fs::read_dir(&kept).map(|d| d.count()).unwrap_or(0);

    dst.clear_upload_faults();
    rerun_resumes(&env, &dst, &img, &to, &uuid, held);
    assert!(
        kept_after_failure > 0,
        "no upload URL was kept in {} after the failed run",
        kept.display()
    );
    assert_eq!(
        fs::read_dir(&kept).map(|d| d.count()).unwrap_or(0),
        0,
        "upload URL still kept after success"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. references

/// A rewrite or `--to` that gives an invalid reference (uppercase repository), or an image
/// no rule maps without `--to`, fails with a clear error before any request.
#[test]
fn push_invalid_target_fails_before_any_request() {
    let src = FakeRegistry::start();
    let img = src.add_image("test/simple", "v1", &[1_000]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let dst = FakeRegistry::start();

    let rule = format!("{}/test/={}/UPPER/", src.host(), dst.host());
    let e = fails(&env, &["push", "--rewrite", &rule, &img.reference]);
    eprintln!("{e}");
    assert!(
        e.contains(&img.reference),
        "error does not name the image: {e}"
    );
    assert!(
        e.contains("UPPER"),
        "error does not show the bad target: {e}"
    );

    let rule = format!("{}/nomatch/={}/x/", src.host(), dst.host());
    let e = fails(&env, &["push", "--rewrite", &rule, &img.reference]);
    eprintln!("{e}");
    assert!(
        e.contains(&img.reference),
        "error does not name the unmapped image: {e}"
    );

    let to = format!("{}/Mirror", dst.host());
    let args = ["push", "--to", to.as_str(), img.reference.as_str()];
    let o = env.run(&args);
    assert!(
        matches!(o.status.code(), Some(1) | Some(2)),
        "--to with an uppercase prefix: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Mirror"),
        "error does not show the bad target: {}",
        text(&o)
    );

    let absent = format!("{}/test/absent:v1", src.host());
    let e = fails(
        &env,
        &["push", "--to", &format!("{}/m", dst.host()), &absent],
    );
    eprintln!("{e}");
    assert!(
        e.contains(&absent),
        "error does not name the reference missing from the store: {e}"
    );

    assert!(
        dst.log().is_empty(),
        "requests before the target was known to be valid:\n{}",
        dst.log_summary()
    );
    assert_eq!(
        dst.non_http_connections(),
        0,
        "connections before the target was known to be valid"
    );
}

/// `--images FILE` and a digest-pinned reference: pushed by digest, without a tag.
#[test]
fn push_images_file_and_digest_reference() {
    let src = FakeRegistry::start();
    let i1 = src.add_image("pin/one", "v1", &[4_000]);
    let i2 = src.add_image("pin/two", "v2", &[5_000]);
    let pinned = format!("{}/{}@{}", src.host(), i1.repo, i1.manifest_digest);
    let env = Env::new();
    env.ok(&["fetch", &pinned, &i2.reference]);
    let list = env.path().join("images.txt");
    fs::write(&list, format!("# to push\n{pinned}\n\n{}\n", i2.reference)).unwrap();
    let dst = FakeRegistry::start();
    let v = env.json(&[
        "push",
        "--images",
        s(&list),
        "--to",
        &format!("{}/m", dst.host()),
    ]);
    let want: BTreeMap<String, (u64, u64)> = [
        (pinned.clone(), want_fake(&i1)),
        (i2.reference.clone(), want_fake(&i2)),
    ]
    .into();
    assert_report(&v, &want);
    assert_eq!(
        image(&v, &pinned)["target"],
        format!("{}/m/pin/one@{}", dst.host(), i1.manifest_digest).as_str()
    );
    assert!(dst.manifest("m/pin/one", &i1.manifest_digest).is_some());
    assert!(
        dst.tags("m/pin/one").is_empty(),
        "a digest reference got a tag: {:?}",
        dst.tags("m/pin/one")
    );
    assert_eq!(
        dst.tags("m/pin/two"),
        vec![("v2".to_string(), i2.manifest_digest.clone())]
    );
}

/// An existing tag pointing at something else is moved to the pushed image.
#[test]
fn push_moves_an_existing_tag() {
    let src = FakeRegistry::start();
    let img = src.add_image("app", "v1", &[3_000]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let dst = FakeRegistry::start();
    let old = dst.add_image("m/app", "v1", &[2_000]);
    assert_ne!(old.manifest_digest, img.manifest_digest);
    let v = env.json(&["push", &img.reference, "--to", &format!("{}/m", dst.host())]);
    assert_eq!(
        image(&v, &img.reference)["digest"],
        img.manifest_digest.as_str()
    );
    assert_eq!(
        dst.tags("m/app"),
        vec![("v1".to_string(), img.manifest_digest.clone())],
        "{}",
        dst.log_summary()
    );
}

/// A registry that never mounts (`POST ?mount=` answered 202): the blob is uploaded to the
/// second repository instead, and reported as pushed, not mounted.
#[test]
fn push_without_mount_support_uploads_instead() {
    let src = FakeRegistry::start();
    let shared: Layer = layer("push-nomount-shared", 100_000);
    let i1 = add_image_with(&src, "nm/one", "v1", &[&shared]);
    let i2 = add_image_with(
        &src,
        "nm/two",
        "v1",
        &[&shared, &layer("push-nomount-2", 1_000)],
    );
    let env = Env::new();
    env.ok(&["fetch", &i1.reference, &i2.reference]);
    let dst = FakeRegistry::start();
    dst.set_mounts(false);
    let v = env.json(&["push", "--all", "--to", &format!("{}/m", dst.host())]);
    let want: BTreeMap<String, (u64, u64)> = [&i1, &i2]
        .iter()
        .map(|i| (i.reference.clone(), want_fake(i)))
        .collect();
    assert_report(&v, &want);
    assert_eq!(as_u64(&v["mounted_bytes"]), 0, "{v}");
    assert_eq!(
        as_u64(&v["pushed_bytes"]),
        want.values().map(|w| w.0).sum::<u64>(),
        "{v}"
    );
    let sd = &i1.layers[0].digest;
    for repo in ["m/nm/one", "m/nm/two"] {
        assert!(dst.has_blob(repo, sd), "{repo} lacks the shared layer");
    }
    let log = dst.log();
    let puts = log
        .iter()
        .filter(|r| {
            r.method == "PUT" && r.query_value("digest") == Some(sd.as_str()) && r.status == 201
        })
        .count();
    assert_eq!(puts, 2, "{}", render(&log));
    assert_eq!(
        dst.tags("m/nm/two"),
        vec![("v1".to_string(), i2.manifest_digest.clone())]
    );
}

/// An image fetched for one platform out of an index: its manifest (the one the store's
/// reference names) is what the tag points at in the target.
#[test]
fn push_single_platform_pick_of_an_index() {
    let a = Registry::start(Variant::Plain);
    let b = Registry::start(Variant::Plain);
    let multi = push_one(&a, "multi");
    let env = Env::new();
    let f = env.json(&["fetch", "--platform", "linux/arm64/v8", &multi.reference]);
    let picked = f["images"][0]["digest"].as_str().unwrap().to_string();
    assert_ne!(picked, multi.digest);
    let to = format!("{}/one", b.host());
    let v = env.json(&["push", &multi.reference, "--to", &to]);
    assert_eq!(
        image(&v, &multi.reference)["digest"],
        picked.as_str(),
        "{v}"
    );
    let target = format!("{to}/test/multi:v1");
    assert_eq!(served_digest(&b, &target), picked);
    let (n, _) = want_of(
        &a,
        &Pushed {
            digest: picked.clone(),
            ..multi.clone()
        },
    );
    assert_eq!(
        as_u64(&image(&v, &multi.reference)["pushed_bytes"]),
        n,
        "{v}"
    );
    assert_skopeo_copies(&b, &target);
}

/// A TCP proxy on 127.0.0.1 in front of a local port that, once, closes the connection
/// `cut_after` bytes after the start of the first `PATCH` request the client sends.
struct CutProxy {
    port: u16,
    cut_done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutProxy {
    fn start(upstream: u16, cut_after: u64) -> CutProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let cut_done = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (cd, st) = (cut_done.clone(), stop.clone());
        std::thread::spawn(move || {
            let born = std::time::Instant::now();
            while !st.load(Ordering::SeqCst) && born.elapsed() < std::time::Duration::from_secs(300)
            {
                match l.accept() {
                    Ok((c, _)) => {
                        let cd = cd.clone();
                        std::thread::spawn(move || {
                            let _ = proxy_conn(c, upstream, cut_after, &cd);
                        });
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        CutProxy {
            port,
            cut_done,
            stop,
        }
    }
    fn cut(&self) -> bool {
        self.cut_done.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn proxy_conn(
    mut client: std::net::TcpStream,
    upstream: u16,
    cut_after: u64,
    cut_done: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::sync::atomic::Ordering;
    client.set_nonblocking(false)?;
    let timeout = Some(std::time::Duration::from_secs(60));
    client.set_read_timeout(timeout)?;
    let mut up = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
    up.set_read_timeout(timeout)?;
    let (mut c2, mut u2) = (client.try_clone()?, up.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut u2, &mut c2);
        let _ = c2.shutdown(Shutdown::Write);
    });
    let needle = b"PATCH /v2/";
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    let mut counted: Option<u64> = None;
    loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            let _ = up.shutdown(Shutdown::Write);
            return Ok(());
        }
        let chunk = &buf[..n];
        if counted.is_none() && !cut_done.load(Ordering::SeqCst) {
            let mut hay = tail.clone();
            hay.extend_from_slice(chunk);
            if hay.windows(needle.len()).any(|w| w == needle) {
                counted = Some(0);
            }
            tail = hay[hay.len().saturating_sub(needle.len())..].to_vec();
        }
        if let Some(c) = counted.as_mut() {
            let room = cut_after.saturating_sub(*c) as usize;
            if room <= chunk.len() && !cut_done.swap(true, Ordering::SeqCst) {
                up.write_all(&chunk[..room])?;
                let _ = client.shutdown(Shutdown::Both);
                let _ = up.shutdown(Shutdown::Both);
                return Ok(());
            }
            *c += chunk.len() as u64;
        }
        up.write_all(chunk)?;
    }
}

/// A blob above 8 MiB into a real registry (the PATCH path), directly and through a proxy
/// that cuts the connection in the middle of the PATCH: both pushes give the registry's
/// digest, whatever distribution answers about the cut upload.
#[test]
fn push_real_big_blob_patch_and_cut_through_proxy() {
    let a = Registry::start(Variant::Plain);
    let b = Registry::start(Variant::Plain);
    let dir = tempfile::tempdir().unwrap();
    let (layout, big) = fixtures::big_layout(&dir.path().join("layout"), 10_000_000, 77);
    assert!(big.layers[0].size > 8 << 20);
    let digest = fixtures::push(&a, &layout, "big", "test/big:v1", PushMode::Oci);
    let reference = format!("{}/test/big:v1", a.host());
    let env = Env::new();
    env.ok(&["fetch", &reference]);

    let to = format!("{}/direct", b.host());
    let v = env.json(&["push", &reference, "--to", &to]);
    assert_eq!(
        as_u64(&image(&v, &reference)["pushed_bytes"]),
        big.layers[0].size + big.config.as_ref().unwrap().size,
        "{v}"
    );
    assert_eq!(served_digest(&b, &format!("{to}/test/big:v1")), digest);
    assert_skopeo_copies(&b, &format!("{to}/test/big:v1"));

    let proxy = CutProxy::start(b.port(), 3_000_000);
    let via = format!("127.0.0.1:{}/cut", proxy.port);
    let o = env.run(&["push", &reference, "--to", &via]);
    assert!(
        o.status.success(),
        "push through the cutting proxy failed:\n{}\nregistry log:\n{}",
        text(&o),
        b.log()
    );
    assert!(proxy.cut(), "the proxy never saw a PATCH to cut");
    assert_eq!(
        served_digest(&b, &format!("{}/cut/test/big:v1", b.host())),
        digest
    );
}

/// A store blob whose bytes no longer match its digest: the push fails naming the blob,
/// and the image gets no tag in the registry.
#[test]
fn push_corrupt_store_blob_fails_naming_it() {
    let src = FakeRegistry::start();
    let img = src.add_image("rot/app", "v1", &[50_000]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let d = img.layers[0].digest.clone();
    let path = env
        .store()
        .join("blobs/sha256")
        .join(d.strip_prefix("sha256:").unwrap());
    let mut data = fs::read(&path).unwrap();
    data[1000] ^= 0x55;
    fs::write(&path, &data).unwrap();
    let dst = FakeRegistry::start();
    let e = fails(
        &env,
        &["push", &img.reference, "--to", &format!("{}/m", dst.host())],
    );
    eprintln!("{e}");
    assert!(
        e.contains(&d),
        "error does not name the corrupt blob {d}: {e}"
    );
    assert!(
        !dst.has_blob("m/rot/app", &d),
        "the corrupt blob was accepted"
    );
    assert!(dst.tags("m/rot/app").is_empty(), "{}", dst.log_summary());
}

/// A registry nobody listens on: exit 1 naming the image, after bounded retries.
#[test]
fn push_unreachable_registry_fails_naming_the_image() {
    let src = FakeRegistry::start();
    let img = src.add_image("gone/app", "v1", &[2_000]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    // A port that was free a moment ago and is closed now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let to = format!("127.0.0.1:{port}/m");
    let e = fails(&env, &["push", &img.reference, "--to", &to]);
    eprintln!("{e}");
    assert!(
        e.contains(&format!("{to}/gone/app:v1"))
            || e.contains(&img.reference)
            || e.contains(&format!("127.0.0.1:{port}")),
        "error names neither the image nor the registry: {e}"
    );
}

/// Docker Hub and other registries' names in the store (the offline side's usual case):
/// `--to REG/PFX` drops the source registry and keeps the repository path
/// (`docker.io/library/redis:7` -> `REG/PFX/library/redis:7`), short names on the command
/// line are normalised, and a `docker.io/=REG/hub/` rewrite applies before `--to`.
#[test]
fn push_docker_hub_names_follow_the_naming_rule() {
    let src = FakeRegistry::start();
    let img = src.add_image("library/redis", "7", &[3_000]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    // Rename the store's reference as if it had been fetched from docker.io, and add one
    // from ghcr.io (index.json: one entry per reference, sorted by name).
    let index_path = env.store().join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let entry = index["manifests"][0].clone();
    let named = |n: &str| {
        let mut e = entry.clone();
        e["annotations"]["org.opencontainers.image.ref.name"] = Value::from(n);
        e
    };
    index["manifests"] = Value::Array(vec![
        named("docker.io/library/redis:7"),
        named("ghcr.io/org/tool:1.0"),
    ]);
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let ls = env.ok(&["store", "ls"]);
    assert!(
        ls.contains("docker.io/library/redis:7") && ls.contains("ghcr.io/org/tool:1.0"),
        "{ls}"
    );

    let dst = FakeRegistry::start();
    let hb = dst.host();
    let v = env.json(&["push", "--all", "--to", &format!("{hb}/mirror")]);
    assert_mapping_explains(&v);
    assert_eq!(
        image(&v, "docker.io/library/redis:7")["target"],
        format!("{hb}/mirror/library/redis:7").as_str(),
        "{v}"
    );
    assert_eq!(
        image(&v, "ghcr.io/org/tool:1.0")["target"],
        format!("{hb}/mirror/org/tool:1.0").as_str(),
        "{v}"
    );
    assert_eq!(
        dst.tags("mirror/library/redis"),
        vec![("7".to_string(), img.manifest_digest.clone())]
    );
    assert_eq!(
        dst.tags("mirror/org/tool"),
        vec![("1.0".to_string(), img.manifest_digest.clone())]
    );

    // Short name on the command line; a docker.io rewrite first, --to for the rest.
    let out = env.ok(&[
        "push",
        "redis:7",
        "ghcr.io/org/tool:1.0",
        "--rewrite",
        &format!("docker.io/={hb}/hub/"),
        "--to",
        &format!("{hb}/other"),
    ]);
    let lines = parse_lines(&out, false);
    let by_src: BTreeMap<&str, &str> = lines
        .iter()
        .map(|l| (l.source.as_str(), l.target.as_str()))
        .collect();
    let hub = format!("{hb}/hub/library/redis:7");
    let other = format!("{hb}/other/org/tool:1.0");
    assert_eq!(
        by_src.get("docker.io/library/redis:7"),
        Some(&hub.as_str()),
        "{out}"
    );
    assert_eq!(
        by_src.get("ghcr.io/org/tool:1.0"),
        Some(&other.as_str()),
        "{out}"
    );
    assert_eq!(
        dst.tags("hub/library/redis"),
        vec![("7".to_string(), img.manifest_digest.clone())]
    );
    assert_eq!(
        dst.tags("other/org/tool"),
        vec![("1.0".to_string(), img.manifest_digest.clone())]
    );
}

/// The process killed in the middle of a big PATCH (the registry holds 8 MB of it): the next
/// run asks that upload where it stands (`GET` on the URL kept in the store) and goes on
/// from there instead of sending everything again.
#[test]
fn push_killed_mid_upload_resumes_after_restart() {
    let env = Env::new();
    let (_src, img) = big_image(&env, 20_000_000);
    let dst = FakeRegistry::start();
    dst.stall_upload_at(8_000_000, 1);
    let to = format!("{}/m", dst.host());
    let mut child = env
        .cmd()
        .args(["push", &img.reference, "--to", &to])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ocibundle push");
    // Bounded wait for the registry to hold 8 MB of the layer (not a timing assertion).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let held = loop {
        let open = dst.open_uploads();
        if let Some(u) = open.iter().find(|u| u.2 == 8_000_000) {
            break Some(u.0.clone());
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    dst.release_stalls();
    dst.clear_upload_faults();
    // The held PATCH ends (logged as cut) before the second run starts.
    assert!(dst.wait_until(std::time::Duration::from_secs(20), |l| {
        l.iter().any(|r| r.cut)
    }));
    let uuid =
        held.unwrap_or_else(|| panic!("the upload never reached 8 MB:\n{}", dst.log_summary()));

    rerun_resumes(&env, &dst, &img, &to, &uuid, 8_000_000);
}

/// Pushes `img` again and checks the run resumed upload `uuid`, of which the registry holds
/// `held` bytes: a GET asked where the upload stands, its PATCH continued that upload from
/// `held`, only the missing bytes were sent, and the tag names the image.
fn rerun_resumes(env: &Env, dst: &FakeRegistry, img: &TestImage, to: &str, uuid: &str, held: u64) {
    let layer = &img.layers[0];
    let mark = dst.log().len();
    env.ok(&["push", &img.reference, "--to", to]);
    assert_eq!(
        dst.tags("m/big/img"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    let log = dst.log();
    let run2 = since(&log, mark);
    assert!(
        run2.iter().any(|r| r.method == "GET"
            && r.upload.as_deref() == Some(uuid)
            && r.status == 204),
        "the rerun did not ask the kept upload {uuid} where it stands:\n{}",
        render(run2)
    );
    let patch = run2.iter().find(|r| r.method == "PATCH" && r.status == 202);
    let patch = patch.unwrap_or_else(|| panic!("no PATCH in the rerun:\n{}", render(run2)));
    assert_eq!(
        patch.upload.as_deref(),
        Some(uuid),
        "the rerun started a new upload:\n{}",
        render(run2)
    );
    assert_eq!(patch.content_range_start(), Some(held), "{}", render(run2));
    let got: u64 = run2
        .iter()
        .filter(|r| r.is_upload())
        .map(|r| r.body_received)
        .sum();
    assert_eq!(
        got,
        layer.size - held,
        "the rerun re-sent bytes the registry held:\n{}",
        render(run2)
    );
}


/// Runs `ocibundle ARGS` but kills it if it has not finished after `secs` seconds (a hang
/// is a failure; this is a liveness bound, not a timing assertion).
fn run_bounded(env: &Env, args: &[&str], secs: u64) -> Output {
    use std::io::Read;
    let mut child = env
        .cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ocibundle");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ocibundle {args:?} still running after {secs} s (hung); killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// A PATCH cut before the registry got a single byte of it: the registry then reports
/// `Range: 0-0` (distribution's answer for an empty upload as for a one-byte one); the
/// push must still finish, in bounded time, with the layer intact.
#[test]
fn push_patch_cut_before_its_first_byte_recovers() {
    let env = Env::new();
    let (_src, img) = big_image(&env, 12_000_000);
    let dst = FakeRegistry::start();
    dst.cut_upload("PATCH", 0, 1);
    let to = format!("{}/m", dst.host());
    let args = ["push", img.reference.as_str(), "--to", to.as_str()];
    let o = run_bounded(&env, &args, 120);
    let log = dst.log();
    assert!(
        log.iter().any(|r| r.cut && r.body_received == 0),
        "{}",
        render(&log)
    );
    assert!(
        o.status.success(),
        "push after a PATCH cut before its first byte failed:\n{}\n{}",
        text(&o),
        render(&log)
    );
    assert_eq!(
        dst.tags("m/big/img"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    assert!(dst.has_blob("m/big/img", &img.layers[0].digest));
}

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

mod real;
mod reuse;
mod dry_run;
mod faults;
mod references;

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

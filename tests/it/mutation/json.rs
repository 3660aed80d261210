//! Owns the JSON-aware mutations: one node of a document replaced (numbers by huge or negative
//! ones, strings by long, empty, multi-byte, path-like or non-canonical digests, any value by
//! one of the wrong type), nested deeper than any cap, a key duplicated, a member dropped or an
//! element repeated; the rest of the document is left valid so the mutation reaches the code
//! behind the parser.
use serde_json::Value;

use super::rng::Rng;

enum Op {
    /// Write this JSON text instead of the node.
    Raw(String),
    /// Wrap the node in this many arrays (or objects).
    Nest(usize, bool),
    /// Write member `i` of an object a second time, with this value.
    DupKey(usize, String),
    /// Leave out member or element `i`.
    Drop(usize),
    /// Write element `i` of an array this many times.
    Repeat(usize, usize),
}

const NUMBERS: &[&str] = &[
    "0", "-1", "1.5", "-0", "1e400", "4294967295", "4294967296", "9223372036854775807", "-9223372036854775808",
    "18446744073709551615", "18446744073709551616", "268435456", "4194305",
];
const WRONG_TYPES: &[&str] = &[
    "null", "true", "[]", "{}", "0", "\"x\"", "[null]", "{\"a\":null}", "[[[]]]",
    // A delta bundle's base, named by an id that is not hex (byte 16 inside a character).
    "{\"kind\":\"bundle\",\"id\":\"aéééééééééééééééééééééééééééééééééé\"}",
];
const DEPTHS: &[usize] = &[2, 63, 64, 65, 127, 128, 129, 1000, 100_000];

fn strings() -> Vec<String> {
    let mut v: Vec<String> = [
        "", "../../etc/passwd", "/etc/passwd", "blobs/sha256/../../../x", "l1/../../x", "l1/layer.tar", "manifest.json", "\u{0}", "linux", "amd64",
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.layer.v1.tar+gzip", "application/x-evil-layer", "UPPER/case:1", "example.test/mut/a:1", "a@sha256:short",
        ":::", "1.0.0", "2.0.0", "1.x.0", "inventory", "bundle", "ocibundle",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("a".repeat(10_000));
    // Byte 16 falls inside a two-byte character: code that cuts by bytes panics here.
    v.push(format!("a{}", "é".repeat(40)));
    v.push(format!("example.test/mut/a:{}", "t".repeat(200)));
    v
}

/// Non-canonical spellings of the digest `d` (`sha256:<hex>`), and valid digests of other blobs.
pub fn digest_variants(d: &str, others: &[String]) -> Vec<String> {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    let mut v = vec![
        d.to_uppercase(),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha512:{hex}{hex}"),
        format!("sha256:{}", &hex[..hex.len().min(63)]),
        format!("{d}0"),
        format!("sha256:../../{}", &hex[..hex.len().min(58)]),
        format!("sha256:{}/{}", &hex[..hex.len().min(32)], &hex[hex.len().min(33)..]),
        "sha256:".to_string(),
        format!("SHA256:{hex}"),
        hex.to_string(),
        format!("sha256:g{}", &hex[hex.len().min(1)..]),
        format!("md5:{}", &hex[..hex.len().min(32)]),
    ];
    v.extend(others.iter().cloned());
    v
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

fn nth(v: &Value, k: &mut usize) -> Option<Value> {
    if *k == 0 {
        return Some(v.clone());
    }
    *k -= 1;
    let kids: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) => o.values().collect(),
        _ => vec![],
    };
    kids.into_iter().find_map(|c| nth(c, k))
}

fn choose(rng: &mut Rng, node: &Value, digests: &[String]) -> Op {
    if rng.chance(25) {
        return if rng.chance(50) { Op::Raw(rng.pick(WRONG_TYPES).to_string()) } else { Op::Nest(*rng.pick(DEPTHS), rng.chance(50)) };
    }
    let raw_string = |s: &String| serde_json::to_string(s).unwrap();
    match node {
        Value::Number(_) if rng.chance(10) => Op::Raw(format!("\"{}\"", "9".repeat(10_000))),
        Value::Number(_) => Op::Raw(rng.pick(NUMBERS).to_string()),
        Value::String(s) if s.starts_with("sha256:") && rng.chance(70) => {
            let v = digest_variants(s, digests);
            Op::Raw(raw_string(rng.pick(&v[..])))
        }
        Value::String(_) => {
            let v = strings();
            Op::Raw(raw_string(rng.pick(&v[..])))
        }
        Value::Object(o) if !o.is_empty() => {
            let i = rng.below(o.len());
            if rng.chance(50) {
                let again = if rng.chance(50) { serde_json::to_string(o.values().nth(i).unwrap()).unwrap() } else { rng.pick(WRONG_TYPES).to_string() };
                Op::DupKey(i, again)
            } else {
                Op::Drop(i)
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.below(a.len());
            if rng.chance(50) { Op::Drop(i) } else { Op::Repeat(i, *rng.pick(&[2, 100, 5000])) }
        }
        _ => Op::Raw(rng.pick(WRONG_TYPES).to_string()),
    }
}

fn write(v: &Value, out: &mut String, i: &mut usize, k: usize, op: &Op) {
    let here = *i == k;
    *i += 1;
    if here {
        match op {
            Op::Raw(s) => {
                out.push_str(s);
                // Skip the node's children in the count, so no other node takes the op.
                *i += count(v) - 1;
                return;
            }
            Op::Nest(depth, arrays) => {
                let (open, close) = if *arrays { ("[", "]") } else { ("{\"a\":", "}") };
                out.push_str(&open.repeat(*depth));
                *i += count(v) - 1;
                out.push_str(&serde_json::to_string(v).unwrap());
                out.push_str(&close.repeat(*depth));
                return;
            }
            _ => {}
        }
    }
    match v {
        Value::Array(a) => {
            out.push('[');
            let mut first = true;
            for (j, c) in a.iter().enumerate() {
                let times = match op {
                    Op::Drop(d) if here && *d == j => 0,
                    Op::Repeat(r, n) if here && *r == j => *n,
                    _ => 1,
                };
                let start = *i;
                for _ in 0..times {
                    *i = start;
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    write(c, out, i, k, op);
                }
                *i = start + count(c);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            let mut first = true;
            for (j, (key, c)) in o.iter().enumerate() {
                let start = *i;
                if matches!(op, Op::Drop(d) if here && *d == j) {
                    *i = start + count(c);
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&serde_json::to_string(key).unwrap());
                out.push(':');
                write(c, out, i, k, op);
                if let Op::DupKey(d, again) = op
                    && here && *d == j {
                    out.push(',');
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push(':');
                    out.push_str(again);
                }
            }
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap()),
    }
}

/// One to three JSON-aware mutations of `bytes` (format-blind ones if it is not JSON).
/// `digests` are valid digests of other blobs, to point a reference somewhere else.
pub fn mutate(rng: &mut Rng, bytes: &[u8], digests: &[String]) -> Vec<u8> {
    let mut cur = bytes.to_vec();
    for _ in 0..1 + rng.below(3) {
        let Some(v) = parse(&cur) else {
            super::bytes::mutate(rng, &mut cur);
            continue;
        };
        let k = rng.below(count(&v));
        let node = nth(&v, &mut k.clone()).unwrap();
        let op = choose(rng, &node, digests);
        let mut out = String::new();
        write(&v, &mut out, &mut 0, k, &op);
        cur = out.into_bytes();
    }
    cur
}

/// Every `"digest"` (and any string) equal to `old` becomes `new`, and the `size` beside such a
/// digest becomes `size`: what makes a changed blob's references consistent again.
pub fn repoint(v: &mut Value, old: &str, new: &str, size: u64) {
    match v {
        Value::Object(o) => {
            if o.get("digest").and_then(Value::as_str) == Some(old) && o.contains_key("size") {
                o.insert("size".into(), size.into());
            }
            o.values_mut().for_each(|c| repoint(c, old, new, size));
        }
        Value::Array(a) => a.iter_mut().for_each(|c| repoint(c, old, new, size)),
        Value::String(s) if s == old => *s = new.to_string(),
        _ => {}
    }
}

/// Replaces blob `i` of `blobs` (digest, bytes) by `data`; every other JSON blob and every doc
/// that names it is repointed, and so on up the graph, so only the mutation itself is wrong.
/// A mutation can make two blobs name each other: the chain of rewrites then never ends, so it
/// is cut after a few steps (the cycle is the mutation).
pub fn cascade(blobs: &mut [(String, Vec<u8>)], docs: &mut [Value], i: usize, data: Vec<u8>) {
    cascade_some(blobs, docs, i, data, &mut 16);
}

fn cascade_some(blobs: &mut [(String, Vec<u8>)], docs: &mut [Value], i: usize, data: Vec<u8>, left: &mut usize) {
    let old = std::mem::replace(&mut blobs[i].0, ocibundle::Digest::of(&data).to_string());
    let (new, size) = (blobs[i].0.clone(), data.len() as u64);
    blobs[i].1 = data;
    for d in docs.iter_mut() {
        repoint(d, &old, &new, size);
    }
    for j in 0..blobs.len() {
        if j == i || *left == 0 || !blobs[j].1.windows(old.len()).any(|w| w == old.as_bytes()) {
            continue;
        }
        let Some(mut v) = parse(&blobs[j].1) else { continue };
        *left -= 1;
        repoint(&mut v, &old, &new, size);
        cascade_some(blobs, docs, j, serde_json::to_vec(&v).unwrap(), left);
    }
}

/// The document as a tree, unless it is not JSON or nests past the library's cap (what the
/// reader would refuse anyway; a mutation has nested it 100 000 deep).
fn parse(bytes: &[u8]) -> Option<Value> {
    ocibundle::limits::check_json_depth(bytes, "").ok()?;
    serde_json::from_slice(bytes).ok()
}

//! Owns the bundle-aware mutations: the fixed records (header, entry headers, trailer) with their
//! integer fields set to edge values, the index rewritten with its trailer (offset, length,
//! sha256) made to match so the mutation reaches the index parser and what trusts it, entries
//! dropped, duplicated, swapped or cut with the index re-laid to match, and a blob changed with
//! every digest naming it updated (entry header, index, the manifests above it).
use serde_json::Value;

use super::bytes::{self, U64S};
use super::json;
use super::rng::Rng;

const HEADER: usize = 64;
const ENTRY: usize = 48;
const TRAILER: usize = 64;

/// A bundle cut into its parts (from a valid seed).
struct Parts {
    header: Vec<u8>,
    /// (digest, data) in stream order.
    blobs: Vec<(String, Vec<u8>)>,
    index: Value,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn parse(b: &[u8]) -> Parts {
    let t = b.len() - TRAILER;
    let (io, il) = (u64_at(b, t + 16) as usize, u64_at(b, t + 24) as usize);
    let index: Value = serde_json::from_slice(&b[io..io + il]).unwrap();
    let blobs = index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (off, size) = (e["offset"].as_u64().unwrap() as usize, e["size"].as_u64().unwrap() as usize);
            (e["digest"].as_str().unwrap().to_string(), b[off..off + size].to_vec())
        })
        .collect();
    Parts { header: b[..HEADER].to_vec(), blobs, index }
}

fn entry_header(digest: &str, len: u64) -> Vec<u8> {
    let mut h = vec![0u8; ENTRY];
    h[0] = 1;
    h[8..16].copy_from_slice(&len.to_le_bytes());
    if let Some(raw) = digest.strip_prefix("sha256:").and_then(|x| hex::decode(x).ok()).filter(|r| r.len() == 32) {
        h[16..].copy_from_slice(&raw);
    }
    h
}

/// Header, entries, `index` bytes and a trailer that matches them.
fn with_index(head: Vec<u8>, index: &[u8]) -> Vec<u8> {
    let mut out = head;
    let io = out.len() as u64;
    out.extend_from_slice(index);
    let mut t = vec![0u8; TRAILER];
    t[..8].copy_from_slice(b"OCIBEND\x01");
    t[8..12].copy_from_slice(&1u32.to_le_bytes());
    t[16..24].copy_from_slice(&io.to_le_bytes());
    t[24..32].copy_from_slice(&(index.len() as u64).to_le_bytes());
    t[32..].copy_from_slice(&hex::decode(ocibundle::Digest::of(index).hex()).unwrap());
    out.extend_from_slice(&t);
    out
}

/// Lays the parts out again; with `relay`, the index's entries are rewritten to say where each
/// blob now is (so only the mutation is wrong, not the bookkeeping).
fn assemble(p: &Parts, relay: bool) -> Vec<u8> {
    let mut out = p.header.clone();
    let mut listed = Vec::new();
    for (d, data) in &p.blobs {
        out.extend_from_slice(&entry_header(d, data.len() as u64));
        listed.push(serde_json::json!({"kind": 1, "digest": d, "size": data.len(), "offset": out.len(), "media_type": "application/octet-stream"}));
        out.extend_from_slice(data);
    }
    let mut index = p.index.clone();
    if relay {
        // Keep each entry's media type: the reader trusts it to tell manifests from content.
        let old: Vec<Value> = index["entries"].as_array().cloned().unwrap_or_default();
        for e in &mut listed {
            if let Some(mt) = old.iter().find(|o| o["digest"] == e["digest"]).map(|o| o["media_type"].clone()) {
                e["media_type"] = mt;
            }
        }
        index["entries"] = Value::Array(listed);
    }
    with_index(out, &serde_json::to_vec(&index).unwrap())
}

/// One bundle mutation of the valid bundle `seed`.
pub fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let p = parse(seed);
    let digests: Vec<String> = p.blobs.iter().map(|(d, _)| d.clone()).collect();
    match rng.below(100) {
        0..30 => {
            let mut b = seed.to_vec();
            bytes::mutate_some(rng, &mut b);
            b
        }
        30..50 => {
            // An integer field of a fixed record set to an edge value.
            let mut b = seed.to_vec();
            let t = b.len() - TRAILER;
            let mut starts: Vec<usize> = vec![0];
            let mut at = HEADER;
            for (_, data) in &p.blobs {
                starts.push(at);
                at += ENTRY + data.len();
            }
            let field = match rng.below(4) {
                0 => *rng.pick(&[8usize, 12, 48, 56]),
                1 => rng.pick(&starts[1..]) + rng.pick(&[0usize, 8]),
                _ => t + rng.pick(&[8usize, 12, 16, 24]),
            };
            let v = if rng.chance(70) { *rng.pick(U64S) } else { rng.next() };
            let width = if field == t + 8 || field == t + 12 || field == 8 || field == 12 { 4 } else { 8 };
            b[field..field + width].copy_from_slice(&v.to_le_bytes()[..width]);
            if field == starts.get(1).copied().unwrap_or(0) && rng.chance(30) {
                b[field] = rng.next() as u8;
            }
            b
        }
        50..75 => {
            // The index mutated, the trailer made to match it.
            let io = u64_at(seed, seed.len() - TRAILER + 16) as usize;
            let index = &seed[io..seed.len() - TRAILER];
            let new = if rng.chance(80) {
                json::mutate(rng, index, &digests)
            } else {
                let mut b = index.to_vec();
                bytes::mutate_some(rng, &mut b);
                b
            };
            with_index(seed[..io].to_vec(), &new)
        }
        75..88 => {
            // Entries dropped, duplicated, swapped or cut short.
            let mut p = p;
            let n = p.blobs.len();
            let (i, j) = (rng.below(n), rng.below(n));
            match rng.below(4) {
                0 => drop(p.blobs.remove(i)),
                1 => {
                    let copy = p.blobs[i].clone();
                    p.blobs.insert(j, copy);
                }
                2 => p.blobs.swap(i, j),
                _ => {
                    let keep = rng.below(p.blobs[i].1.len() + 1);
                    p.blobs[i].1.truncate(keep);
                }
            }
            assemble(&p, rng.chance(60))
        }
        _ => {
            // A blob changed and every digest naming it updated: it must still be a sound image.
            let mut p = p;
            let i = rng.below(p.blobs.len());
            let data = if p.blobs[i].1.first() == Some(&b'{') {
                json::mutate(rng, &p.blobs[i].1, &digests)
            } else {
                let mut b = p.blobs[i].1.clone();
                bytes::mutate_some(rng, &mut b);
                b
            };
            let mut docs = [p.index.clone()];
            json::cascade(&mut p.blobs, &mut docs, i, data);
            p.index = docs[0].take();
            assemble(&p, true)
        }
    }
}

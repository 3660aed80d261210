//! Owns the tar-aware mutations (docker-archive and OCI archive): header fields set to hostile
//! values (sizes huge or base-256, names with `..` or absolute, link targets out of the archive,
//! unknown type flags) with the checksum recomputed so the mutation gets past it; members dropped,
//! duplicated, swapped, renamed, turned into symlinks, or given PAX and GNU long-name headers; and
//! a JSON member mutated, its digest and every reference to it updated when its name is a digest.
use super::bytes::{self, U64S};
use super::json;
use super::rng::Rng;
use super::tar::{self, Member};

const NAMES: &[&str] = &["../evil", "/etc/passwd", "a/../../evil", "", ".", "./", "manifest.json", "index.json", "l1/layer.tar", "l2/", "x\\..\\y", "blobs/sha256/"];

fn links(members: &[Member], me: &str) -> Vec<String> {
    let mut v: Vec<String> = ["/etc/passwd", "../../../etc/passwd", "l2/layer.tar", "l1", "", "../l2/layer.tar", "./layer.tar"].iter().map(|s| s.to_string()).collect();
    v.push(me.to_string());
    v.push(me.rsplit('/').next().unwrap_or(me).to_string());
    v.extend(members.iter().map(|m| m.name.clone()));
    v
}

/// A PAX record `len key=value\n`, its length counting itself.
fn pax(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}").len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

fn pax_records(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(2) {
        out.extend(match rng.below(9) {
            0 => pax("path", "../evil"),
            1 => pax("path", "/abs/path"),
            2 => pax("size", "99999999999999"),
            3 => pax("size", "-1"),
            4 => pax("size", "18446744073709551616"),
            5 => pax("linkpath", "../../x"),
            6 => b"99999999999 path=x\n".to_vec(),
            7 => b"5 a\n".to_vec(),
            _ => pax("path", "manifest.json"),
        });
    }
    out
}

/// A numeric header field (size, mode, mtime) in octal or base-256, or garbage.
fn number_field(rng: &mut Rng, width: usize) -> Vec<u8> {
    let v = *rng.pick(U64S);
    match rng.below(4) {
        0 => {
            let s = format!("{v:o}");
            let mut f = s.into_bytes();
            f.resize(width, 0);
            f
        }
        1 => {
            let mut f = vec![0u8; width];
            f[0] = 0x80;
            let be = v.to_be_bytes();
            f[width - 8..].copy_from_slice(&be);
            f
        }
        2 => vec![0xff; width],
        _ => rng.bytes(width),
    }
}

fn header_field(rng: &mut Rng, members: &[Member]) -> Vec<u8> {
    let (mut data, headers) = tar::build(members);
    let h = *rng.pick(&headers);
    let (at, field): (usize, Vec<u8>) = match rng.below(6) {
        0 | 1 => (124, number_field(rng, 12)),
        2 => {
            let mut n = rng.pick(NAMES).as_bytes().to_vec();
            if rng.chance(20) {
                n = vec![b'a'; 100];
            }
            n.resize(100, 0);
            (0, n)
        }
        3 => (156, vec![*rng.pick(b"0125x gLKS7\0\xff")]),
        4 => {
            let me = String::from_utf8_lossy(&data[h..h + 100]).trim_end_matches('\0').to_string();
            let mut l = rng.pick(&links(members, &me)).as_bytes().to_vec();
            l.resize(100, 0);
            data[h + 156] = b'2';
            (157, l)
        }
        _ => {
            let at = *rng.pick(&[100usize, 108, 116, 136]);
            let width = if at == 136 { 12 } else { 8 };
            (at, number_field(rng, width))
        }
    };
    data[h + at..h + at + field.len()].copy_from_slice(&field);
    if rng.chance(90) {
        tar::fix_checksum(&mut data[h..h + 512]);
    }
    data
}

fn members_changed(rng: &mut Rng, members: &[Member]) -> Vec<u8> {
    let mut m = members.to_vec();
    let (i, j) = (rng.below(m.len()), rng.below(m.len()));
    match rng.below(8) {
        0 => drop(m.remove(i)),
        1 => {
            let copy = m[i].clone();
            m.insert(j, copy);
        }
        2 => m.swap(i, j),
        3 => m[i].name = rng.pick(NAMES).to_string(),
        4 => {
            let me = m[i].name.clone();
            m[i].link = rng.pick(&links(members, &me)).clone();
            m[i].kind = b'2';
            m[i].data.clear();
        }
        5 => {
            let recs = pax_records(rng);
            m.insert(i, Member { name: "PaxHeaders/x".into(), kind: b'x', link: String::new(), data: recs });
        }
        6 => {
            let long = if rng.chance(50) { rng.pick(NAMES).to_string() } else { format!("{}/{}", "d".repeat(5000), m[i].name) };
            m.insert(i, Member { name: "././@LongLink".into(), kind: b'L', link: String::new(), data: long.into_bytes() });
        }
        _ => m[i].kind = *rng.pick(b"1346KLSgx\0\xff"),
    }
    tar::build(&m).0
}

/// A JSON member mutated; with `digest_named` (an OCI layout) the blob is renamed after its new
/// digest and every reference to it updated, so the change is what gets checked.
fn member_json(rng: &mut Rng, members: &[Member], digest_named: bool) -> Vec<u8> {
    let mut m = members.to_vec();
    let jsons: Vec<usize> = (0..m.len()).filter(|&i| matches!(m[i].data.first(), Some(b'{' | b'['))).collect();
    let i = *rng.pick(&jsons);
    let blob_names: Vec<String> = m.iter().filter_map(|x| x.name.strip_prefix("blobs/sha256/").filter(|h| h.len() == 64).map(|h| format!("sha256:{h}"))).collect();
    let data = json::mutate(rng, &m[i].data, &blob_names);
    let blob = m[i].name.strip_prefix("blobs/sha256/").filter(|h| h.len() == 64).map(str::to_string);
    match blob {
        Some(hex) if digest_named && rng.chance(80) => {
            let idx: Vec<usize> = (0..m.len()).filter(|&k| m[k].name.starts_with("blobs/sha256/") && m[k].name.len() > 13).collect();
            let mut blobs: Vec<(String, Vec<u8>)> = idx.iter().map(|&k| (format!("sha256:{}", &m[k].name[13..]), m[k].data.clone())).collect();
            let docs_at: Vec<usize> = (0..m.len()).filter(|&k| m[k].name == "index.json").collect();
            let mut docs: Vec<serde_json::Value> = docs_at.iter().map(|&k| serde_json::from_slice(&m[k].data).unwrap()).collect();
            let at = blobs.iter().position(|(d, _)| d == &format!("sha256:{hex}")).unwrap();
            json::cascade(&mut blobs, &mut docs, at, data);
            for (&k, (d, bytes)) in idx.iter().zip(blobs) {
                m[k].name = format!("blobs/sha256/{}", &d[7..]);
                m[k].data = bytes;
            }
            for (&k, doc) in docs_at.iter().zip(docs) {
                m[k].data = serde_json::to_vec(&doc).unwrap();
            }
        }
        _ => m[i].data = data,
    }
    tar::build(&m).0
}

/// One mutation of the archive made of `members`.
pub fn mutate(rng: &mut Rng, members: &[Member], digest_named: bool) -> Vec<u8> {
    match rng.below(100) {
        0..25 => {
            let mut b = tar::build(members).0;
            bytes::mutate_some(rng, &mut b);
            if rng.chance(80) {
                tar::fix_all_checksums(&mut b);
            }
            b
        }
        25..50 => header_field(rng, members),
        50..70 => members_changed(rng, members),
        _ => member_json(rng, members, digest_named),
    }
}

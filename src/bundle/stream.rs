//! Reading a bundle as a stream (a pipe: `import -`, `verify -`): entries are taken in order as
//! they pass, each checked against its inline digest, then the index and trailer at the end.
use std::io::{BufRead, BufReader, Read};

use super::format::{decode_entry, decode_header, decode_trailer, Index, ENTRY_HEADER_LEN, HEADER_LEN, TRAILER_LEN};
use crate::digest::Digest;
use crate::error::{Error, Result};

/// What the stream held, in order: (digest, size, offset of the data).
pub type SeenEntries = Vec<(Digest, u64, u64)>;

fn read_err(name: &str, e: std::io::Error) -> Error {
    Error::Other(format!("{name}: read failed: {e}"))
}

/// Walks a bundle stream. `on_entry` gets each entry's digest, size and a reader of exactly its
/// bytes (it must consume them all). Returns the checked index and what the stream held.
pub fn walk(r: impl Read, name: &str, mut on_entry: impl FnMut(&Digest, u64, &mut dyn Read) -> Result<()>) -> Result<(Index, SeenEntries)> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let mut h = [0u8; 64];
    r.read_exact(&mut h).map_err(|e| Error::Other(format!("{name}: too short for a bundle ({e})")))?;
    decode_header(&h, name)?;
    let mut pos = HEADER_LEN;
    let mut seen = Vec::new();
    loop {
        // The index starts with '{', a value no entry kind takes.
        let next = r.fill_buf().map_err(|e| read_err(name, e))?;
        if next.is_empty() {
            return Err(Error::Other(format!("{name}: the stream ends before the bundle index (truncated)")));
        }
        if next[0] == b'{' {
            break;
        }
        let mut eh = [0u8; 48];
        r.read_exact(&mut eh).map_err(|_| Error::Other(format!("{name}: truncated in an entry header")))?;
        let (_, len, digest) = decode_entry(&eh, name)?;
        pos += ENTRY_HEADER_LEN;
        let mut data = (&mut r).take(len);
        on_entry(&digest, len, &mut data)?;
        // Whatever the callback left unread is drained, so the stream stays in step.
        std::io::copy(&mut data, &mut std::io::sink()).map_err(|e| read_err(name, e))?;
        if data.limit() != 0 {
            return Err(Error::Other(format!("{name}: truncated in blob {digest}")));
        }
        seen.push((digest, len, pos));
        pos += len;
    }
    let mut tail = Vec::new();
    (&mut r).take(limits::BUNDLE_INDEX + TRAILER_LEN + 1).read_to_end(&mut tail).map_err(|e| read_err(name, e))?;
    if tail.len() as u64 > limits::BUNDLE_INDEX + TRAILER_LEN {
        return Err(Error::TooLarge { what: format!("{name}: bundle index"), limit: limits::BUNDLE_INDEX });
    }
    if (tail.len() as u64) < TRAILER_LEN {
        return Err(Error::Other(format!("{name}: no bundle trailer at the end (truncated)")));
    }
    let (ib, tb) = tail.split_at(tail.len() - TRAILER_LEN as usize);
    let trailer = decode_trailer(tb.try_into().unwrap(), name)?;
    if trailer.index_offset != pos || trailer.index_len != ib.len() as u64 {
        return Err(Error::Other(format!("{name}: the trailer does not match the stream (truncated or corrupt)")));
    }
    if Digest::of(ib).hex() != hex::encode(trailer.index_sha256) {
        return Err(Error::Other(format!("{name}: the bundle index is corrupt (checksum mismatch)")));
    }
    let index = Index::parse(ib, name)?;
    if h[16..48] != index.bundle_id.bytes()[..] {
        return Err(Error::Other(format!("{name}: header and index name different bundles (corrupt)")));
    }
    let listed: SeenEntries = index.entries.iter().map(|e| (e.digest.clone(), e.size, e.offset)).collect();
    if listed != seen {
        return Err(Error::Other(format!("{name}: the entries do not match the index (corrupt)")));
    }
    Ok((index, seen))
}

use std::collections::BTreeMap;
use std::io::Write;

use super::reader::{BlobProblem, ImportReport, VerifyReport};
use crate::digest::Hasher;
use crate::image::Manifest;
use crate::limits;
use crate::store::{PartialBlob, Store};

/// Imports a bundle stream: each blob is verified and stored as it passes; references are set
/// once the index at the end has been checked and every image is complete in the store. (A
/// delta's missing base can only be noticed at the end here; blobs stored by then are valid
/// and reused by the next import.)
pub fn import(r: impl Read, name: &str, store: &Store) -> Result<ImportReport> {
    let _guard = store.use_guard()?;
    let mut report = ImportReport::default();
    let mut buf = vec![0u8; 1 << 20];
    let (index, _) = walk(r, name, |digest, len, data| {
        let what = format!("{name}: blob {digest}");
        let Some(mut part) = PartialBlob::open(store, digest, Some(len), &what)? else {
            report.blobs_present += 1;
            report.bytes_present += len;
            return Ok(());
        };
        // A partial from an interrupted import: skip what it holds (the digest check at commit
        // covers the whole blob).
        let have = part.offset();
        std::io::copy(&mut data.take(have), &mut std::io::sink()).map_err(|e| Error::Other(format!("{what}: {e}")))?;
        loop {
            if crate::cancel::requested() {
                part.flush()?;
                return Err(Error::Interrupted);
            }
            let n = data.read(&mut buf).map_err(|e| Error::Other(format!("{what}: {e}")))?;
            if n == 0 {
                break;
            }
            part.writer().write_all(&buf[..n]).map_err(|e| Error::Other(format!("{what}: writing to the store: {e}")))?;
        }
        part.commit()?;
        report.blobs_imported += 1;
        report.bytes_imported += len;
        Ok(())
    })?;
    for req in &index.requires {
        if !store.has_blob(&req.digest, Some(req.size)) {
            let base = index.base.as_ref().map(|b| format!("{} {}", b.kind, &b.id[..16.min(b.id.len())])).unwrap_or_else(|| "?".into());
            return Err(Error::Other(format!("{name}: delta bundle needs blob {} which the store lacks: import its base ({base}) first", req.digest)));
        }
    }
    let mut updates = Vec::new();
    for img in &index.images {
        super::plan::image_blobs(store, &img.reference, &img.descriptor).map_err(|e| Error::Other(format!("{name}: image {} is incomplete: {e}", img.reference)))?;
        updates.push((img.reference.clone(), img.descriptor.clone()));
        report.images.push(img.reference.clone());
    }
    store.set_refs(&updates)?;
    Ok(report)
}

/// Verifies a bundle stream: every blob re-hashed, then (from the manifests kept on the way,
/// at most 64 MiB of them) every image checked complete.
pub fn verify(r: impl Read, name: &str) -> Result<VerifyReport> {
    const KEEP_CAP: u64 = 64 << 20;
    let mut kept: BTreeMap<Digest, Vec<u8>> = BTreeMap::new();
    let mut kept_bytes = 0u64;
    let mut bad: Vec<(Digest, String)> = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut report = VerifyReport::default();
    let (index, _) = walk(r, name, |digest, len, data| {
        let keep = len <= limits::MANIFEST && kept_bytes + len <= KEEP_CAP;
        let mut small = Vec::new();
        let mut h = Hasher::new();
        loop {
            let n = data.read(&mut buf).map_err(|e| Error::Other(format!("{name}: blob {digest}: {e}")))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            if keep {
                small.extend_from_slice(&buf[..n]);
            }
        }
        // Count what was read, not what the entry header claims: a hostile length is only
        // refused (as a truncation) after this returns.
        let seen = h.len();
        let found = h.finish();
        if &found != digest {
            bad.push((digest.clone(), format!("content hashes to {found}")));
        } else if keep && small.first() == Some(&b'{') {
            kept_bytes += len;
            kept.insert(digest.clone(), small);
        }
        report.blobs_checked += 1;
        report.bytes_checked += seen;
        Ok(())
    })?;
    let carried: BTreeMap<&Digest, u64> = index.entries.iter().map(|e| (&e.digest, e.size)).collect();
    for img in &index.images {
        report.images.push(img.reference.clone());
        let _ = crate::graph::walk::<std::convert::Infallible>(&img.descriptor, |d| {
            if !carried.contains_key(&d.digest) {
                let why = if index.requires.iter().any(|r| r.digest == d.digest) { "left to the delta's base (verify the file instead of a stream to check the store)" } else { "not in the bundle" };
                bad.push((d.digest.clone(), format!("{why} (needed by {})", img.reference)));
                return Ok(None);
            }
            Ok(kept.get(&d.digest).and_then(|bytes| Manifest::parse(bytes.clone(), Some(&d.media_type), &img.reference).ok()))
        });
    }
    bad.sort();
    bad.dedup();
    for (d, detail) in bad {
        report.problems.push(BlobProblem { digest: d.to_string(), images: vec![], detail });
    }
    Ok(report)
}

/// A bundle stream, by format: version 1 is read as it passes; version 2 cannot be (a recipe
/// names chunks anywhere in the stream), so it is spooled into an unnamed-on-drop file in `dir`
/// and read as a file.
pub enum Opened {
    Walk(Box<dyn Read>),
    Spooled(tempfile::NamedTempFile),
}

pub fn open(mut r: Box<dyn Read>, name: &str, dir: &std::path::Path) -> Result<Opened> {
    let mut h = [0u8; 64];
    r.read_exact(&mut h).map_err(|e| Error::Other(format!("{name}: too short for a bundle ({e})")))?;
    let (_, version) = decode_header(&h, name)?;
    if version == super::format::VERSION {
        return Ok(Opened::Walk(Box::new(std::io::Cursor::new(h.to_vec()).chain(r))));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut f = tempfile::Builder::new().prefix("stream-").tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    f.write_all(&h).map_err(|e| Error::io(f.path(), e))?;
    std::io::copy(&mut r, f.as_file_mut()).map_err(|e| Error::Other(format!("{name}: spooling the stream into {}: {e}", dir.display())))?;
    Ok(Opened::Spooled(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::format::{encode_entry, encode_header, KIND_BLOB};

    #[test]
    fn an_entry_claiming_a_huge_length_is_a_truncation_not_an_add_overflow() {
        let mut b = encode_header(&crate::digest::BundleId([1; 32]), crate::bundle::format::VERSION).to_vec();
        b.extend(encode_entry(KIND_BLOB, 3, &Digest::of(b"abc")));
        b.extend(b"abc");
        b.extend(encode_entry(KIND_BLOB, u64::MAX, &Digest::of(b"x")));
        b.extend(b"x and whatever follows");
        let e = verify(&b[..], "stdin").unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}

//! The store's cache of compressed chunk packs: `.ocibundle/packs/v1/<key>`, one zstd frame per
//! file, keyed by what the frame holds (its chunks, in order, and how it was compressed). A warm
//! bundle write copies a cached frame instead of reading its layers again and compressing.
//!
//! An entry is trusted for nothing: before a write uses it, it is decoded and every chunk is
//! checked against its name and length ([`PackCache::check`]); a damaged or short entry is
//! removed and the pack is made again. The frame's digest from that check is the one the write
//! holds the bytes it copies to ([`PackCache::frame`]). Entries are written through a temp file
//! and a rename; a torn one fails its check. `store gc` empties the cache.
use std::path::PathBuf;

use sha2::Digest as _;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::Store;

/// One pack's contents: chunk names and lengths, in order.
pub type PackChunks = [([u8; 32], u32)];

pub struct PackCache<'a> {
    pub store: &'a Store,
}

/// The directory of the cache, under the store's private directory.
pub fn dir(store: &Store) -> PathBuf {
    store.root().join(".ocibundle/packs/v1")
}

/// The key of a pack: its chunks and everything that decides its frame's bytes (the zstd
/// library's version, the level; the window follows from the size), so a cached frame is always
/// the frame a fresh compression would make and bundles stay byte-identical warm or cold.
pub fn key(chunks: &PackChunks, level: i32) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(b"ocibundle pack cache v1\0");
    h.update(zstd::zstd_safe::version_number().to_le_bytes());
    h.update(level.to_le_bytes());
    h.update((chunks.len() as u64).to_le_bytes());
    for (sha, len) in chunks {
        h.update(sha);
        h.update(len.to_le_bytes());
    }
    h.finalize().into()
}

impl PackCache<'_> {
    fn path(&self, key: &[u8; 32]) -> PathBuf {
        dir(self.store).join(hex::encode(key))
    }

    /// Whether entry `key` holds exactly `chunks` (decoded within their total size, each chunk
    /// hashing to its name): the frame's digest if so. A present entry that fails is removed.
    pub fn check(&self, key: &[u8; 32], chunks: &PackChunks) -> Option<Digest> {
        let path = self.path(key);
        let frame = std::fs::read(&path).ok()?;
        let raw_size: u64 = chunks.iter().map(|(_, n)| *n as u64).sum();
        let good = super::rebuild::decode_capped(&frame, raw_size).ok().is_some_and(|raw| {
            let mut at = 0usize;
            chunks.iter().all(|(sha, n)| {
                let c = &raw[at..at + *n as usize];
                at += *n as usize;
                sha2::Sha256::digest(c).as_slice() == sha
            })
        });
        if !good {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(Digest::of(&frame))
    }

    /// Entry `key`'s frame, which must still hash to `digest` (what [`check`](Self::check) saw).
    pub fn frame(&self, key: &[u8; 32], digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path(key);
        let frame = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let found = Digest::of(&frame);
        if found != *digest {
            return Err(Error::DigestMismatch { what: format!("pack cache entry {}", path.display()), expected: digest.clone(), found });
        }
        Ok(frame)
    }

    /// Keeps `frame` as entry `key` (temp file, rename; not synced: a torn entry fails its
    /// check and is made again). Best effort: a cache that cannot be written costs only time.
    pub fn put(&self, key: &[u8; 32], frame: &[u8]) {
        let dir = dir(self.store);
        let path = self.path(key);
        if path.exists() || std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), hex::encode(&key[..8])));
        if std::fs::write(&tmp, frame).is_err() || std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(b: &[u8]) -> ([u8; 32], u32) {
        (sha2::Sha256::digest(b).into(), b.len() as u32)
    }

    #[test]
    fn an_entry_is_used_only_while_it_decodes_to_its_chunks() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let cache = PackCache { store: &store };
        let (a, b) = (vec![1u8; 5000], vec![2u8; 7000]);
        let chunks = [chunk(&a), chunk(&b)];
        let k = key(&chunks, 9);
        assert_eq!(cache.check(&k, &chunks), None, "nothing cached yet");
        let frame = zstd::bulk::compress(&[a.clone(), b.clone()].concat(), 9).unwrap();
        cache.put(&k, &frame);
        let d = cache.check(&k, &chunks).expect("a good entry");
        assert_eq!(d, Digest::of(&frame));
        assert_eq!(cache.frame(&k, &d).unwrap(), frame);
        // Another level or other chunks are other entries.
        assert_ne!(key(&chunks, 3), k);
        assert_ne!(key(&chunks[..1], 9), k);
        // An entry whose bytes are not its chunks (a key that lies) is removed, not used.
        let other = [chunk(&b), chunk(&a)];
        let k2 = key(&other, 9);
        cache.put(&k2, &frame);
        assert_eq!(cache.check(&k2, &other), None);
        assert!(!dir(&store).join(hex::encode(k2)).exists());
        // A torn entry likewise.
        std::fs::write(dir(&store).join(hex::encode(k)), &frame[..frame.len() / 2]).unwrap();
        assert_eq!(cache.check(&k, &chunks), None);
        // An entry changed after its check is refused when copied.
        cache.put(&k, &frame);
        let d = cache.check(&k, &chunks).unwrap();
        std::fs::write(dir(&store).join(hex::encode(k)), b"not the frame that was checked").unwrap();
        assert!(cache.frame(&k, &d).is_err());
    }
}

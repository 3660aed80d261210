//! Content digests as types, and the hashing reader/writer that verify bytes against them.
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use crate::error::{Error, Result};

/// A `sha256:<hex>` content digest: the only algorithm registries use in practice.
/// Parsed once where data enters; everything downstream takes this type.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn hex(&self) -> &str {
        &self.hex
    }
    pub fn from_bytes(raw: &[u8; 32]) -> Digest {
        Digest { hex: hex::encode(raw) }
    }
    /// The 32 bytes the hex spells.
    pub fn raw(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        hex::decode_to_slice(&self.hex, &mut b).expect("a digest is 64 hex digits");
        b
    }
    /// The digest of a byte slice.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_bytes(&Sha256::digest(data).into())
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        let bad = || Error::BadDigest(s.chars().take(100).collect());
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        Ok(Digest { hex: hex.to_string() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The digest of a layer's uncompressed tar, as an image config's `rootfs.diff_ids` lists it:
/// what a docker-archive names a layer by. Never the digest of the (compressed) blob, which is
/// a plain [`Digest`]; the two are equal only for an uncompressed layer.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct DiffId(pub Digest);

impl DiffId {
    pub fn as_digest(&self) -> &Digest {
        &self.0
    }
}

impl fmt::Display for DiffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for DiffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiffId({})", self.0)
    }
}

/// A bundle's identity: the SHA-256 of what it means (its images, the blobs it carries, its
/// base), in its header, every volume's header and its index (there as 64 lower-case hex
/// digits). Its own type so it is never taken for a blob's digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleId(pub [u8; 32]);

impl BundleId {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The first 16 hex digits, as messages show it.
    pub fn short(&self) -> String {
        self.to_string()[..16].to_string()
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundleId({self})")
    }
}

impl FromStr for BundleId {
    type Err = Error;
    fn from_str(s: &str) -> Result<BundleId> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Error::Other(format!("invalid bundle id {s:?} (64 lower-case hex digits)")));
        }
        let mut id = [0u8; 32];
        hex::decode_to_slice(s, &mut id).expect("checked to be hex");
        Ok(BundleId(id))
    }
}

impl serde::Serialize for BundleId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for BundleId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<BundleId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 with a byte count.
#[derive(Clone, Default)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn finish(self) -> Digest {
        Digest::from_bytes(&self.sha.finalize().into())
    }
    /// Checks the hashed content against an expected digest and size.
    pub fn verify(self, what: &str, expected: &Digest, size: Option<u64>) -> Result<()> {
        let len = self.len;
        if let Some(size) = size
            && len != size {
            return Err(Error::SizeMismatch { what: what.to_string(), digest: expected.clone(), expected: size, found: len });
        }
        let found = self.finish();
        if &found != expected {
            return Err(Error::DigestMismatch { what: what.to_string(), expected: expected.clone(), found });
        }
        Ok(())
    }
}

/// A writer that hashes everything passing through it.
pub struct HashingWriter<W> {
    inner: W,
    pub hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W, hasher: Hasher) -> Self {
        HashingWriter { inner, hasher }
    }
    pub fn into_parts(self) -> (W, Hasher) {
        (self.inner, self.hasher)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes a whole reader; returns digest and length.
pub fn hash_reader(mut r: impl Read) -> io::Result<(Digest, u64)> {
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    let len = h.len();
    Ok((h.finish(), len))
}

/// A reader that hashes what passes and, at the end of the stream, fails with `InvalidData`
/// unless size and digest match: nothing downstream can finish on unverified bytes.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
    expected: Digest,
    size: u64,
    what: String,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest, size: u64, what: impl Into<String>) -> Self {
        VerifyingReader { inner, hasher: Some(Hasher::new()), expected, size, what: what.into(), done: false }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            // Verified already: anything more is too much.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} {}: longer than its {} bytes", self.what, self.expected, self.size))),
            };
        }
        let Some(h) = self.hasher.as_mut() else { return Ok(0) };
        // Never hand out more than the declared size.
        let room = (self.size - h.len()).min(buf.len() as u64) as usize;
        let n = if room == 0 { 0 } else { self.inner.read(&mut buf[..room])? };
        if n > 0 {
            h.update(&buf[..n]);
            if h.len() < self.size {
                return Ok(n);
            }
        }
        // The last byte (or the end of the source) is here: check before handing it out, so
        // a consumer that stops at the declared size never gets unverified bytes.
        let h = self.hasher.take().unwrap();
        // The typed error rides inside the io::Error: `Error::from_read` takes it back out.
        h.verify(&self.what, &self.expected, Some(self.size)).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.done = true;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn bundle_ids_are_64_lower_case_hex_digits() {
        let id: BundleId = "ab".repeat(32).parse().unwrap();
        assert_eq!(id.to_string(), "ab".repeat(32));
        assert_eq!(id.short(), "ab".repeat(8));
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<BundleId>(&format!("\"{}\"", "ab".repeat(32))).unwrap(), id);
        for bad in ["AB".repeat(32), "ab".repeat(31), "zz".repeat(32), format!("sha256:{}", "ab".repeat(32))] {
            assert!(bad.parse::<BundleId>().is_err(), "{bad}");
        }
    }
    #[test]
    fn parse_and_display() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap();
        assert_eq!(d, Digest::of(b""));
        assert!("sha256:E3B0".parse::<Digest>().is_err());
        assert!("md5:00".parse::<Digest>().is_err());
        assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
    }
    #[test]
    fn verifying_reader_fails_at_the_end() {
        let mut ok = VerifyingReader::new(&b"abc"[..], Digest::of(b"abc"), 3, "blob");
        let mut v = Vec::new();
        ok.read_to_end(&mut v).unwrap();
        assert_eq!(v, b"abc");
        let mut bad = VerifyingReader::new(&b"abd"[..], Digest::of(b"abc"), 3, "blob");
        assert_eq!(bad.read_to_end(&mut Vec::new()).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let mut long = VerifyingReader::new(&b"abcd"[..], Digest::of(b"abc"), 3, "blob");
        assert!(long.read_to_end(&mut Vec::new()).is_err());
        let mut short = VerifyingReader::new(&b"ab"[..], Digest::of(b"abc"), 3, "blob");
        assert!(short.read_to_end(&mut Vec::new()).is_err());
        // A consumer that stops at the declared size still never sees a bad last byte.
        let mut bad = VerifyingReader::new(&b"abd"[..], Digest::of(b"abc"), 3, "blob");
        let mut buf = [0u8; 3];
        assert!(bad.read(&mut buf).is_err());
        let mut empty = VerifyingReader::new(&b""[..], Digest::of(b""), 0, "blob");
        assert_eq!(empty.read(&mut buf).unwrap(), 0);
    }
    #[test]
    fn verify_size_and_digest() {
        let mut h = Hasher::new();
        h.update(b"abc");
        assert!(h.clone().verify("x", &Digest::of(b"abc"), Some(3)).is_ok());
        assert!(matches!(h.clone().verify("x", &Digest::of(b"abc"), Some(4)), Err(Error::SizeMismatch { .. })));
        assert!(matches!(h.verify("x", &Digest::of(b"abd"), None), Err(Error::DigestMismatch { .. })));
    }
}

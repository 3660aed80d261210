//! The bundle format's fixed-size records (header, entry header, trailer, volume header), the
//! index JSON, and size strings. The spec is docs/design.md, "Bundle format".
use serde::{Deserialize, Serialize};

use crate::digest::{BundleId, Digest};
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::media::MediaType;

/// Version 1: whole blobs only. Version 2: content below the layer (chunk packs and recipes)
/// besides whole blobs. Readers take both; writers write 2 unless asked for `--dedup blobs`.
pub const VERSION: u32 = 1;
pub const VERSION_CHUNKED: u32 = 2;
pub const HEADER_MAGIC: &[u8; 8] = b"OCIBNDL\x01";
pub const TRAILER_MAGIC: &[u8; 8] = b"OCIBEND\x01";
pub const VOLUME_MAGIC: &[u8; 8] = b"OCIBVOL\x01";
pub const HEADER_LEN: u64 = 64;
pub const ENTRY_HEADER_LEN: u64 = 48;
pub const TRAILER_LEN: u64 = 64;
pub const VOLUME_HEADER_LEN: u64 = 64;

/// Entry kinds. Only whole blobs exist in version 1.
pub const KIND_BLOB: u8 = 1;
/// Version 2: one zstd frame holding chunks back to back (the index lists them).
pub const KIND_PACK: u8 = 2;
/// Version 2: one layer's recipe, a zstd frame (`chunk::recipe`).
pub const KIND_RECIPE: u8 = 3;
pub const MEDIA_PACK: &str = "application/vnd.ocibundle.chunks.v1+zstd";
pub const MEDIA_RECIPE: &str = "application/vnd.ocibundle.recipe.v1+zstd";

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn check_version(what: &str, version: u32, flags: u32) -> Result<()> {
    if version != VERSION && version != VERSION_CHUNKED {
        return Err(Error::Other(format!("{what}: bundle format version {version} is not supported (this ocibundle reads versions {VERSION} and {VERSION_CHUNKED})")));
    }
    if flags != 0 {
        return Err(Error::Other(format!("{what}: unknown bundle flags {flags:#x} (written by a newer ocibundle?)")));
    }
    Ok(())
}

pub fn encode_header(bundle_id: &BundleId, version: u32) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..8].copy_from_slice(HEADER_MAGIC);
    b[8..12].copy_from_slice(&version.to_le_bytes());
    b[16..48].copy_from_slice(bundle_id.bytes());
    b
}

/// Reserved bytes must be zero: a flipped bit anywhere in a record is then always noticed.
fn check_zero(b: &[u8], what: &str, record: &str) -> Result<()> {
    if b.iter().any(|&x| x != 0) {
        return Err(Error::Other(format!("{what}: corrupt {record} (reserved bytes are not zero)")));
    }
    Ok(())
}

/// The bundle id and the format version.
pub fn decode_header(b: &[u8; 64], what: &str) -> Result<([u8; 32], u32)> {
    if &b[..8] != HEADER_MAGIC {
        return Err(Error::Other(format!("{what}: not an ocibundle bundle (wrong magic)")));
    }
    check_version(what, u32_at(b, 8), u32_at(b, 12))?;
    check_zero(&b[48..], what, "bundle header")?;
    Ok((b[16..48].try_into().unwrap(), u32_at(b, 8)))
}

pub fn encode_entry(kind: u8, len: u64, digest: &Digest) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[0] = kind;
    b[8..16].copy_from_slice(&len.to_le_bytes());
    b[16..48].copy_from_slice(&hex::decode(digest.hex()).expect("digest hex"));
    b
}

/// An entry header: kind, data length, digest.
pub fn decode_entry(b: &[u8; 48], what: &str) -> Result<(u8, u64, Digest)> {
    let kind = b[0];
    if !matches!(kind, KIND_BLOB | KIND_PACK | KIND_RECIPE) {
        return Err(Error::Other(format!("{what}: unknown entry kind {kind} (written by a newer ocibundle?)")));
    }
    check_zero(&b[1..8], what, "entry header")?;
    Ok((kind, u64_at(b, 8), Digest::from_bytes(b[16..48].try_into().unwrap())))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trailer {
    pub index_offset: u64,
    pub index_len: u64,
    pub index_sha256: [u8; 32],
}

pub fn encode_trailer(t: &Trailer, version: u32) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..8].copy_from_slice(TRAILER_MAGIC);
    b[8..12].copy_from_slice(&version.to_le_bytes());
    b[16..24].copy_from_slice(&t.index_offset.to_le_bytes());
    b[24..32].copy_from_slice(&t.index_len.to_le_bytes());
    b[32..64].copy_from_slice(&t.index_sha256);
    b
}

pub fn decode_trailer(b: &[u8; 64], what: &str) -> Result<Trailer> {
    if &b[..8] != TRAILER_MAGIC {
        return Err(Error::Other(format!("{what}: no bundle trailer at the end (truncated file, or a volume missing?)")));
    }
    check_version(what, u32_at(b, 8), u32_at(b, 12))?;
    Ok(Trailer { index_offset: u64_at(b, 16), index_len: u64_at(b, 24), index_sha256: b[32..64].try_into().unwrap() })
}

pub fn encode_volume_header(number: u32, bundle_id: &BundleId) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..8].copy_from_slice(VOLUME_MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&number.to_le_bytes());
    b[16..48].copy_from_slice(bundle_id.bytes());
    b
}

/// A volume header: its number and the bundle id.
pub fn decode_volume_header(b: &[u8; 64], what: &str) -> Result<(u32, [u8; 32])> {
    if &b[..8] != VOLUME_MAGIC {
        return Err(Error::Other(format!("{what}: not an ocibundle volume (wrong magic)")));
    }
    check_version(what, u32_at(b, 8), 0)?;
    check_zero(&b[48..], what, "volume header")?;
    Ok((u32_at(b, 12), b[16..48].try_into().unwrap()))
}

/// One image in a bundle: its reference and the store descriptor it points at.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexImage {
    pub reference: String,
    pub descriptor: Descriptor,
}

/// Where an entry's data sits in the logical stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexEntry {
    pub kind: u8,
    pub digest: Digest,
    pub size: u64,
    pub offset: u64,
    pub media_type: MediaType,
    /// Version 2, kind 2: the chunks the frame holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<PackInfo>,
    /// Version 2, kind 3: the layer the recipe rebuilds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<RecipeInfo>,
}

/// A chunk pack: its size decompressed and its chunks in order, each `[sha256 hex, length]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackInfo {
    pub raw_size: u64,
    pub chunks: Vec<(String, u32)>,
}

/// What a recipe rebuilds: the layer blob (digest, size, media type), its tar (diff_id, size),
/// the recipe's own size decompressed, and who compressed the layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecipeInfo {
    pub layer: Digest,
    pub layer_size: u64,
    pub layer_media_type: MediaType,
    pub diff_id: Digest,
    pub tar_size: u64,
    pub raw_size: u64,
    pub producer: String,
}

/// Version 2: a layer carried whole because no exact rebuild was proven, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RawLayer {
    pub digest: Digest,
    pub size: u64,
    pub producer: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Required {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Base {
    /// `bundle` or `inventory`.
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Index {
    pub format: String,
    pub version: u32,
    pub bundle_id: BundleId,
    pub images: Vec<IndexImage>,
    pub entries: Vec<IndexEntry>,
    #[serde(default)]
    pub requires: Vec<Required>,
    #[serde(default)]
    pub base: Option<Base>,
    #[serde(default)]
    pub volume_size: u64,
    #[serde(default = "one")]
    pub volumes: u32,
    /// Version 2: layers carried whole, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raw: Vec<RawLayer>,
    /// Version 2 deltas: layers the receiving store must hold, whose chunks the recipes use
    /// without the bundle carrying them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_layers: Vec<Required>,
}

fn one() -> u32 {
    1
}

impl Index {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("index serialises")
    }

    /// Sets `volumes` for an index that starts at `index_offset` of the logical stream, split
    /// into volumes of `volume_payload` bytes (if split): the count is inside the index whose
    /// length decides it, so it is iterated to the fixed point. Returns the stream's length.
    pub fn settle_volumes(&mut self, index_offset: u64, volume_payload: Option<u64>) -> u64 {
        loop {
            let len = index_offset + self.to_bytes().len() as u64 + TRAILER_LEN;
            let vols = volume_payload.map(|p| len.div_ceil(p).max(1) as u32).unwrap_or(1);
            if vols == self.volumes {
                return len;
            }
            self.volumes = vols;
        }
    }
    pub fn parse(bytes: &[u8], what: &str) -> Result<Index> {
        #[derive(Deserialize)]
        struct Probe {
            format: String,
            version: u32,
        }
        let p: Probe = crate::limits::parse_json(bytes, &format!("{what}: index"))?;
        if p.format != "ocibundle" {
            return Err(Error::Other(format!("{what}: index format {:?} is not ocibundle", crate::error::one_line(&p.format, 100))));
        }
        check_version(what, p.version, 0)?;
        let idx: Index = crate::limits::parse_json(bytes, &format!("{what}: index"))?;
        // Messages show the first 16 digits of the base's id (cut by bytes): it must be the hex
        // id the writer put there, never any string.
        if let Some(b) = &idx.base
            && !(b.id.len() == 64 && b.id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))) {
            return Err(Error::Other(format!("{what}: the index names its base by a malformed id (corrupt index)")));
        }
        for e in &idx.entries {
            let known = match idx.version {
                VERSION => e.kind == KIND_BLOB,
                _ => match e.kind {
                    KIND_BLOB => true,
                    KIND_PACK => e.pack.is_some(),
                    KIND_RECIPE => e.recipe.is_some(),
                    _ => false,
                },
            };
            if !known {
                return Err(Error::Other(format!("{what}: unknown entry kind {} for {} (written by a newer ocibundle?)", e.kind, e.digest)));
            }
            if let Some(p) = &e.pack
                && p.chunks.iter().any(|(h, _)| !(h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))) {
                return Err(Error::Other(format!("{what}: chunk pack {} names a chunk by a malformed digest (corrupt index)", e.digest)));
            }
        }
        Ok(idx)
    }
}

/// Parses a size: `4G`, `4.7G`, `25G`, `650M`, `4Gi`, `123` (bytes). Decimal units unless `i`.
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || Error::Other(format!("invalid size {s:?} (examples: 4G, 4.7G, 650M, 4Gi)"));
    let t = s.trim().trim_end_matches(['B', 'b']);
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (t, 1f64),
        Some((i, _)) => {
            let m = match &t[i..] {
                "k" | "K" => 1e3,
                "M" | "m" => 1e6,
                "G" | "g" => 1e9,
                "T" | "t" => 1e12,
                "Ki" | "ki" => 1024f64,
                "Mi" | "mi" => 1024f64 * 1024.0,
                "Gi" | "gi" => 1024f64 * 1024.0 * 1024.0,
                "Ti" | "ti" => 1024f64 * 1024.0 * 1024.0 * 1024.0,
                _ => return Err(bad()),
            };
            (&t[..i], m)
        }
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !(v.is_finite() && v > 0.0) {
        return Err(bad());
    }
    Ok((v * mult).floor() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G").unwrap(), 4_000_000_000);
        assert_eq!(parse_size("4.7G").unwrap(), 4_700_000_000);
        assert_eq!(parse_size("4Gi").unwrap(), 4 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("1.5MB").unwrap(), 1_500_000);
        assert!(parse_size("x").is_err() && parse_size("-1G").is_err() && parse_size("4Q").is_err());
    }
    #[test]
    fn records_round_trip_and_reject() {
        let id = [7u8; 32];
        assert_eq!(decode_header(&encode_header(&BundleId(id), VERSION), "f").unwrap(), (id, 1));
        assert_eq!(decode_header(&encode_header(&BundleId(id), VERSION_CHUNKED), "f").unwrap(), (id, 2));
        let mut h = encode_header(&BundleId(id), VERSION);
        h[8] = 3;
        assert!(decode_header(&h, "f").unwrap_err().to_string().contains("version 3 is not supported"));
        let t = Trailer { index_offset: 5, index_len: 9, index_sha256: [1; 32] };
        assert_eq!(decode_trailer(&encode_trailer(&t, VERSION), "f").unwrap(), t);
        let d = Digest::of(b"x");
        assert_eq!(decode_entry(&encode_entry(KIND_BLOB, 3, &d), "f").unwrap(), (KIND_BLOB, 3, d.clone()));
        assert!(decode_entry(&encode_entry(9, 3, &d), "f").unwrap_err().to_string().contains("unknown entry kind 9"));
        assert_eq!(decode_volume_header(&encode_volume_header(3, &BundleId(id)), "f").unwrap(), (3, id));
    }

    #[test]
    fn a_base_id_that_is_not_64_hex_is_refused_before_it_is_cut_mid_character() {
        let index = |id: &str| {
            let base = Base { kind: "bundle".into(), id: id.into() };
            Index { format: "ocibundle".into(), version: 1, bundle_id: BundleId([0; 32]), images: vec![], entries: vec![], requires: vec![], base: Some(base), volume_size: 0, volumes: 1, raw: vec![], base_layers: vec![] }.to_bytes()
        };
        assert!(Index::parse(&index(&"ab".repeat(32)), "f").is_ok());
        // Byte 16 falls inside an `é`: `&id[..16]` in the delta messages would panic.
        let e = Index::parse(&index(&format!("a{}", "é".repeat(40))), "f").unwrap_err();
        assert!(e.to_string().contains("malformed id"), "{e}");
        assert!(Index::parse(&index("short"), "f").is_err());
    }
}

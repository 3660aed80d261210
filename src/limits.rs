//! Every cap on what is read into memory, and the one capped read that enforces them.
//!
//! Blobs are streamed and never held whole; only metadata is read into memory, and only through
//! [`read_capped`] or [`read_file_capped`], which fail with `Error::TooLarge` instead of
//! truncating (a truncated index.json would parse as garbage, or worse, as a smaller store).
use std::io::Read;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// A manifest or index (containers/image uses the same figure).
pub const MANIFEST: u64 = 4 << 20;
/// A cosign simple-signing payload (cosign's are a few hundred bytes; annotations may add
/// some): a signature layer over it is a bad signature, never read.
pub const SIGNATURE_PAYLOAD: u64 = 64 << 10;
/// A public key file (`--key`; a PEM public key is a few hundred bytes).
pub const KEY_FILE: u64 = 64 << 10;
/// An image config blob.
pub const CONFIG: u64 = 8 << 20;
/// A store's or OCI layout's `index.json` (one descriptor per reference: about 300 bytes each,
/// so this is over 200 000 references).
pub const INDEX_JSON: u64 = 64 << 20;
/// An `oci-layout` file (a one-line JSON object).
pub const OCI_LAYOUT_FILE: u64 = 4 << 10;
/// A docker `config.json` / `auth.json` (credentials, never logged).
pub const AUTH_FILE: u64 = 4 << 20;
/// A bundle's index (the table of every blob it holds).
pub const BUNDLE_INDEX: u64 = 256 << 20;
/// An inventory file (one `sha256:<hex> <size>` line of about 85 bytes per blob).
pub const INVENTORY: u64 = 64 << 20;
/// The largest zstd window a layer may ask the decoder for, as a power of two (128 MiB). The
/// decoder keeps one window of output in memory, so a small hostile frame declaring 2 GiB could
/// make a 2 GiB "zstd bomb". Every compression level up to `--ultra -22` and `--long=27` stays
/// within it; a layer written with `zstd --long=28` or more is refused, naming this cap.
pub const ZSTD_WINDOW_LOG: u32 = 27;
/// How deep untrusted JSON may nest (arrays and objects). Manifests, indexes, configs and
/// index.json need six levels at most. serde_json stops at 128 levels itself, and 127 parse on a
/// 2 MiB thread stack even unoptimised (measured), so this cap is not what keeps the stack safe
/// today. It is here so the refusal says why in one line, and so it holds whatever serde_json's
/// features are: any crate in the build enabling `unbounded_depth` would lift serde_json's limit.
pub const JSON_DEPTH: usize = 64;

/// Reads all of `r`, failing with `TooLarge` (naming `what`) if it holds more than `limit` bytes.
/// Never allocates more than `limit + 1` bytes; a read error goes through `io_err`, which knows
/// what the reader is (a file, a response body).
pub fn read_capped(r: impl Read, limit: u64, what: &str, io_err: impl FnOnce(std::io::Error) -> Error) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    r.take(limit + 1).read_to_end(&mut v).map_err(io_err)?;
    if v.len() as u64 > limit {
        return Err(Error::TooLarge { what: what.to_string(), limit });
    }
    Ok(v)
}

/// Reads a whole file of at most `limit` bytes. A larger file is refused from its metadata,
/// before any of it is read; one that grows while being read is refused too.
pub fn read_file_capped(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).at(path)?;
    let len = f.metadata().at(path)?.len();
    let what = path.display().to_string();
    if len > limit {
        return Err(Error::TooLarge { what: format!("{what} ({len} bytes)"), limit });
    }
    read_capped(f, limit, &what, |e| Error::io(path, e))
}

/// Refuses JSON nested deeper than [`JSON_DEPTH`], by a scan that does not recurse, before a
/// parser can. Brackets inside strings do not count.
pub fn check_json_depth(bytes: &[u8], what: &str) -> Result<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > JSON_DEPTH {
                    return Err(Error::BadJson { what: what.to_string(), reason: format!("nested deeper than {JSON_DEPTH} levels") });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses untrusted JSON (already read through a capped read): refused if nested deeper than
/// [`JSON_DEPTH`] or if it does not parse as `T`, with `what` (the file or blob) named.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    check_json_depth(bytes, what)?;
    // serde's message quotes the offending value whole (a 10 000-byte string, say).
    serde_json::from_slice(bytes).map_err(|e| Error::BadJson { what: what.to_string(), reason: crate::error::one_line(&e.to_string(), 300) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_limit_is_read_and_one_over_is_refused() {
        assert_eq!(read_capped(&[7u8; 10][..], 10, "x", |e| Error::io("x", e)).unwrap().len(), 10);
        let e = read_capped(&[7u8; 11][..], 10, "thing", |e| Error::io("x", e)).unwrap_err();
        assert!(matches!(e, Error::TooLarge { limit: 10, .. }), "{e}");
        assert!(e.to_string().contains("thing"), "{e}");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_by_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.json");
        std::fs::write(&p, vec![b' '; 4097]).unwrap();
        let e = read_file_capped(&p, 4096).unwrap_err();
        assert!(e.to_string().contains("4097 bytes"), "{e}");
        std::fs::write(&p, b"{}").unwrap();
        assert_eq!(read_file_capped(&p, 4096).unwrap(), b"{}");
    }

    #[test]
    fn json_nested_past_the_cap_is_refused_by_a_scan_before_any_parser_recurses() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
        // At the cap it parses, on a thread with the stack of the worker pool's threads.
        let at_cap = nest(JSON_DEPTH);
        let parsed = std::thread::Builder::new().stack_size(2 << 20).spawn(move || parse_json::<serde_json::Value>(&at_cap, "x").is_ok()).unwrap().join().unwrap();
        assert!(parsed, "{JSON_DEPTH} levels must parse on a 2 MiB stack");
        let e = parse_json::<serde_json::Value>(&nest(JSON_DEPTH + 1), "deep.json").unwrap_err();
        assert!(matches!(e, Error::BadJson { .. }) && e.to_string().contains("deep.json") && e.to_string().contains("nested deeper than 64"), "{e}");
        // 100 000 levels (issue 11's manifest) are refused from the scan, without recursion.
        assert!(parse_json::<serde_json::Value>(&nest(100_000), "x").is_err());
        // Brackets inside strings, escaped quotes included, are text.
        let text = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(200), "{".repeat(200));
        assert!(parse_json::<serde_json::Value>(text.as_bytes(), "x").is_ok());
    }
}

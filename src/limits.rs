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
}

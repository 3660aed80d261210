//! Exact zstd rebuild: the zstd side of `exact` — finding the libzstd parameters that re-encode a
//! frame byte for byte (checked while the blob streams), and re-encoding with them.
use super::exact::{Analysis, Window, ZstdParams};
use crate::error::Result;

/// The levels a record may name.
pub(super) const LEVELS: std::ops::RangeInclusive<i64> = -131072..=22;

pub(super) fn analyze(_w: &mut Window, _plain: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<Analysis> {
    Ok(Analysis::not_exact("zstd (other)".into(), "not implemented"))
}

pub(super) fn rebuild(_z: &ZstdParams, _plain: &mut dyn std::io::Read, _out: &mut dyn std::io::Write, what: &str) -> Result<u64> {
    Err(crate::error::Error::Other(format!("{what}: not implemented")))
}

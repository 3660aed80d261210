//! The library's one error type: what went wrong, with the image, blob or file at fault.
use crate::digest::{DiffId, Digest};
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid digest {0:?}")]
    BadDigest(String),
    #[error("invalid reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("invalid platform {0:?} (expected OS/ARCH[/VARIANT], e.g. linux/amd64)")]
    BadPlatform(String),
    #[error("{what}: digest mismatch: expected {expected}, got {found}")]
    DigestMismatch { what: String, expected: Digest, found: Digest },
    /// A layer whose uncompressed content is not what its image's config says.
    #[error("{what}: uncompressed content does not match its diff_id: expected {expected}, got {found}")]
    DiffIdMismatch { what: String, expected: DiffId, found: DiffId },
    #[error("{what} {digest}: size mismatch: expected {expected} bytes, got {found}")]
    SizeMismatch { what: String, digest: Digest, expected: u64, found: u64 },
    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}: unsupported media type {media_type:?}")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("{}: unsupported imageLayoutVersion {version:?} (only 1.x is known)", path.display())]
    UnsupportedLayout { path: PathBuf, version: String },
    #[error("{what}: invalid JSON: {reason}")]
    BadJson { what: String, reason: String },
    /// The io error is shown in the message, not chained as a cause (so it prints once).
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// A registry request failed; `retryable` tells the retry loop whether to try again.
    #[error("{what}: {message}")]
    Registry { what: String, message: String, retryable: bool },
    #[error("interrupted (no output was left half-written; fetch and import resume when run again)")]
    Interrupted,
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), err: source }
    }
    /// An error met while reading a stream: the typed error a verifying reader raised (a digest
    /// or size mismatch, named by the reader), else the io error under `what`.
    pub fn from_read(what: &str, e: std::io::Error) -> Error {
        match e.downcast::<Error>() {
            Ok(inner) => inner,
            Err(e) => Error::Other(format!("{what}: {e}")),
        }
    }
    pub fn retryable(&self) -> bool {
        matches!(self, Error::Registry { retryable: true, .. })
    }
    /// Prefixes the "what" of this error with a context (e.g. the image reference).
    pub fn context(self, ctx: &str) -> Error {
        match self {
            Error::Registry { what, message, retryable } => Error::Registry { what: format!("{ctx}: {what}"), message, retryable },
            Error::DigestMismatch { what, expected, found } => Error::DigestMismatch { what: format!("{ctx}: {what}"), expected, found },
            Error::DiffIdMismatch { what, expected, found } => Error::DiffIdMismatch { what: format!("{ctx}: {what}"), expected, found },
            Error::SizeMismatch { what, digest, expected, found } => Error::SizeMismatch { what: format!("{ctx}: {what}"), digest, expected, found },
            Error::TooLarge { what, limit } => Error::TooLarge { what: format!("{ctx}: {what}"), limit },
            Error::UnsupportedMediaType { what, media_type } => Error::UnsupportedMediaType { what: format!("{ctx}: {what}"), media_type },
            Error::BadJson { what, reason } => Error::BadJson { what: format!("{ctx}: {what}"), reason },
            Error::Other(m) => Error::Other(format!("{ctx}: {m}")),
            e => Error::Other(format!("{ctx}: {e}")),
        }
    }
}

/// Untrusted text (a name, a media type, a message quoting raw header bytes) made fit for one
/// error line: control characters escaped; past `max` characters the middle is cut out, so the
/// start (what) and the end (why) both stay.
pub fn one_line(text: &str, max: usize) -> String {
    let escape = |s: &mut dyn Iterator<Item = char>| -> String { s.flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect() };
    let n = text.chars().count();
    if n <= max {
        return escape(&mut text.chars());
    }
    let head = max * 2 / 3;
    let tail = max - head;
    format!("{}…{}", escape(&mut text.chars().take(head)), escape(&mut text.chars().skip(n - tail)))
}

/// Adds path context to io results.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}
impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_header_bytes_with_a_newline_stay_on_one_line() {
        let line = one_line("numeric field: \u{7f}E\n_\u{b}q", 30);
        assert_eq!(line, "numeric field: \\u{7f}E\\n_\\u{b}q");
        let long = format!("member {}: is missing", "a".repeat(10_000));
        let cut = one_line(&long, 60);
        assert!(cut.starts_with("member aaa") && cut.ends_with("a: is missing") && cut.contains('…') && cut.chars().count() == 61, "{cut}");
    }
}

//! Untrusted tar archives read as a table of members: each member's name checked (no `..`, no
//! absolute path, no duplicates), symlinks resolved inside the archive only, and member bytes
//! read by offset (so memory does not grow with the archive). Archive formats (docker-archive)
//! build on this; nothing here ever writes a member to disk under its own name.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub mod docker;
pub mod oci;

/// Most members a table holds (a docker-archive has a few per image and layer).
const MAX_MEMBERS: usize = 1_000_000;
/// Most symlinks followed to reach one member.
const MAX_HOPS: usize = 8;

#[derive(Clone, Debug)]
enum Kind {
    File { offset: u64, size: u64 },
    Link(String),
    Other,
}

/// The members of one tar archive.
pub struct Members {
    path: PathBuf,
    file: File,
    members: BTreeMap<String, Kind>,
}

/// An error naming the archive; member names come from the archive (or its manifest.json) and
/// may be any length, so the message is kept to one readable line.
fn bad(path: &Path, msg: String) -> Error {
    Error::Other(format!("{}: {}", path.display(), crate::error::one_line(&msg, 400)))
}

/// A member name made canonical (`./a//b` -> `a/b`), or why it is refused.
fn clean_name(raw: &str) -> std::result::Result<String, &'static str> {
    if raw.starts_with('/') {
        return Err("an absolute member name");
    }
    let mut parts = Vec::new();
    for p in raw.split('/') {
        match p {
            "" | "." => {}
            ".." => return Err("a member name with `..`"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("an empty member name");
    }
    Ok(parts.join("/"))
}

impl Members {
    /// Reads the archive's headers (not its contents) into a table.
    pub fn open(path: &Path) -> Result<Members> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut members = BTreeMap::new();
        let mut ar = tar::Archive::new(&file);
        let entries = ar.entries_with_seek().map_err(|e| bad(path, format!("not a tar archive: {e}")))?;
        for entry in entries {
            // The tar crate's message may quote header bytes: keep it short.
            let entry = entry.map_err(|e| bad(path, format!("not a tar archive, or a truncated one: {}", crate::error::one_line(&e.to_string(), 80))))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let ty = entry.header().entry_type();
            if ty.is_dir() {
                continue;
            }
            let name = clean_name(&raw).map_err(|why| bad(path, format!("member {raw:?}: {why}")))?;
            let kind = if ty.is_file() {
                let (offset, size) = (entry.raw_file_position(), entry.size());
                if offset.checked_add(size).is_none_or(|end| end > file_len) {
                    return Err(bad(path, format!("member {name}: truncated (its {size} bytes run past the end of the file)")));
                }
                Kind::File { offset, size }
            } else if ty.is_symlink() {
                let target = entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
                Kind::Link(target)
            } else {
                Kind::Other
            };
            if members.insert(name.clone(), kind).is_some() {
                return Err(bad(path, format!("member {name} appears twice")));
            }
            if members.len() > MAX_MEMBERS {
                return Err(bad(path, format!("more than {MAX_MEMBERS} members")));
            }
        }
        Ok(Members { path: path.to_path_buf(), file, members })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the archive has a member of that name, of any kind.
    pub fn contains(&self, name: &str) -> bool {
        clean_name(name).is_ok_and(|n| self.members.contains_key(&n))
    }

    /// The offset and size of the regular member `name` names (following symlinks that stay
    /// inside the archive), or why there is none.
    pub fn find(&self, name: &str) -> Result<(u64, u64)> {
        let mut cur = clean_name(name).map_err(|why| bad(&self.path, format!("{name:?} named in the archive: {why}")))?;
        for _ in 0..MAX_HOPS {
            match self.members.get(&cur) {
                None => return Err(bad(&self.path, format!("member {cur} is missing"))),
                Some(Kind::File { offset, size }) => return Ok((*offset, *size)),
                Some(Kind::Other) => return Err(bad(&self.path, format!("member {cur} is not a regular file"))),
                Some(Kind::Link(t)) => {
                    let joined = if t.starts_with('/') {
                        return Err(bad(&self.path, format!("member {cur} is a symlink out of the archive ({t})")));
                    } else {
                        match cur.rsplit_once('/') {
                            Some((dir, _)) => format!("{dir}/{t}"),
                            None => t.clone(),
                        }
                    };
                    cur = resolve(&joined).ok_or_else(|| bad(&self.path, format!("member {cur} is a symlink out of the archive ({t})")))?;
                }
            }
        }
        Err(bad(&self.path, format!("member {name}: more than {MAX_HOPS} symlinks")))
    }

    /// A reader of exactly the bytes of member `name`.
    pub fn open_member(&self, name: &str) -> Result<MemberReader<'_>> {
        self.open_member_from(name, 0)
    }

    /// A reader of member `name`'s bytes from `skip` on. Positioned reads: many readers of one
    /// archive may run at once, on any threads.
    pub fn open_member_from(&self, name: &str, skip: u64) -> Result<MemberReader<'_>> {
        let (offset, size) = self.find(name)?;
        let skip = skip.min(size);
        Ok(MemberReader { file: &self.file, path: &self.path, pos: offset + skip, end: offset + size })
    }

    /// Member `name` read whole, refused over `limit` bytes before any of it is read.
    pub fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let (_, size) = self.find(name)?;
        let what = format!("{}: member {name}", self.path.display());
        if size > limit {
            return Err(Error::TooLarge { what: format!("{what} ({size} bytes)"), limit });
        }
        crate::limits::read_capped(self.open_member(name)?, limit, &what, |e| Error::io(&self.path, e))
    }
}

/// The bytes of one member, read by position.
pub struct MemberReader<'a> {
    file: &'a File,
    path: &'a Path,
    pos: u64,
    end: u64,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = std::os::unix::fs::FileExt::read_at(self.file, &mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("{}: the archive ends inside a member (truncated?)", self.path.display())));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

pub use crate::copy::Copied;

/// `a/../b` -> `b`; `None` when `..` climbs out of the archive's root.
fn resolve(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_canonical_or_refused() {
        assert_eq!(clean_name("./a//b").unwrap(), "a/b");
        assert!(clean_name("/etc/passwd").is_err());
        assert!(clean_name("a/../../etc/passwd").is_err());
        assert!(clean_name("./").is_err());
        assert_eq!(resolve("x/../blobs/sha256/ab").unwrap(), "blobs/sha256/ab");
        assert_eq!(resolve("../etc"), None);
    }

    #[test]
    fn a_size_field_of_control_bytes_is_refused_in_one_line() {
        // What the mutation test found: the tar crate quotes the raw field, newline included.
        let mut h = [0u8; 512];
        h[..4].copy_from_slice(b"file");
        h[124..136].copy_from_slice(b"\x7fE\n_\x0bq\0\0\0\0\0\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tar");
        std::fs::write(&p, [&h[..], &[0u8; 1024]].concat()).unwrap();
        let e = Members::open(&p).err().expect("refused").to_string();
        assert!(e.contains("not a tar archive") && !e.contains('\n'), "{e:?}");
    }
}

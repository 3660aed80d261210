//! The lock file: every reference of an image list resolved to the digests it named at one
//! moment (the index, and the platform manifests chosen from it), in a small line-per-image text
//! form (docs/design.md, "Lock file"), so `fetch`, `bundle` and `verify` act on exactly those
//! bytes and a tag that moved since is reported, never silently followed.
use std::fmt::Write as _;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fetch::PlatformChoice;
use crate::image::{Descriptor, ManifestKind};
use crate::reference::{Platform, Reference};
use crate::registry::Registry;
use crate::store::picked_from;

/// The first line of a version 1 lock file; a file starting `# ocibundle lock` with any other
/// version is refused rather than guessed at.
pub const HEADER: &str = "# ocibundle lock v1";
const MAGIC: &str = "# ocibundle lock";

/// One image, pinned.
#[derive(Debug, Clone, PartialEq)]
pub struct LockEntry {
    /// Marked `?`: an image the site can do without (`verify --images` warns, never fails).
    pub optional: bool,
    /// As the image list named it (normalised), tag included.
    pub reference: Reference,
    /// What the reference resolved to: an image manifest, or an index.
    pub digest: Digest,
    /// Every platform of the index was kept (`--all-platforms`).
    pub all_platforms: bool,
    /// For an index: the platform manifests chosen from it.
    pub platforms: Vec<(Platform, Digest)>,
    // Hook for referrers (issue 12): once fetch discovers signatures and SBOMs, the lock pins
    // the ones it found here too, as a later version of this format (a v1 reader refuses it).
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lock {
    pub entries: Vec<LockEntry>,
}

/// Whether `text` is a lock file (rather than a plain image list).
pub fn is_lock(text: &str) -> bool {
    text.lines().next().is_some_and(|l| l.trim_end().starts_with(MAGIC))
}

impl Lock {
    /// Parses a lock file; `file` names it in errors, which also give the line number.
    pub fn parse(text: &str, file: &str) -> Result<Lock> {
        let mut lines = text.lines();
        let first = lines.next().unwrap_or("").trim_end();
        if first != HEADER {
            let what = if first.starts_with(MAGIC) { format!("unsupported version {:?} (this ocibundle reads {HEADER:?})", crate::error::one_line(first, 60)) } else { format!("not a lock file (its first line must be {HEADER:?})") };
            return Err(Error::Other(format!("{file}:1: {what}")));
        }
        let mut entries: Vec<LockEntry> = Vec::new();
        for (i, line) in lines.enumerate() {
            let n = i + 2;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let e = parse_line(line).map_err(|why| Error::Other(format!("{file}:{n}: {why}: {}", crate::error::one_line(line, 120))))?;
            if entries.iter().any(|o| o.reference == e.reference) {
                return Err(Error::Other(format!("{file}:{n}: {} is locked twice", e.reference)));
            }
            entries.push(e);
        }
        Ok(Lock { entries })
    }

    /// The text form: the header, a comment saying how to read it, one line per image in the
    /// order of the image list.
    pub fn render(&self) -> String {
        let mut s = format!("{HEADER}\n# [?]REFERENCE DIGEST [all] [OS/ARCH[/VARIANT]=DIGEST]...  (? = optional; written by `ocibundle lock`)\n");
        for e in &self.entries {
            let _ = write!(s, "{}{} {}", if e.optional { "?" } else { "" }, e.reference, e.digest);
            if e.all_platforms {
                s.push_str(" all");
            }
            for (p, d) in &e.platforms {
                let _ = write!(s, " {p}={d}");
            }
            s.push('\n');
        }
        s
    }

    pub fn get(&self, name: &str) -> Option<&LockEntry> {
        self.entries.iter().find(|e| e.reference.to_string() == name)
    }
}

fn parse_line(line: &str) -> std::result::Result<LockEntry, String> {
    let mut fields = line.split_whitespace();
    let first = fields.next().unwrap_or("");
    let (optional, r) = match first.strip_prefix('?') {
        Some(rest) => (true, rest),
        None => (false, first),
    };
    let reference: Reference = r.parse().map_err(|e: Error| e.to_string())?;
    let digest: Digest = fields.next().ok_or("no digest after the reference")?.parse().map_err(|_| "the second field is not a sha256 digest")?;
    if reference.digest.as_ref().is_some_and(|d| *d != digest) {
        return Err("the reference's own digest is not the locked one".into());
    }
    let mut e = LockEntry { optional, reference, digest, all_platforms: false, platforms: Vec::new() };
    for f in fields {
        if f == "all" {
            e.all_platforms = true;
            continue;
        }
        let (p, d) = f.split_once('=').ok_or_else(|| format!("{f:?} is not PLATFORM=DIGEST"))?;
        let p: Platform = p.parse().map_err(|e: Error| e.to_string())?;
        let d: Digest = d.parse().map_err(|_| format!("{f:?}: not a sha256 digest"))?;
        e.platforms.push((p, d));
    }
    Ok(e)
}

/// What resolving an image list gave: the lock, and the optional images that could not be
/// resolved (left out of it).
pub struct Resolved {
    pub lock: Lock,
    pub skipped: Vec<(Reference, String)>,
}

/// Resolves every reference of `list` (`true` = optional) at the registry: the manifest or index
/// it names now, and from an index the platform(s) `choice` keeps.
pub fn resolve(reg: &Registry, list: &[(bool, Reference)], choice: &PlatformChoice) -> Result<Resolved> {
    let mut lock = Lock::default();
    let mut skipped = Vec::new();
    for (optional, r) in list {
        match resolve_one(reg, r, choice) {
            Ok((digest, all_platforms, platforms)) => lock.entries.push(LockEntry { optional: *optional, reference: r.clone(), digest, all_platforms, platforms }),
            Err(e) if *optional => skipped.push((r.clone(), e.to_string())),
            Err(e) => return Err(e),
        }
    }
    Ok(Resolved { lock, skipped })
}

type Pins = (Digest, bool, Vec<(Platform, Digest)>);

fn resolve_one(reg: &Registry, r: &Reference, choice: &PlatformChoice) -> Result<Pins> {
    let top = reg.manifest(r, &r.manifest_ref())?;
    let ManifestKind::Index(children) = &top.kind else { return Ok((top.digest, false, Vec::new())) };
    match choice {
        PlatformChoice::All => Ok((top.digest.clone(), true, children.iter().filter(|c| !c.media_type.is_index()).filter_map(|c| Some((c.platform.clone()?, c.digest.clone()))).collect())),
        PlatformChoice::One(want) => match crate::graph::pick_platform(children, want) {
            Some(c) => Ok((top.digest.clone(), false, vec![(c.platform.clone().unwrap_or_else(|| want.clone()), c.digest.clone())])),
            None => Err(Error::Other(format!("{r}: no {want} image in its index (it has: {}); use --platform or --all-platforms", crate::graph::platforms(children).join(", ")))),
        },
    }
}

/// What the tag names at the registry now, if that is not what the lock pins (the tag moved).
pub fn moved(reg: &Registry, e: &LockEntry) -> Result<Option<Digest>> {
    if e.reference.digest.is_some() {
        return Ok(None);
    }
    let now = reg.manifest(&e.reference, &e.reference.manifest_ref())?.digest;
    Ok((now != e.digest).then_some(now))
}

/// The platform choice that fetches what `e` pinned.
pub fn platform_choice(e: &LockEntry) -> PlatformChoice {
    match (e.all_platforms, e.platforms.as_slice()) {
        (true, _) => PlatformChoice::All,
        (false, [(p, _)]) => PlatformChoice::One(p.clone()),
        _ => PlatformChoice::One(Platform::host()),
    }
}

/// Whether `desc` (what a store, bundle or archive names the reference with) is what `e`
/// pinned: the manifest or index itself, or the pinned platform picked from the pinned index.
/// The error says what is held and what is pinned.
pub fn check(e: &LockEntry, desc: &Descriptor, holder: &str) -> Result<()> {
    if desc.digest == e.digest {
        return Ok(());
    }
    let from = picked_from(desc).ok().flatten();
    if from.as_ref() == Some(&e.digest) && e.platforms.iter().any(|(_, d)| *d == desc.digest) {
        return Ok(());
    }
    let held = match from {
        Some(i) => format!("{} (picked from index {i})", desc.digest),
        None => desc.digest.to_string(),
    };
    Err(Error::Other(format!("{}: the {holder} holds {held}, but the lock pins {}", e.reference, e.digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn lock_files_round_trip_and_bad_lines_name_their_number() {
        let text = format!("{HEADER}\n# comment\n\n127.0.0.1:5000/a/b:1 {A} linux/amd64={B}\n?registry.lan/library/redis:7 {B}\n");
        let lock = Lock::parse(&text, "images.lock").unwrap();
        assert_eq!(lock.entries.len(), 2);
        assert!(lock.entries[1].optional && lock.entries[1].reference.to_string() == "registry.lan/library/redis:7");
        let again = Lock::parse(&lock.render(), "x").unwrap();
        assert_eq!(again, lock);
        assert_eq!(Lock::parse(&again.render(), "x").unwrap().render(), lock.render(), "stable");
        for (bad, line, want) in [
            (format!("{HEADER}\nNot/A/Ref {A}\n"), 2, "invalid reference"),
            (format!("{HEADER}\n\nregistry.lan/r:7\n"), 3, "no digest"),
            (format!("{HEADER}\nregistry.lan/r:7 sha256:xyz\n"), 2, "not a sha256"),
            (format!("{HEADER}\nregistry.lan/r:7 {A} linux={B}\n"), 2, "platform"),
            (format!("{HEADER}\nregistry.lan/r:7 {A} linux/amd64\n"), 2, "PLATFORM=DIGEST"),
            (format!("{HEADER}\nregistry.lan/r:7 {A}\nregistry.lan/r:7 {B}\n"), 3, "twice"),
            ("# ocibundle lock v2\n".to_string(), 1, "unsupported version"),
            ("registry.lan/r:7\n".to_string(), 1, "not a lock file"),
        ] {
            let e = Lock::parse(&bad, "images.lock").unwrap_err().to_string();
            assert!(e.starts_with(&format!("images.lock:{line}: ")) && e.contains(want) && !e.contains('\n'), "{bad:?}: {e}");
        }
    }
}

//! The lock file: every reference of an image list resolved to the digests it named at one
//! moment (the index, the platform manifests chosen from it, and the referrers found), in a
//! small line-per-image text form (docs/design.md, "Lock file"), so `fetch`, `bundle` and
//! `verify` act on exactly those bytes and a tag that moved since is reported, never silently
//! followed. This file owns the format (versions 1 and 2); `resolve` asks the registries.
use std::fmt::Write as _;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::reference::{Platform, Reference};
use crate::referrers::{Kind, Pin};
use crate::store::picked_from;

mod resolve;
pub use resolve::{moved, platform_choice, resolve, Resolved};

/// The first line of a version 2 lock file (what `lock` writes): images and their referrers.
pub const HEADER: &str = "# ocibundle lock v2";
/// The first line of a version 1 lock file (images only), still read.
pub const HEADER_V1: &str = "# ocibundle lock v1";
const MAGIC: &str = "# ocibundle lock";
/// The first field of a referrer line (version 2), under its image.
const REFERRER: &str = "referrer";

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
    /// The referrers found for it (sorted; empty when none were, or in a version 1 lock).
    pub referrers: Vec<Pin>,
}

impl LockEntry {
    /// The manifests a referrer of this image may name as its subject: the image or index,
    /// its platforms, and its pinned referrers (referrers of referrers).
    fn subjects(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.digest).chain(self.platforms.iter().map(|(_, d)| d)).chain(self.referrers.iter().map(|p| &p.digest))
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lock {
    /// Version 2: every entry's referrers are pinned (an entry with none has none). A version
    /// 1 lock pins no referrers, and commands take them as they find them.
    pub pins_referrers: bool,
    pub entries: Vec<LockEntry>,
}

/// Whether `text` is a lock file (rather than a plain image list).
pub fn is_lock(text: &str) -> bool {
    text.lines().next().is_some_and(|l| l.trim_end().starts_with(MAGIC))
}

impl Lock {
    /// Parses a lock file (version 1 or 2); `file` names it in errors, which also give the
    /// line number.
    pub fn parse(text: &str, file: &str) -> Result<Lock> {
        let mut lines = text.lines();
        let first = lines.next().unwrap_or("").trim_end();
        let pins_referrers = match first {
            HEADER => true,
            HEADER_V1 => false,
            _ => {
                let what = if first.starts_with(MAGIC) { format!("unsupported version {:?} (this ocibundle reads {HEADER_V1:?} and {HEADER:?})", crate::error::one_line(first, 60)) } else { format!("not a lock file (its first line must be {HEADER:?})") };
                return Err(Error::Other(format!("{file}:1: {what}")));
            }
        };
        let mut entries: Vec<LockEntry> = Vec::new();
        // The line number and text of each referrer line of the last entry.
        let mut lines_of: Vec<(usize, String)> = Vec::new();
        for (i, line) in lines.enumerate() {
            let n = i + 2;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |why: String| Error::Other(format!("{file}:{n}: {why}: {}", crate::error::one_line(line, 120)));
            if pins_referrers && line.split_whitespace().next() == Some(REFERRER) {
                let Some(e) = entries.last_mut() else { return Err(at("a referrer line before any image line".into())) };
                let p = parse_referrer(line).map_err(at)?;
                if e.referrers.iter().any(|o| o.digest == p.digest && o.subject == p.subject) {
                    return Err(at(format!("referrer {} of {} is pinned twice", p.digest, p.subject)));
                }
                e.referrers.push(p);
                lines_of.push((n, line.to_string()));
                continue;
            }
            check_subjects(entries.last(), &lines_of, file)?;
            lines_of.clear();
            let e = parse_line(line).map_err(at)?;
            if entries.iter().any(|o| o.reference == e.reference) {
                return Err(Error::Other(format!("{file}:{n}: {} is locked twice", e.reference)));
            }
            entries.push(e);
        }
        check_subjects(entries.last(), &lines_of, file)?;
        for e in &mut entries {
            e.referrers.sort();
        }
        Ok(Lock { pins_referrers, entries })
    }

    /// The text form: the header, comments saying how to read it, one line per image in the
    /// order of the image list, each followed (version 2) by its referrers, one line each,
    /// indented, sorted by subject and digest.
    pub fn render(&self) -> String {
        let mut s = if self.pins_referrers {
            format!("{HEADER}\n# [?]REFERENCE DIGEST [all] [OS/ARCH[/VARIANT]=DIGEST]...  (? = optional; written by `ocibundle lock`)\n#   referrer DIGEST KIND SUBJECT  (under its image; KIND = artifact type, cosign:sig|att|sbom, or -)\n")
        } else {
            format!("{HEADER_V1}\n# [?]REFERENCE DIGEST [all] [OS/ARCH[/VARIANT]=DIGEST]...  (? = optional; written by `ocibundle lock`)\n")
        };
        for e in &self.entries {
            let _ = write!(s, "{}{} {}", if e.optional { "?" } else { "" }, e.reference, e.digest);
            if e.all_platforms {
                s.push_str(" all");
            }
            for (p, d) in &e.platforms {
                let _ = write!(s, " {p}={d}");
            }
            s.push('\n');
            if self.pins_referrers {
                let mut pins: Vec<&Pin> = e.referrers.iter().collect();
                pins.sort();
                for p in pins {
                    let _ = writeln!(s, "  {REFERRER} {} {} {}", p.digest, p.kind, p.subject);
                }
            }
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
    let mut e = LockEntry { optional, reference, digest, all_platforms: false, platforms: Vec::new(), referrers: Vec::new() };
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

/// Every referrer of `e` (read from `lines`, in order) names as its subject the image, one of
/// its platforms or another referrer pinned under it (not itself).
fn check_subjects(e: Option<&LockEntry>, lines: &[(usize, String)], file: &str) -> Result<()> {
    let Some(e) = e else { return Ok(()) };
    for (p, (n, line)) in e.referrers.iter().zip(lines) {
        if p.subject == p.digest || !e.subjects().any(|d| *d == p.subject) {
            return Err(Error::Other(format!("{file}:{n}: its subject {} is not {}, one of its platforms or a referrer pinned under it: {}", p.subject, e.reference, crate::error::one_line(line, 120))));
        }
    }
    Ok(())
}

/// `referrer DIGEST KIND SUBJECT`.
fn parse_referrer(line: &str) -> std::result::Result<Pin, String> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [_, digest, kind, subject] = f.as_slice() else { return Err(format!("a referrer line is `{REFERRER} DIGEST KIND SUBJECT`")) };
    let digest: Digest = digest.parse().map_err(|_| format!("{digest:?}: not a sha256 digest"))?;
    let kind: Kind = kind.parse()?;
    let subject: Digest = subject.parse().map_err(|_| format!("{subject:?}: not a sha256 digest"))?;
    Ok(Pin { subject, digest, kind })
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
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    const D: &str = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";

    #[test]
    fn lock_files_round_trip_and_bad_lines_name_their_number() {
        let text = format!("{HEADER}\n# comment\n\n127.0.0.1:5000/a/b:1 {A} linux/amd64={B}\n  referrer {D} cosign:sig {B}\n\treferrer {A} - {C}\n  referrer {C} application/spdx+json {A}\n?registry.lan/library/redis:7 {B}\n");
        let lock = Lock::parse(&text, "images.lock").unwrap();
        assert!(lock.pins_referrers);
        assert_eq!(lock.entries.len(), 2);
        assert!(lock.entries[1].optional && lock.entries[1].reference.to_string() == "registry.lan/library/redis:7");
        let pins: Vec<String> = lock.entries[0].referrers.iter().map(|p| p.to_string()).collect();
        assert_eq!(pins, [format!("{C} (application/spdx+json of {A})"), format!("{D} (cosign:sig of {B})"), format!("{A} (- of {C})")], "sorted by subject, then digest");
        assert!(lock.entries[1].referrers.is_empty());
        let again = Lock::parse(&lock.render(), "x").unwrap();
        assert_eq!(again, lock);
        assert_eq!(Lock::parse(&again.render(), "x").unwrap().render(), lock.render(), "stable");
        assert!(lock.render().contains(&format!("\n  referrer {C} application/spdx+json {A}\n  referrer {D} cosign:sig {B}\n")), "{}", lock.render());
        for (bad, line, want) in [
            (format!("{HEADER}\nNot/A/Ref {A}\n"), 2, "invalid reference"),
            (format!("{HEADER}\n\nregistry.lan/r:7\n"), 3, "no digest"),
            (format!("{HEADER}\nregistry.lan/r:7 sha256:xyz\n"), 2, "not a sha256"),
            (format!("{HEADER}\nregistry.lan/r:7 {A} linux={B}\n"), 2, "platform"),
            (format!("{HEADER}\nregistry.lan/r:7 {A} linux/amd64\n"), 2, "PLATFORM=DIGEST"),
            (format!("{HEADER}\nregistry.lan/r:7 {A}\nregistry.lan/r:7 {B}\n"), 3, "twice"),
            (format!("{HEADER}\n  referrer {B} cosign:sig {A}\n"), 2, "before any image"),
            (format!("{HEADER}\nregistry.lan/r:7 {A}\n  referrer {B} cosign:sig\n"), 3, "referrer DIGEST KIND SUBJECT"),
            (format!("{HEADER}\nregistry.lan/r:7 {A}\n  referrer {B} cosign:exe {A}\n"), 3, "cosign:sig"),
            (format!("{HEADER}\nregistry.lan/r:7 {A}\n  referrer {B} spdx {A}\n"), 3, "not an artifact type"),
            (format!("{HEADER}\nregistry.lan/r:7 {A}\n  referrer sha256:b cosign:sig {A}\n"), 3, "not a sha256"),
            (format!("{HEADER}\nregistry.lan/r:7 {A}\n  referrer {B} cosign:sig {C}\n"), 3, "is not registry.lan/r:7"),
            (format!("{HEADER}\nregistry.lan/r:7 {A}\n  referrer {B} cosign:sig {B}\n"), 3, "is not registry.lan/r:7"),
            (format!("{HEADER}\nregistry.lan/r:7 {A}\n  referrer {B} cosign:sig {A}\n  referrer {B} cosign:att {A}\n"), 4, "pinned twice"),
            ("# ocibundle lock v3\n".to_string(), 1, "unsupported version"),
            ("registry.lan/r:7\n".to_string(), 1, "not a lock file"),
        ] {
            let e = Lock::parse(&bad, "images.lock").unwrap_err().to_string();
            assert!(e.starts_with(&format!("images.lock:{line}: ")) && e.contains(want) && !e.contains('\n'), "{bad:?}: {e}");
        }
    }

    #[test]
    fn version_1_locks_are_read_and_written_back_as_version_1() {
        let text = format!("{HEADER_V1}\n127.0.0.1:5000/a/b:1 {A} linux/amd64={B}\n");
        let lock = Lock::parse(&text, "old.lock").unwrap();
        assert!(!lock.pins_referrers && lock.entries[0].referrers.is_empty());
        assert!(lock.render().starts_with(&format!("{HEADER_V1}\n")) && lock.render().ends_with(&format!("127.0.0.1:5000/a/b:1 {A} linux/amd64={B}\n")));
        // `referrer` is no keyword in version 1: there it would be an image's name.
        let e = Lock::parse(&format!("{HEADER_V1}\n127.0.0.1:5000/a/b:1 {A}\n  referrer {B} cosign:sig {A}\n"), "old.lock").unwrap_err().to_string();
        assert!(e.starts_with("old.lock:3: "), "{e}");
    }
}

//! Referrers held to a lock file's pins: what one referrer is as a lock line records it
//! (`Pin`: subject, digest, kind), and the rule that keeps only pinned referrers of what
//! discovery found, naming the pinned ones missing and counting the new ones left.
use std::fmt;

use super::{COSIGN_SUFFIXES, Discovered, Filter, Link, Listed, assemble, parse_ref};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::reference::Reference;
use crate::source::Source;

/// How a referrer hangs off its subject: listed by subject with an artifact type (the API or
/// the fallback tag; empty when an index referrer has none), or one of cosign's tags.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Type(String),
    /// `sig`, `att` or `sbom`.
    Cosign(String),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Cosign(s) => write!(f, "cosign:{s}"),
            Kind::Type(t) if t.is_empty() => f.write_str("-"),
            Kind::Type(t) => f.write_str(t),
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    /// `cosign:sig|att|sbom`, `-` (no artifact type), or a media type (`type/subtype`).
    fn from_str(s: &str) -> std::result::Result<Kind, String> {
        if let Some(suffix) = s.strip_prefix("cosign:") {
            if !COSIGN_SUFFIXES.contains(&suffix) {
                return Err(format!(
                    "{s:?}: cosign's tags are cosign:sig, cosign:att and cosign:sbom"
                ));
            }
            return Ok(Kind::Cosign(suffix.to_string()));
        }
        if s == "-" {
            return Ok(Kind::Type(String::new()));
        }
        let ok = s
            .split_once('/')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
            && s.chars().all(|c| c.is_ascii_graphic());
        if !ok {
            return Err(format!(
                "{s:?} is not an artifact type (type/subtype), cosign:sig|att|sbom or -"
            ));
        }
        Ok(Kind::Type(s.to_string()))
    }
}

impl Filter {
    /// Whether `--referrers` keeps a referrer of this kind.
    pub fn keeps(&self, k: &Kind) -> bool {
        match k {
            Kind::Type(t) => self.keeps_type(t),
            Kind::Cosign(s) => self.keeps_cosign(s),
        }
    }
}

/// One referrer as a lock file pins it. Ordered by subject, then digest: the order of a lock.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pin {
    pub subject: Digest,
    pub digest: Digest,
    pub kind: Kind,
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} of {})", self.digest, self.kind, self.subject)
    }
}

impl Listed {
    /// What a source carries, as a lock pins it.
    pub fn pin(&self) -> Pin {
        let kind = match parse_ref(&self.reference) {
            Some((_, _, Link::Cosign(s))) => Kind::Cosign(s),
            _ => Kind::Type(self.artifact_type.clone()),
        };
        Pin {
            subject: self.subject.clone(),
            digest: self.digest.clone(),
            kind,
        }
    }
}

/// Discovery held to a lock: what to store (the pinned referrers found, nothing else), the
/// pinned ones not found, and the ones found that the lock does not pin (left behind).
#[derive(Debug)]
pub struct Held {
    pub kept: Discovered,
    pub missing: Vec<Pin>,
    pub new: Vec<Pin>,
}

impl Discovered {
    /// Keeps of what was found only what `pins` names; a pin that `filter` does not keep is
    /// not asked for, so it is not missing either.
    pub fn hold_to(self, image: &Reference, pins: &[Pin], filter: &Filter) -> Result<Held> {
        let found_pins = self.pins();
        let missing: Vec<Pin> = pins
            .iter()
            .filter(|p| filter.keeps(&p.kind) && !found_pins.contains(p))
            .cloned()
            .collect();
        let (kept, left): (Vec<_>, Vec<_>) = self
            .found
            .into_iter()
            .partition(|f| pins.contains(&f.pin()));
        let mut new: Vec<Pin> = left.iter().map(super::Found::pin).collect();
        new.sort();
        new.dedup();
        Ok(Held {
            kept: assemble(image, kept)?,
            missing,
            new,
        })
    }
}

/// What the pinned referrers of one image look like in a source: the pins it lacks and the
/// referrers it carries that are not pinned.
pub fn compare(pins: &[Pin], carried: &[Listed]) -> (Vec<Pin>, Vec<Pin>) {
    let have: Vec<Pin> = carried.iter().map(Listed::pin).collect();
    let missing = pins.iter().filter(|p| !have.contains(p)).cloned().collect();
    let mut extra: Vec<Pin> = have.into_iter().filter(|p| !pins.contains(p)).collect();
    extra.sort();
    extra.dedup();
    (missing, extra)
}

/// What a source carries of one image's referrers, against the lock's pins.
#[derive(Debug, Default)]
pub struct Carried {
    /// Pinned, not carried.
    pub missing: Vec<Pin>,
    /// Carried, not pinned.
    pub extra: Vec<Pin>,
    /// Referrer references that carry only referrers the lock does not pin.
    pub unpinned_refs: Vec<String>,
    /// Referrer references (a referrers index) that carry pinned and unpinned ones together.
    pub mixed_refs: Vec<String>,
}

/// The referrers `source` carries for image `name` (its descriptor `desc`; `all` is every
/// reference the source holds) held against `pins`.
pub fn carried(
    source: &dyn Source,
    all: &[(String, Descriptor)],
    name: &str,
    desc: &Descriptor,
    pins: &[Pin],
) -> Result<Carried> {
    let refs: Vec<(String, Descriptor)> =
        super::attach(source, all, vec![(name.to_string(), desc.clone())])?
            .into_iter()
            .skip(1)
            .collect();
    let listed = super::list(source, &refs)?;
    let (missing, extra) = compare(pins, &listed);
    let mut out = Carried {
        missing,
        extra,
        ..Default::default()
    };
    for (r, _) in &refs {
        let members: Vec<Pin> = listed
            .iter()
            .filter(|l| l.reference == *r)
            .map(Listed::pin)
            .collect();
        let unpinned = members.iter().filter(|p| !pins.contains(p)).count();
        if unpinned == 0 {
            continue;
        }
        if unpinned == members.len() {
            out.unpinned_refs.push(r.clone())
        } else {
            out.mixed_refs.push(r.clone())
        }
    }
    Ok(out)
}

/// For every image of `lock` that `source` holds: its name and what the source carries of its
/// referrers against the lock's pins (images the source lacks are the callers' own check).
pub fn held_against<'l>(source: &dyn Source, lock: &'l crate::lock::Lock) -> Result<Vec<(&'l crate::lock::LockEntry, String, Carried)>> {
    let all = source.refs()?;
    let mut out = Vec::new();
    for e in &lock.entries {
        let name = e.reference.to_string();
        let Some((_, desc)) = all.iter().find(|(n, _)| *n == name) else { continue };
        let c = carried(source, &all, &name, desc, &e.referrers)?;
        out.push((e, name, c));
    }
    Ok(out)
}

/// The one line for a pinned referrer that is not there.
pub fn missing_error(image: &Reference, p: &Pin, holder: &str) -> Error {
    Error::Other(format!(
        "{image}: referrer {p} is pinned by the lock but {holder}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_refuse_what_they_are_not() {
        for k in [
            "cosign:sig",
            "cosign:att",
            "cosign:sbom",
            "-",
            "application/spdx+json",
            "application/vnd.in-toto+json",
        ] {
            assert_eq!(k.parse::<Kind>().unwrap().to_string(), k);
        }
        for bad in ["cosign:exe", "spdx", "/x", "a/", "a/b c"] {
            assert!(bad.parse::<Kind>().is_err(), "{bad}");
        }
    }
}

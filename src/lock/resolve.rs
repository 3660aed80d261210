//! `ocibundle lock`'s half that asks the registries: each reference resolved to the manifest or
//! index it names now, the platforms chosen from an index, and the referrers found for them
//! (through the same discovery `fetch` runs); also what a tag names now (has it moved?).
use super::{Lock, LockEntry};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fetch::PlatformChoice;
use crate::image::ManifestKind;
use crate::reference::{Platform, Reference};
use crate::referrers::Filter;
use crate::registry::Registry;

/// What resolving an image list gave: the lock, and the optional images that could not be
/// resolved (left out of it).
pub struct Resolved {
    pub lock: Lock,
    pub skipped: Vec<(Reference, String)>,
}

/// Resolves every reference of `list` (`true` = optional) at the registry: the manifest or index
/// it names now, from an index the platform(s) `choice` keeps, and the referrers `filter` keeps
/// of each of those (asked `jobs` images at a time).
pub fn resolve(reg: &Registry, list: &[(bool, Reference)], choice: &PlatformChoice, filter: &Filter, jobs: usize) -> Result<Resolved> {
    let mut lock = Lock { pins_referrers: true, entries: Vec::new() };
    let mut skipped = Vec::new();
    for (optional, r) in list {
        match resolve_one(reg, r, choice) {
            Ok((digest, all_platforms, platforms)) => lock.entries.push(LockEntry { optional: *optional, reference: r.clone(), digest, all_platforms, platforms, referrers: Vec::new() }),
            Err(e) if *optional => skipped.push((r.clone(), e.to_string())),
            Err(e) => return Err(e),
        }
    }
    // The subjects fetch asks about: the platform manifests kept and the index (or the image).
    let asked: Vec<(Reference, Vec<Digest>)> = lock.entries.iter().map(|e| (e.reference.clone(), e.platforms.iter().map(|(_, d)| d.clone()).chain([e.digest.clone()]).collect())).collect();
    let found = crate::referrers::discover_each(reg, &asked, filter, jobs);
    for (e, d) in lock.entries.iter_mut().zip(found) {
        e.referrers = d?.pins();
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

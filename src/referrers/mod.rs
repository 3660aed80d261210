//! Referrers (signatures, SBOMs, attestations) and how they travel with their image: found at
//! fetch (the OCI 1.1 referrers API, else the referrers tag schema `sha256-<hex>`, plus cosign's
//! `sha256-<hex>.sig|.att|.sbom` tags), kept everywhere as references of their own named by
//! those tags in the image's repository, so a store, a bundle, an OCI layout and a push carry
//! them as they carry any reference, digests unchanged.
//!
//! The link is the reference's tag: `REPO:sha256-<hex>` names an OCI index of the referrers of
//! `sha256:<hex>` (the distribution spec's fallback tag, which ocibundle writes the same way
//! whatever the registry offered), `REPO:sha256-<hex>.sig` (`.att`, `.sbom`) names cosign's
//! manifest for it, which has no `subject`. `attach` adds to a selection of images the
//! referrer references that hang off them, referrers of referrers included.
use std::collections::{BTreeMap, BTreeSet};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::graph;
use crate::image::{media, Descriptor, Manifest, ManifestKind};
use crate::limits;
use crate::reference::Reference;
use crate::registry::Registry;
use crate::source::Source;

pub mod pins;
pub use pins::{Held, Kind, Pin};

/// How deep referrers of referrers are followed (a signature of an SBOM of an image is depth 2).
pub const MAX_DEPTH: usize = 4;
/// Cosign's tag suffixes, in the order they are looked up.
pub const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// How a referrer reference is linked to its subject (from its tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// `sha256-<hex>`: an index of referrers (each with `subject`).
    Index,
    /// `sha256-<hex>.<suffix>`: cosign's manifest for the subject (no `subject` field).
    Cosign(String),
}

/// The fallback tag of the referrers of `subject`.
pub fn fallback_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// The subject and link a tag names, when it is a referrer tag.
pub fn parse_tag(tag: &str) -> Option<(Digest, Link)> {
    let rest = tag.strip_prefix("sha256-")?;
    let (hex, link) = match rest.split_once('.') {
        Some((hex, suffix)) if COSIGN_SUFFIXES.contains(&suffix) => (hex, Link::Cosign(suffix.to_string())),
        Some(_) => return None,
        None => (rest, Link::Index),
    };
    Some((format!("sha256:{hex}").parse().ok()?, link))
}

/// The subject and link of a reference name (`reg/repo:sha256-<hex>[.sig]`), when it is one.
pub fn parse_ref(name: &str) -> Option<(Reference, Digest, Link)> {
    let r: Reference = name.parse().ok()?;
    if r.digest.is_some() {
        return None;
    }
    let (d, l) = parse_tag(r.tag.as_deref()?)?;
    Some((r, d, l))
}

/// Whether a reference name is a referrer's (not an image's).
pub fn is_referrer_ref(name: &str) -> bool {
    parse_ref(name).is_some()
}

/// What an artifact is: its `artifactType`, else its config's media type (OCI 1.1's rule).
pub fn artifact_type(m: &Manifest) -> String {
    match (&m.artifact_type, &m.kind) {
        (Some(t), _) => t.clone(),
        (None, ManifestKind::Image(im)) => im.config.media_type.to_string(),
        (None, ManifestKind::Index(_)) => String::new(),
    }
}

/// Which referrers `fetch` keeps (`--referrers all|none|TYPE,...`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Filter {
    #[default]
    All,
    None,
    /// Artifact types; `sig`, `att`, `sbom` name cosign's tags of that suffix.
    Types(Vec<String>),
}

impl std::str::FromStr for Filter {
    type Err = Error;
    fn from_str(s: &str) -> Result<Filter> {
        match s.trim() {
            "all" => Ok(Filter::All),
            "none" => Ok(Filter::None),
            list => {
                let types: Vec<String> = list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect();
                if types.is_empty() {
                    return Err(Error::Other(format!("--referrers {s:?}: expected all, none or a comma-separated list of artifact types")));
                }
                Ok(Filter::Types(types))
            }
        }
    }
}

impl Filter {
    fn keeps_type(&self, t: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::None => false,
            Filter::Types(ts) => ts.iter().any(|x| x == t),
        }
    }
    fn keeps_cosign(&self, suffix: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::None => false,
            Filter::Types(ts) => ts.iter().any(|x| x == suffix),
        }
    }
    /// The one type to ask the referrers API for, when exactly one was given.
    fn api_type(&self) -> Option<&str> {
        match self {
            Filter::Types(ts) if ts.len() == 1 && !COSIGN_SUFFIXES.contains(&ts[0].as_str()) => Some(&ts[0]),
            _ => None,
        }
    }
}

/// The referrers index ocibundle keeps under `sha256-<hex>`: one descriptor per referrer (media
/// type, digest, size, artifactType, annotations, as the referrers API lists them), sorted by
/// digest, compact JSON: the same referrers give the same bytes.
pub fn referrers_index(referrers: &[&Manifest]) -> Vec<u8> {
    let mut sorted: Vec<&&Manifest> = referrers.iter().collect();
    sorted.sort_by(|a, b| a.digest.cmp(&b.digest));
    let manifests: Vec<serde_json::Value> = sorted
        .iter()
        .map(|m| {
            let mut d = serde_json::json!({"mediaType": m.media_type, "digest": m.digest, "size": m.bytes.len()});
            let t = artifact_type(m);
            if !t.is_empty() {
                d["artifactType"] = t.into();
            }
            if !m.annotations.is_empty() {
                d["annotations"] = serde_json::to_value(&m.annotations).expect("a map of strings");
            }
            d
        })
        .collect();
    let doc = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests});
    serde_json::to_vec(&doc).expect("JSON values")
}

/// The fallback index to put at a target that holds `there` under the tag already: `None`
/// when `ours` lists everything `there` does (ours is put as it is), else ours plus the
/// referrers only `there` lists (the distribution spec: add to the index, never drop another
/// client's referrers). `what` names the target in errors.
pub fn merge_index(ours: &[u8], there: Option<&Manifest>, what: &str) -> Result<Option<Vec<u8>>> {
    let Some(there) = there else { return Ok(None) };
    let ManifestKind::Index(theirs) = &there.kind else {
        return Err(Error::Other(format!("{what}: the registry holds a manifest, not an index of referrers, under the fallback tag")));
    };
    let mut doc: serde_json::Value = serde_json::from_slice(ours).map_err(|e| Error::Other(format!("{what}: referrers index: {e}")))?;
    let listed: BTreeSet<String> = doc["manifests"].as_array().into_iter().flatten().filter_map(|d| d["digest"].as_str().map(str::to_string)).collect();
    let theirs_raw: serde_json::Value = serde_json::from_slice(&there.bytes).map_err(|e| Error::Other(format!("{what}: referrers index: {e}")))?;
    let extra: Vec<serde_json::Value> = theirs_raw["manifests"].as_array().into_iter().flatten().filter(|d| d["digest"].as_str().is_some_and(|x| !listed.contains(x))).cloned().collect();
    if extra.is_empty() || theirs.is_empty() {
        return Ok(None);
    }
    let all = doc["manifests"].as_array_mut().expect("ours lists manifests");
    all.extend(extra);
    all.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    Ok(Some(serde_json::to_vec(&doc).expect("JSON values")))
}

/// What fetch found for one image: references to store (`REPO:sha256-<hex>[.sig]` and what
/// they point at), the manifests they need (fetched, digest-checked; the indexes built here),
/// their content blobs, and each referrer as it was found (what a lock file pins).
#[derive(Debug, Default)]
pub struct Discovered {
    pub refs: Vec<(Reference, Descriptor)>,
    pub manifests: Vec<Manifest>,
    pub blobs: Vec<Descriptor>,
    pub found: Vec<Found>,
}

/// One referrer discovery found: its manifest (and, for a referrer that is an index, the
/// manifests it lists), the subject it was found for, and how it was found.
#[derive(Debug, Clone)]
pub struct Found {
    pub subject: Digest,
    pub kind: Kind,
    pub manifest: Manifest,
    pub children: Vec<Manifest>,
}

impl Found {
    pub fn pin(&self) -> Pin {
        Pin { subject: self.subject.clone(), digest: self.manifest.digest.clone(), kind: self.kind.clone() }
    }
}

impl Discovered {
    /// What was found, as a lock file pins it: sorted, each once.
    pub fn pins(&self) -> Vec<Pin> {
        let mut p: Vec<Pin> = self.found.iter().map(Found::pin).collect();
        p.sort();
        p.dedup();
        p
    }
}

/// Builds what the store keeps for `found` (in `image`'s repository): per subject, in the
/// order found, the referrers index ocibundle writes (`sha256-<hex>`) and cosign's tags; the
/// manifests they reach and their content blobs, each once.
pub fn assemble(image: &Reference, found: Vec<Found>) -> Result<Discovered> {
    let repo = Reference { tag: None, digest: None, ..image.clone() };
    let tagged = |t: String| Reference { tag: Some(t), ..repo.clone() };
    let mut out = Discovered::default();
    let mut subjects: Vec<&Digest> = Vec::new();
    for f in &found {
        if !subjects.contains(&&f.subject) {
            subjects.push(&f.subject);
        }
    }
    for s in subjects {
        let listed: Vec<&Manifest> = found.iter().filter(|f| f.subject == *s && matches!(f.kind, Kind::Type(_))).map(|f| &f.manifest).collect();
        if !listed.is_empty() {
            let idx = Manifest::parse(referrers_index(&listed), Some(media::OCI_INDEX), &format!("{image}: referrers of {s}"))?;
            out.refs.push((tagged(fallback_tag(s)), idx.descriptor()));
            out.manifests.push(idx);
        }
        for f in found.iter().filter(|f| f.subject == *s) {
            if let Kind::Cosign(suffix) = &f.kind {
                out.refs.push((tagged(format!("{}.{suffix}", fallback_tag(s))), f.manifest.descriptor()));
            }
        }
    }
    let mut blobs_seen: BTreeSet<Digest> = BTreeSet::new();
    for m in found.iter().flat_map(|f| std::iter::once(&f.manifest).chain(&f.children)) {
        if let ManifestKind::Image(im) = &m.kind {
            for b in std::iter::once(&im.config).chain(&im.layers) {
                if blobs_seen.insert(b.digest.clone()) {
                    out.blobs.push(b.bare());
                }
            }
        }
        if !out.manifests.iter().any(|x| x.digest == m.digest) {
            out.manifests.push(m.clone());
        }
    }
    out.found = found;
    Ok(out)
}

/// Finds what refers to `subjects` (an image's manifests and index) in `image`'s repository,
/// and what refers to those in turn, to `MAX_DEPTH`. A referrer whose `subject` is not the
/// manifest it was listed for, or one that leads back to a manifest above it, is an error in
/// one line (nothing is stored: fetch plans before it copies). A referrer that is an index
/// (an attestation index, say) comes with the manifests it lists.
pub fn discover(reg: &Registry, image: &Reference, subjects: &[Digest], filter: &Filter) -> Result<Discovered> {
    if *filter == Filter::None {
        return Ok(Discovered::default());
    }
    assemble(image, find(reg, image, subjects, filter)?)
}

fn find(reg: &Registry, image: &Reference, subjects: &[Digest], filter: &Filter) -> Result<Vec<Found>> {
    let mut out: Vec<Found> = Vec::new();
    let repo = Reference { tag: None, digest: None, ..image.clone() };
    let tagged = |t: String| Reference { tag: Some(t), ..repo.clone() };
    let mut seen: BTreeSet<Digest> = subjects.iter().cloned().collect();
    // (subject, depth, the chain of subjects above it)
    let mut todo: Vec<(Digest, usize, Vec<Digest>)> = subjects.iter().map(|s| (s.clone(), 1, vec![])).collect();
    while let Some((subject, depth, chain)) = todo.pop() {
        let mut above = chain.clone();
        above.push(subject.clone());
        let loop_err = |d: &Digest| Error::Other(format!("{image}: referrer {d} of {subject} leads back to a manifest it refers to (a referrer loop)"));
        let mut found: Vec<Found> = Vec::new();
        // The API, else the fallback tag.
        let listed = match reg.referrers(&repo, &subject, filter.api_type())? {
            Some(list) => list,
            None => match reg.manifest_if_any(&tagged(fallback_tag(&subject)), &fallback_tag(&subject))? {
                None => Vec::new(),
                Some(Manifest { kind: ManifestKind::Index(children), .. }) => children,
                Some(_) => return Err(Error::Other(format!("{image}: {} is a manifest, not an index of referrers", fallback_tag(&subject)))),
            },
        };
        for c in &listed {
            if above.contains(&c.digest) {
                return Err(loop_err(&c.digest));
            }
            if found.iter().any(|f| f.manifest.digest == c.digest) {
                continue;
            }
            let m = reg.manifest(&repo, &c.digest.to_string())?;
            match graph::subject(&m) {
                Some(s) if s.digest == subject => {}
                other => {
                    return Err(Error::Other(format!(
                        "{image}: referrer {} listed for {subject} names {}, a subject not in the set",
                        m.digest,
                        other.map_or_else(|| "no subject".to_string(), |s| format!("subject {}", s.digest))
                    )))
                }
            }
            if !filter.keeps_type(&artifact_type(&m)) {
                continue;
            }
            let children = index_children(reg, &repo, image, &m, &above)?;
            found.push(Found { subject: subject.clone(), kind: Kind::Type(artifact_type(&m)), manifest: m, children });
        }
        for s in COSIGN_SUFFIXES.iter().filter(|s| filter.keeps_cosign(s)) {
            let tag = format!("{}.{s}", fallback_tag(&subject));
            let Some(m) = reg.manifest_if_any(&tagged(tag.clone()), &tag)? else { continue };
            if above.contains(&m.digest) {
                return Err(loop_err(&m.digest));
            }
            if !matches!(m.kind, ManifestKind::Image(_)) {
                return Err(Error::Other(format!("{image}: {tag} is an index, not a cosign manifest")));
            }
            found.push(Found { subject: subject.clone(), kind: Kind::Cosign(s.to_string()), manifest: m, children: Vec::new() });
        }
        for f in found {
            if seen.insert(f.manifest.digest.clone()) && depth < MAX_DEPTH {
                todo.push((f.manifest.digest.clone(), depth + 1, above.clone()));
            }
            out.push(f);
        }
    }
    Ok(out)
}

/// The manifests a referrer that is an index lists (fetched by digest, checked); none for an
/// image manifest. An index in it, or a manifest above it, is refused in one line.
fn index_children(reg: &Registry, repo: &Reference, image: &Reference, m: &Manifest, above: &[Digest]) -> Result<Vec<Manifest>> {
    let ManifestKind::Index(kids) = &m.kind else { return Ok(Vec::new()) };
    let mut out: Vec<Manifest> = Vec::new();
    for k in kids {
        if above.contains(&k.digest) || k.digest == m.digest {
            return Err(Error::Other(format!("{image}: referrer index {} lists {}, a manifest above it (a referrer loop)", m.digest, k.digest)));
        }
        if k.media_type.is_index() {
            return Err(Error::Other(format!("{image}: referrer index {} lists another index, {}; only manifests are carried in a referrer index", m.digest, k.digest)));
        }
        if out.iter().any(|o| o.digest == k.digest) {
            continue;
        }
        let c = reg.manifest(repo, &k.digest.to_string())?;
        if c.bytes.len() as u64 != k.size || !matches!(c.kind, ManifestKind::Image(_)) {
            return Err(Error::Other(format!("{image}: referrer index {} lists {} ({} bytes), but the registry serves {} bytes of another kind or size for it", m.digest, k.digest, k.size, c.bytes.len())));
        }
        out.push(c);
    }
    Ok(out)
}

/// Discovery for several images at once (`jobs` at a time: a few requests per manifest, most
/// answered 404): for each, its reference and the manifests to ask about (the image, each
/// platform kept, the index a platform was picked from). One result per image, in order.
pub fn discover_each(reg: &Registry, images: &[(Reference, Vec<Digest>)], filter: &Filter, jobs: usize) -> Vec<Result<Discovered>> {
    let found: Vec<std::sync::Mutex<Option<Result<Discovered>>>> = images.iter().map(|_| Default::default()).collect();
    let order: Vec<usize> = (0..images.len()).collect();
    let done = crate::pool::try_each_on(&order, jobs.max(1), |&i, _| {
        let (r, subjects) = &images[i];
        let d = discover(reg, r, subjects, filter).map_err(|e| match e {
            Error::Registry { what, message, retryable } => Error::Registry { what, message: format!("{message} (--referrers none leaves the referrers out)"), retryable },
            e => e,
        });
        *found[i].lock().unwrap() = Some(d);
        Ok(())
    });
    debug_assert!(done.is_ok(), "every item records its own result");
    found.into_iter().map(|m| m.into_inner().unwrap().unwrap_or_else(|| Err(Error::Other("referrer discovery did not run".into())))).collect()
}

/// The manifests and indexes `desc` reaches in `source` (itself included): the subjects its
/// referrers may name.
fn nodes(source: &dyn Source, name: &str, desc: &Descriptor) -> Result<BTreeSet<Digest>> {
    let mut out = BTreeSet::new();
    graph::walk(desc, |d| {
        if !graph::is_node(d) || !source.has(&d.digest) {
            return Ok(None);
        }
        out.insert(d.digest.clone());
        Manifest::parse(source.read_small(d, limits::MANIFEST)?, Some(&d.media_type), name).map(Some)
    })?;
    if let Some(p) = crate::store::picked_from(desc)? {
        out.insert(p);
    }
    Ok(out)
}

/// The referrer references of `all` that hang off `selected` (same repository, tag naming a
/// manifest the image reaches or the index it was picked from), referrers of referrers too,
/// each once, in `all`'s order after the selection: a copy of the selection carries them, and
/// subjects go before their referrers.
pub fn attach(source: &dyn Source, all: &[(String, Descriptor)], selected: Vec<(String, Descriptor)>) -> Result<Vec<(String, Descriptor)>> {
    let mut out = selected;
    let mut subjects: BTreeMap<String, BTreeSet<Digest>> = BTreeMap::new();
    let repo_of = |name: &str| name.parse::<Reference>().ok().map(|r| format!("{}/{}", r.registry, r.repository));
    let mut from = 0;
    loop {
        for (name, desc) in &out[from..] {
            if let Some(repo) = repo_of(name) {
                subjects.entry(repo).or_default().extend(nodes(source, name, desc)?);
            }
        }
        from = out.len();
        for (name, desc) in all {
            if out.iter().any(|(n, _)| n == name) {
                continue;
            }
            let Some((r, subject, _)) = parse_ref(name) else { continue };
            if subjects.get(&format!("{}/{}", r.registry, r.repository)).is_some_and(|s| s.contains(&subject)) {
                out.push((name.clone(), desc.clone()));
            }
        }
        if out.len() == from {
            return Ok(out);
        }
    }
}

/// One referrer as `inspect`, `fetch` and `verify` report it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// The reference that carries it (`REPO:sha256-<hex>` or `REPO:sha256-<hex>.sig`).
    pub reference: String,
    pub subject: Digest,
    pub digest: Digest,
    pub artifact_type: String,
    pub media_type: String,
    /// The manifest's size plus its config's and layers'.
    pub size: u64,
}

/// The referrers the references `refs` (from `attach`) carry, one entry per referrer manifest:
/// the members of each referrers index, and each cosign manifest.
pub fn list(source: &dyn Source, refs: &[(String, Descriptor)]) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for (name, desc) in refs {
        let Some((_, subject, link)) = parse_ref(name) else { continue };
        let one = |d: &Descriptor| -> Result<Listed> {
            let m = Manifest::parse(source.read_small(d, limits::MANIFEST)?, Some(&d.media_type), name)?;
            let size = d.size + graph::children(&m).iter().map(|c| c.size).sum::<u64>();
            Ok(Listed { reference: name.clone(), subject: subject.clone(), digest: d.digest.clone(), artifact_type: artifact_type(&m), media_type: d.media_type.to_string(), size })
        };
        match link {
            Link::Cosign(_) => out.push(one(desc)?),
            Link::Index => {
                let idx = Manifest::parse(source.read_small(desc, limits::MANIFEST)?, Some(&desc.media_type), name)?;
                for c in graph::children(&idx) {
                    out.push(one(c)?);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_their_subject_and_link() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(parse_tag(&format!("sha256-{hex}")), Some((d.clone(), Link::Index)));
        assert_eq!(parse_tag(&format!("sha256-{hex}.sig")), Some((d.clone(), Link::Cosign("sig".into()))));
        assert_eq!(parse_tag(&format!("sha256-{hex}.exe")), None);
        assert_eq!(parse_tag(&format!("sha256-{}", &hex[1..])), None);
        assert_eq!(parse_tag("v1"), None);
        assert!(is_referrer_ref(&format!("127.0.0.1:5000/a/b:sha256-{hex}.att")));
        assert!(!is_referrer_ref(&format!("127.0.0.1:5000/a/b@sha256:{hex}")));
        assert_eq!(fallback_tag(&d), format!("sha256-{hex}"));
    }

    #[test]
    fn filters_parse() {
        assert_eq!("all".parse::<Filter>().unwrap(), Filter::All);
        assert_eq!("none".parse::<Filter>().unwrap(), Filter::None);
        let f: Filter = "sig, application/spdx+json".parse().unwrap();
        assert!(f.keeps_cosign("sig") && !f.keeps_cosign("att") && f.keeps_type("application/spdx+json"));
        assert!(",".parse::<Filter>().is_err());
        assert_eq!(Filter::Types(vec!["application/x".into()]).api_type(), Some("application/x"));
    }
}

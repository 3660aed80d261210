//! The image graph: the one walk over what a manifest reaches (index -> manifests -> config,
//! layers), the referrer edge that points the other way (`subject`: a signature, an SBOM or an
//! attestation names the manifest it is about), and the one platform picker. Every command that
//! follows edges (copy, bundle, verify, export, fsck and gc) goes through here, so they agree
//! on what an image is.
use std::collections::BTreeSet;

use crate::digest::Digest;
use crate::image::{Descriptor, Manifest, ManifestKind};
use crate::reference::Platform;

/// What a blob points at, in the order a walk visits them: an index's manifests in order; an
/// image's config, then its layers in order.
pub fn children(m: &Manifest) -> Vec<&Descriptor> {
    match &m.kind {
        ManifestKind::Index(c) => c.iter().collect(),
        ManifestKind::Image(im) => std::iter::once(&im.config).chain(&im.layers).collect(),
    }
}

/// The manifest `m` refers to, if it is a referrer (OCI 1.1 `subject`). This edge points up:
/// the subject does not list its referrers, so what keeps a referrer is found by asking every
/// candidate for its subject (`referrers`).
pub fn subject(m: &Manifest) -> Option<&Descriptor> {
    m.subject.as_ref()
}

/// Of `candidates`, the referrers that `kept` reaches through subjects, referrers of referrers
/// included (to a fixed point), in the candidates' order; each once.
pub fn referrers<'a>(candidates: &'a [Manifest], kept: &BTreeSet<Digest>) -> Vec<&'a Manifest> {
    let mut reached: BTreeSet<&Digest> = kept.iter().collect();
    let mut out: Vec<&Manifest> = Vec::new();
    loop {
        let before = out.len();
        for m in candidates {
            if !reached.contains(&m.digest) && subject(m).is_some_and(|s| reached.contains(&s.digest)) {
                reached.insert(&m.digest);
                out.push(m);
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// Whether a descriptor names a manifest or an index (a node with edges), not content.
pub fn is_node(d: &Descriptor) -> bool {
    d.media_type.is_manifest() || d.media_type.is_index()
}

/// Walks the graph under `root`, depth first, each digest once (a blob shared by two layers of
/// one image, or by two platforms, is visited the first time only). `visit` is called for every
/// blob, root first, and returns the parsed manifest when the walk should go on below that blob
/// (its `Some` for a node the caller could read), `None` to go no deeper. An error from `visit`
/// ends the walk.
pub fn walk<E>(root: &Descriptor, mut visit: impl FnMut(&Descriptor) -> Result<Option<Manifest>, E>) -> Result<(), E> {
    let mut seen: BTreeSet<Digest> = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        if let Some(m) = visit(&d)? {
            stack.extend(children(&m).into_iter().rev().cloned());
        }
    }
    Ok(())
}

/// The one platform picker: the first image manifest of an index whose platform matches `want`.
/// Nested indexes are never picked (an index of indexes names no platform of its own).
pub fn pick_platform<'a>(children: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    children.iter().find(|c| !c.media_type.is_index() && c.platform.as_ref().is_some_and(|p| want.matches(p)))
}

/// The platforms an index offers, for "no such platform" messages.
pub fn platforms(children: &[Descriptor]) -> Vec<String> {
    children.iter().filter(|c| !c.media_type.is_index()).map(|c| c.platform.as_ref().map_or_else(|| "unknown".to_string(), |p| p.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::media;

    fn desc(mt: &str, data: &[u8], platform: Option<&str>) -> Descriptor {
        Descriptor { media_type: mt.into(), digest: Digest::of(data), size: data.len() as u64, platform: platform.map(|p| p.parse().unwrap()), annotations: None }
    }

    #[test]
    fn the_picker_skips_nested_indexes_and_unknown_platforms() {
        let amd = desc(media::OCI_MANIFEST, b"a", Some("linux/amd64"));
        let nested = desc(media::OCI_INDEX, b"n", Some("linux/arm64"));
        let arm = desc(media::OCI_MANIFEST, b"b", Some("linux/arm64/v8"));
        let none = desc(media::OCI_MANIFEST, b"c", None);
        let kids = vec![none, nested, amd.clone(), arm.clone()];
        assert_eq!(pick_platform(&kids, &"linux/amd64".parse().unwrap()), Some(&amd));
        assert_eq!(pick_platform(&kids, &"linux/arm64".parse().unwrap()), Some(&arm), "not the nested index");
        assert_eq!(pick_platform(&kids, &"linux/s390x".parse().unwrap()), None);
        assert_eq!(platforms(&kids), ["unknown", "linux/amd64", "linux/arm64/v8"]);
    }

    fn referrer(subject: &Descriptor, tag: &str) -> Manifest {
        let cfg = desc(media::OCI_EMPTY, b"{}", None);
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/vnd.example.{tag}","config":{},"layers":[],"subject":{}}}"#,
            media::OCI_MANIFEST,
            serde_json::to_string(&cfg).unwrap(),
            serde_json::to_string(subject).unwrap()
        );
        Manifest::parse(m.into_bytes(), None, tag).unwrap()
    }

    #[test]
    fn referrers_of_kept_manifests_and_of_their_referrers_are_found() {
        let image = desc(media::OCI_MANIFEST, b"image", None);
        let other = desc(media::OCI_MANIFEST, b"other", None);
        let sig = referrer(&image, "sig");
        let sig_of_sig = referrer(&sig.descriptor(), "sig-of-sig");
        let stray = referrer(&other, "stray");
        assert!(sig.is_artifact() && sig.artifact_type.as_deref() == Some("application/vnd.example.sig"));
        assert_eq!(subject(&sig).map(|s| &s.digest), Some(&image.digest));
        // Listed before its subject's referrer: found on the second pass.
        let candidates = vec![sig_of_sig.clone(), stray, sig.clone()];
        let kept: BTreeSet<Digest> = [image.digest.clone()].into_iter().collect();
        let found: Vec<&Digest> = referrers(&candidates, &kept).into_iter().map(|m| &m.digest).collect();
        assert_eq!(found, [&sig.digest, &sig_of_sig.digest]);
    }

    #[test]
    fn the_walk_visits_each_blob_once_in_order() {
        let cfg = desc(media::OCI_CONFIG, b"cfg", None);
        let l1 = desc(media::OCI_LAYER, b"l1", None);
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[{},{}]}}"#,
            media::OCI_MANIFEST,
            serde_json::to_string(&cfg).unwrap(),
            serde_json::to_string(&l1).unwrap(),
            serde_json::to_string(&l1).unwrap()
        );
        let man = Manifest::parse(m.into_bytes(), None, "m").unwrap();
        let root = man.descriptor();
        let mut order = Vec::new();
        walk::<()>(&root, |d| {
            order.push(d.digest.clone());
            Ok(if d.digest == root.digest { Some(man.clone()) } else { None })
        })
        .unwrap();
        assert_eq!(order, [root.digest.clone(), cfg.digest, l1.digest]);
    }
}

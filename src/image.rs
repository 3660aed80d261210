//! Manifests, indexes and descriptors: parsed views over raw registry bytes, which are kept as-is.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::{DiffId, Digest};
use crate::error::{Error, Result};
use crate::reference::Platform;

pub use crate::media;
use crate::media::MediaType;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: MediaType,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestJson {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// An image manifest: a config and its layers.
#[derive(Clone, Debug)]
pub struct ImageManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A parsed manifest or index, beside the exact bytes it was parsed from.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: MediaType,
    pub kind: ManifestKind,
    /// OCI 1.1: what an artifact is (a signature, an SBOM, model weights), when it says so.
    pub artifact_type: Option<String>,
    /// OCI 1.1: the manifest this one refers to (a signature's or an SBOM's image): the
    /// referrer edge, which points up the graph (see `graph::subject`).
    pub subject: Option<Descriptor>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub enum ManifestKind {
    Image(ImageManifest),
    Index(Vec<Descriptor>),
}

// Text forms of the `MediaType` tests, for media types that arrive as text (a Content-Type).
pub fn is_index_type(mt: &str) -> bool {
    MediaType::from(mt).is_index()
}
pub fn is_manifest_type(mt: &str) -> bool {
    MediaType::from(mt).is_manifest()
}
pub fn is_layer_type(mt: &str) -> bool {
    MediaType::from(mt).is_layer()
}
pub fn is_config_type(mt: &str) -> bool {
    MediaType::from(mt).is_config()
}

impl Manifest {
    /// Parses raw manifest bytes. `header_type` is the Content-Type the registry sent (if any);
    /// the document's own `mediaType` wins. `what` names the manifest in errors.
    pub fn parse(bytes: Vec<u8>, header_type: Option<&str>, what: &str) -> Result<Manifest> {
        let digest = Digest::of(&bytes);
        let json: ManifestJson = crate::limits::parse_json(&bytes, what)?;
        let header_type = header_type.map(|h| h.split(';').next().unwrap_or("").trim()).filter(|h| !h.is_empty());
        let media_type = match (&json.media_type, header_type) {
            (Some(m), _) => m.clone(),
            (None, Some(h)) if is_index_type(h) || is_manifest_type(h) => h.to_string(),
            (None, _) if json.manifests.is_some() => media::OCI_INDEX.to_string(),
            (None, _) if json.config.is_some() => media::OCI_MANIFEST.to_string(),
            (None, Some(h)) => h.to_string(),
            (None, None) => {
                if json.schema_version == Some(1) {
                    "application/vnd.docker.distribution.manifest.v1+json".to_string()
                } else {
                    "(none)".to_string()
                }
            }
        };
        let kind = if is_index_type(&media_type) {
            let children = json.manifests.ok_or_else(|| Error::BadJson { what: what.into(), reason: "index without \"manifests\"".into() })?;
            ManifestKind::Index(children)
        } else if is_manifest_type(&media_type) {
            let config = json.config.ok_or_else(|| Error::BadJson { what: what.into(), reason: "manifest without \"config\"".into() })?;
            let layers = json.layers.unwrap_or_default();
            ManifestKind::Image(ImageManifest { config, layers })
        } else {
            // The type is the document's own string: any length, any characters.
            return Err(Error::UnsupportedMediaType { what: what.to_string(), media_type: crate::error::one_line(&media_type, 200) });
        };
        Ok(Manifest { bytes, digest, media_type: media_type.into(), kind, artifact_type: json.artifact_type, subject: json.subject, annotations: json.annotations.unwrap_or_default() })
    }

    /// Whether this is an artifact rather than a container image: it says it is one
    /// (`artifactType`), or its config is not an image config (an empty one, a model's, a
    /// Helm chart's). Indexes are not artifacts by their config; they may say so too.
    pub fn is_artifact(&self) -> bool {
        self.artifact_type.is_some() || matches!(&self.kind, ManifestKind::Image(im) if !is_config_type(&im.config.media_type))
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor { media_type: self.media_type.clone(), digest: self.digest.clone(), size: self.bytes.len() as u64, platform: None, annotations: None }
    }
}

impl Descriptor {
    /// The descriptor as a list of blobs keeps it: what the blob is (media type, digest,
    /// size), not where it was listed (its platform and annotations).
    pub fn bare(&self) -> Descriptor {
        Descriptor { media_type: self.media_type.clone(), digest: self.digest.clone(), size: self.size, platform: None, annotations: None }
    }
}

/// The parts of an image config that ocibundle reads.
#[derive(Clone, Debug, Deserialize, Default)]
pub struct ConfigInfo {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A config's `rootfs.diff_ids`, in layer order. `what` names the config in the error.
pub fn diff_ids(config: &[u8], what: &str) -> Result<Vec<DiffId>> {
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<DiffId>,
    }
    #[derive(Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    let c: Config = crate::limits::parse_json(config, what)?;
    Ok(c.rootfs.diff_ids)
}

impl ConfigInfo {
    /// Parses a config's platform fields; `what` names the config in the error.
    pub fn parse(config: &[u8], what: &str) -> Result<ConfigInfo> {
        crate::limits::parse_json(config, what)
    }
    pub fn platform(&self) -> Platform {
        Platform { os: self.os.clone(), architecture: self.architecture.clone(), variant: self.variant.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_index_and_manifest_and_rejects_schema1() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let idx = format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{d}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#, media::OCI_MANIFEST);
        let m = Manifest::parse(idx.into_bytes(), None, "x").unwrap();
        assert_eq!(m.media_type, media::OCI_INDEX);
        assert!(matches!(m.kind, ManifestKind::Index(ref c) if c.len() == 1));
        let man = format!(r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{d}","size":0}},"layers":[{{"mediaType":"{}","digest":"{d}","size":0}}]}}"#, media::DOCKER_MANIFEST, media::DOCKER_CONFIG, media::DOCKER_LAYER_GZIP);
        let m = Manifest::parse(man.into_bytes(), Some(media::OCI_MANIFEST), "x").unwrap();
        assert_eq!(m.media_type, media::DOCKER_MANIFEST);
        let s1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#.to_vec();
        assert!(matches!(Manifest::parse(s1, Some("application/vnd.docker.distribution.manifest.v1+prettyjws"), "x"), Err(Error::UnsupportedMediaType { .. })));
        assert!(matches!(Manifest::parse(b"{".to_vec(), None, "x"), Err(Error::BadJson { .. })));
    }

    #[test]
    fn non_canonical_digests_are_refused_where_json_enters() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let man = |d: &str| format!(r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{d}","size":0}},"layers":[]}}"#, media::OCI_MANIFEST, media::OCI_CONFIG).into_bytes();
        assert!(Manifest::parse(man(&format!("sha256:{hex}")), None, "m").is_ok());
        for bad in [
            format!("sha256:{}", hex.to_uppercase()),
            format!("SHA256:{hex}"),
            format!("sha256:{}", &hex[..63]),
            format!("sha256:{hex}0"),
            format!("sha512:{hex}{hex}"),
            format!("sha256:../../{}", &hex[6..]),
            format!("sha256:{}/{}", &hex[..31], &hex[32..]),
            hex.to_string(),
        ] {
            let e = Manifest::parse(man(&bad), None, "blobs/sha256/m").unwrap_err().to_string();
            assert!(e.contains("blobs/sha256/m") && e.contains("invalid digest") && !e.contains('\n'), "{bad}: {e}");
        }
    }
}

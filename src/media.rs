//! Media types: the ones ocibundle acts on as an enum, every other one kept verbatim (an
//! artifact's, a signature's, a vendor's), so a descriptor always round-trips byte for byte.
//! It reads as the string it was (`Deref<Target = str>`), so text APIs take it as it is.
use std::fmt;
use std::ops::Deref;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_ND: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_ND_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_ND_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// The config (or layer) of an artifact that has none: `{}`.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// What fetch asks registries for, in order of preference.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A media type. Known ones are variants; `Other` keeps anything else exactly as it came.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum MediaType {
    OciManifest,
    OciIndex,
    DockerManifest,
    DockerList,
    OciConfig,
    DockerConfig,
    OciEmpty,
    /// A layer: the OCI and Docker tar, tar+gzip and tar+zstd types, nondistributable and
    /// foreign ones included; the string says which.
    Layer(&'static str),
    /// Not one ocibundle acts on (and the empty string of a descriptor that names none).
    Other(String),
    #[default]
    Missing,
}

const LAYERS: [&str; 9] = [OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_LAYER_ND, OCI_LAYER_ND_GZIP, OCI_LAYER_ND_ZSTD, DOCKER_LAYER_GZIP, DOCKER_LAYER, DOCKER_FOREIGN_LAYER];

impl MediaType {
    pub fn as_str(&self) -> &str {
        match self {
            MediaType::OciManifest => OCI_MANIFEST,
            MediaType::OciIndex => OCI_INDEX,
            MediaType::DockerManifest => DOCKER_MANIFEST,
            MediaType::DockerList => DOCKER_LIST,
            MediaType::OciConfig => OCI_CONFIG,
            MediaType::DockerConfig => DOCKER_CONFIG,
            MediaType::OciEmpty => OCI_EMPTY,
            MediaType::Layer(s) => s,
            MediaType::Other(s) => s,
            MediaType::Missing => "",
        }
    }
    /// An index or manifest list: lists manifests.
    pub fn is_index(&self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerList)
    }
    /// An image manifest (OCI or Docker schema2; artifacts use the OCI one).
    pub fn is_manifest(&self) -> bool {
        matches!(self, MediaType::OciManifest | MediaType::DockerManifest)
    }
    pub fn is_config(&self) -> bool {
        matches!(self, MediaType::OciConfig | MediaType::DockerConfig)
    }
    /// A container image layer (a tar, maybe compressed): what a docker-archive can hold. The
    /// foreign Docker layer is not one (its bytes live elsewhere).
    pub fn is_layer(&self) -> bool {
        matches!(self, MediaType::Layer(s) if *s != DOCKER_FOREIGN_LAYER)
    }
}

impl From<&str> for MediaType {
    fn from(s: &str) -> MediaType {
        match s {
            OCI_MANIFEST => MediaType::OciManifest,
            OCI_INDEX => MediaType::OciIndex,
            DOCKER_MANIFEST => MediaType::DockerManifest,
            DOCKER_LIST => MediaType::DockerList,
            OCI_CONFIG => MediaType::OciConfig,
            DOCKER_CONFIG => MediaType::DockerConfig,
            OCI_EMPTY => MediaType::OciEmpty,
            "" => MediaType::Missing,
            s => match LAYERS.iter().find(|l| **l == s) {
                Some(l) => MediaType::Layer(l),
                None => MediaType::Other(s.to_string()),
            },
        }
    }
}

impl From<String> for MediaType {
    fn from(s: String) -> MediaType {
        MediaType::from(s.as_str())
    }
}

impl Deref for MediaType {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for MediaType {
    fn eq(&self, o: &str) -> bool {
        self.as_str() == o
    }
}

impl PartialEq<&str> for MediaType {
    fn eq(&self, o: &&str) -> bool {
        self.as_str() == *o
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl serde::Serialize for MediaType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for MediaType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MediaType, D::Error> {
        Ok(MediaType::from(<std::borrow::Cow<'de, str>>::deserialize(d)?.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_types_are_variants_and_every_type_round_trips_verbatim() {
        for s in [OCI_MANIFEST, OCI_INDEX, DOCKER_LIST, OCI_LAYER_ZSTD, DOCKER_FOREIGN_LAYER, "application/vnd.example.model+gguf", "text/plain; charset=utf-8", ""] {
            let m = MediaType::from(s);
            assert_eq!(m.as_str(), s);
            let j = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<MediaType>(&j).unwrap(), m);
        }
        assert_eq!(MediaType::from(OCI_INDEX), MediaType::OciIndex);
        assert!(MediaType::from(DOCKER_LIST).is_index() && MediaType::from(DOCKER_MANIFEST).is_manifest());
        assert!(MediaType::from(OCI_LAYER_GZIP).is_layer() && !MediaType::from(DOCKER_FOREIGN_LAYER).is_layer());
        assert!(matches!(MediaType::from("application/x-evil-layer"), MediaType::Other(_)));
        assert!(!MediaType::from("application/x-evil-layer").is_layer());
    }
}

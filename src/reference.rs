//! Image references (docker's normalisation rules) and platforms.
use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

pub const DOCKER_HUB: &str = "docker.io";
/// Longest `registry/repository` docker accepts.
const NAME_MAX: usize = 255;

/// A fully normalised image reference: `registry/repository[:tag][@digest]`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// The host (and port) to talk to: Docker Hub's API lives on its own name.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB { "registry-1.docker.io" } else { &self.registry }
    }
    /// What the registry's manifest endpoint is asked for: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
    /// True for registries on this machine, which docker also lets speak plain HTTP.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

/// `localhost`, `127.0.0.0/8` or `[::1]`, with or without a port.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    if host == "localhost" {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

fn bad(reference: &str, reason: &str) -> Error {
    Error::BadReference { reference: reference.chars().take(300).collect(), reason: reason.to_string() }
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok || sep.is_empty() {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(input: &str) -> Result<Reference> {
        let s = input.trim();
        if s.is_empty() {
            return Err(bad(input, "empty reference"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d.parse::<Digest>().map_err(|_| bad(input, "invalid digest (expected sha256:<64 hex>)"))?)),
            None => (s, None),
        };
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (&name_tag[..last_slash + i], Some(name_tag[last_slash + i + 1..].to_string())),
            None => (name_tag, None),
        };
        if let Some(t) = &tag
            && !valid_tag(t) {
            return Err(bad(input, "invalid tag"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[') => {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" { DOCKER_HUB.to_string() } else { registry };
        let path = if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path };
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(bad(input, "invalid repository name (lowercase letters, digits and . _ - separators)"));
        }
        if registry.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
            return Err(bad(input, "invalid registry host"));
        }
        // Docker's limit (distribution's NameTotalLengthMax): names come from untrusted archives
        // and layouts too, and every message about the image repeats the name.
        if registry.len() + 1 + path.len() > NAME_MAX {
            return Err(bad(input, &format!("name longer than {NAME_MAX} characters")));
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Ok(Reference { registry, repository: path, tag, digest })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// An `os/arch[/variant]` platform.
#[derive(Clone, PartialEq, Eq, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine, the way image indexes name it.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7".to_string())),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform { os: "linux".into(), architecture: arch.into(), variant }
    }

    fn norm_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8"),
            (_, v) => v,
        }
    }

    /// Whether an image for `candidate` satisfies a request for `self`: OS and architecture
    /// equal; the variant too when the request names one (arm64 without a variant is v8).
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.variant.is_none() || self.norm_variant() == candidate.norm_variant())
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
            return Err(Error::BadPlatform(s.to_string()));
        }
        Ok(Platform { os: parts[0].into(), architecture: parts[1].into(), variant: parts.get(2).map(|v| v.to_string()) })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_name_of_thousands_of_characters_is_refused() {
        let at_max = format!("example.test/{}", "a".repeat(NAME_MAX - "example.test/".len()));
        assert!(at_max.parse::<Reference>().is_ok());
        let e = format!("{at_max}a:1").parse::<Reference>().unwrap_err().to_string();
        assert!(e.contains("longer than 255"), "{e}");
        assert!(e.len() < 400, "the message stays short: {} bytes", e.len());
    }
    fn r(s: &str) -> String {
        s.parse::<Reference>().unwrap().to_string()
    }
    #[test]
    fn docker_normalisation() {
        assert_eq!(r("redis:7"), "docker.io/library/redis:7");
        assert_eq!(r("redis"), "docker.io/library/redis:latest");
        assert_eq!(r("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(r("index.docker.io/library/redis:7"), "docker.io/library/redis:7");
        assert_eq!(r("127.0.0.1:5000/bench/engine-a:v1"), "127.0.0.1:5000/bench/engine-a:v1");
        assert_eq!(r("localhost/a/b"), "localhost/a/b:latest");
        assert_eq!(r("ghcr.io/o/p:1.2-x"), "ghcr.io/o/p:1.2-x");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(r(&format!("redis@{d}")), format!("docker.io/library/redis@{d}"));
        assert_eq!(r(&format!("reg:5000/a:7@{d}")), format!("reg:5000/a:7@{d}"));
        assert_eq!("redis:7".parse::<Reference>().unwrap().api_host(), "registry-1.docker.io");
    }
    #[test]
    fn rejects_bad_references() {
        for s in ["", "Redis:7", "redis:", "redis@sha256:zz", "a//b", "redis:-x", "a/-b", "a b"] {
            assert!(s.parse::<Reference>().is_err(), "{s:?} should be rejected");
        }
    }
    #[test]
    fn loopback() {
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("127.1.2.3"));
        assert!(is_loopback_host("localhost:1"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
        assert!(!is_loopback_host("docker.io"));
    }
    #[test]
    fn platforms() {
        let p: Platform = "linux/arm64".parse().unwrap();
        let v8: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(p.matches(&v8) && v8.matches(&p));
        assert!(!"linux/arm/v7".parse::<Platform>().unwrap().matches(&"linux/arm/v6".parse().unwrap()));
        assert!("linux".parse::<Platform>().is_err());
        assert_eq!(Platform::host().to_string(), if cfg!(target_arch = "x86_64") { "linux/amd64" } else { Platform::host().to_string().leak() });
    }
}

//! Owns the test signer: keys made by `openssl`, cosign-format signatures (the simple-signing
//! payload, signed with `openssl dgst -sha256 -sign` for ECDSA P-256 or `openssl pkeyutl -sign
//! -rawin` for Ed25519, base64 in the layer annotation), pushed to a real registry with curl as
//! cosign does (`sha256-<hex>.sig`), an OCI 1.1 referrer (an SBOM with `subject`) pushed by
//! digest with its fallback tag index, and `openssl` verification of any payload, the
//! independent check every verdict of ocibundle's verifier is held against.
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;

use super::cmd::sha256;
use super::registry::Registry;

pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIG_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A key pair made by openssl: `NAME.key` (private, PEM) and `NAME.pub` (SPKI PEM).
#[derive(Clone, Debug)]
pub struct Key {
    pub private: PathBuf,
    pub public: PathBuf,
    pub ed25519: bool,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("spawn openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

impl Key {
    /// `openssl ecparam -genkey -name prime256v1` (or `genpkey -algorithm ed25519`), public
    /// half with `openssl pkey -pubout`.
    pub fn new(dir: &Path, name: &str, ed25519: bool) -> Key {
        let private = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        if ed25519 {
            openssl(&["genpkey", "-algorithm", "ed25519", "-out", p(&private)]);
        } else {
            openssl(&["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", p(&private)]);
        }
        openssl(&["pkey", "-in", p(&private), "-pubout", "-out", p(&public)]);
        Key { private, public, ed25519 }
    }

    /// The signature of `payload`: DER ECDSA over SHA-256, or Ed25519 over the bytes.
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), payload).unwrap();
        if self.ed25519 {
            openssl(&["pkeyutl", "-sign", "-rawin", "-inkey", p(&self.private), "-in", p(tmp.path())])
        } else {
            openssl(&["dgst", "-sha256", "-sign", p(&self.private), p(tmp.path())])
        }
    }

    /// openssl's own verdict on `sig` over `payload` with the public key.
    pub fn openssl_verifies(&self, payload: &[u8], sig: &[u8]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let (pl, sg) = (dir.path().join("payload"), dir.path().join("sig"));
        std::fs::write(&pl, payload).unwrap();
        std::fs::write(&sg, sig).unwrap();
        let args: Vec<&str> = if self.ed25519 {
            vec!["pkeyutl", "-verify", "-pubin", "-inkey", p(&self.public), "-rawin", "-in", p(&pl), "-sigfile", p(&sg)]
        } else {
            vec!["dgst", "-sha256", "-verify", p(&self.public), "-signature", p(&sg), p(&pl)]
        };
        Command::new("openssl").args(&args).output().expect("spawn openssl").status.success()
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Cosign's simple-signing payload for `reference` (the repository, no tag) at `digest`.
pub fn payload(reference: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

/// A signature as pushed: the payload, the raw signature, and the manifest's digest.
#[derive(Clone, Debug)]
pub struct Signed {
    pub payload: Vec<u8>,
    pub sig: Vec<u8>,
    pub manifest_digest: String,
}

/// Pushes a blob with curl (POST, then PUT with the digest); returns its digest.
pub fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    reg.curl_put_blob(repo, data)
}

/// Puts a manifest under `reference` (a tag or its digest); returns its digest.
pub fn put_manifest(reg: &Registry, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> String {
    reg.curl_put_manifest(repo, reference, media_type, bytes)
}

/// The manifest cosign writes for a signature: a config whose one diff_id is the payload's
/// digest, and one simple-signing layer with the base64 signature in its annotation.
pub fn signature_manifest(payload_digest: &str, payload_len: usize, sig_b64: &str, config: &[u8]) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{}"}},"layers":[{{"mediaType":"{SIMPLESIGNING}","size":{payload_len},"digest":"{payload_digest}","annotations":{{"{SIG_ANNOTATION}":"{sig_b64}"}}}}]}}"#,
        config.len(),
        sha256(config)
    )
    .into_bytes()
}

/// cosign's config of a signature manifest.
pub fn signature_config(payload_digest: &str) -> Vec<u8> {
    format!(
        r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{{"created":"0001-01-01T00:00:00Z"}}],"os":"","rootfs":{{"type":"layers","diff_ids":["{payload_digest}"]}},"config":{{}}}}"#
    )
    .into_bytes()
}

/// Signs `subject` (a manifest digest in `repo`) as cosign does: the payload names
/// `identity` (the repository, as `HOST/REPO`) and `payload_digest` (normally `subject`), the
/// signature `sig` (normally `key.sign(payload)`) goes in the annotation, and the manifest is
/// pushed under `sha256-<subject hex>.sig`.
pub fn push_signature(reg: &Registry, repo: &str, subject: &str, payload: Vec<u8>, sig: Vec<u8>) -> Signed {
    let pd = push_blob(reg, repo, &payload);
    let config = signature_config(&pd);
    push_blob(reg, repo, &config);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&sig);
    let manifest = signature_manifest(&pd, payload.len(), &b64, &config);
    let tag = format!("sha256-{}.sig", subject.trim_start_matches("sha256:"));
    let manifest_digest = put_manifest(reg, repo, &tag, "application/vnd.oci.image.manifest.v1+json", &manifest);
    Signed { payload, sig, manifest_digest }
}

/// The usual good signature of `subject` in `repo` of `reg` by `key`.
pub fn sign(reg: &Registry, repo: &str, subject: &str, key: &Key) -> Signed {
    let pl = payload(&format!("{}/{repo}", reg.host()), subject);
    let sig = key.sign(&pl);
    assert!(key.openssl_verifies(&pl, &sig), "openssl rejects its own signature");
    push_signature(reg, repo, subject, pl, sig)
}

/// An OCI 1.1 referrer of `subject`: an SBOM artifact (empty config, one SPDX layer) with
/// `subject`, pushed by digest, and the fallback tag index `sha256-<hex>` listing it, as a
/// client does for a registry without the referrers API. Returns the SBOM manifest's digest.
pub fn push_sbom(reg: &Registry, repo: &str, subject: &str, subject_size: u64, subject_type: &str, body: &[u8]) -> String {
    let empty = push_blob(reg, repo, b"{}");
    let layer = push_blob(reg, repo, body);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/spdx+json","digest":"{layer}","size":{}}}],"subject":{{"mediaType":"{subject_type}","digest":"{subject}","size":{subject_size}}}}}"#,
        body.len()
    )
    .into_bytes();
    let d = sha256(&manifest);
    put_manifest(reg, repo, &d, "application/vnd.oci.image.manifest.v1+json", &manifest);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{},"artifactType":"application/spdx+json"}}]}}"#,
        manifest.len()
    );
    put_manifest(reg, repo, &format!("sha256-{}", subject.trim_start_matches("sha256:")), "application/vnd.oci.image.index.v1+json", index.as_bytes());
    d
}

//! Offline verification of cosign-format signatures (the promotion gate of `verify`, `import`
//! and `push`): public keys from PEM files (SPKI: ECDSA P-256 or Ed25519, parsed here, checked
//! by `ring`), the simple-signing payload (`docker-manifest-digest` must be the signed
//! manifest's digest, `docker-reference` the image's repository), and the per-image verdict:
//! signed by which key, unsigned, or a bad signature naming the signature's manifest. No
//! network: signatures are the referrers a Source carries (`referrers`). Keyless signatures
//! (Fulcio certificates, transparency log entries) are not verified.
use std::path::Path;

use base64::Engine as _;
use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::graph;
use crate::image::{Descriptor, Manifest, ManifestKind};
use crate::limits;
use crate::referrers::{self, Link};
use crate::source::Source;

/// The layer media type of a cosign signature.
pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature of the layer's payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    EcdsaP256,
    Ed25519,
}

/// A trusted public key (`--key FILE`).
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// The file name, as reports name the key.
    pub name: String,
    /// `sha256:<hex>` of the key's SubjectPublicKeyInfo DER.
    pub id: Digest,
    pub algorithm: Algorithm,
    /// The raw key: an uncompressed P-256 point (65 bytes) or an Ed25519 key (32 bytes).
    raw: Vec<u8>,
}

// DER encodings of the object identifiers a key may carry.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]; // 1.2.840.10045.2.1
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]; // 1.2.840.10045.3.1.7
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70]; // 1.3.101.112

/// One DER element: (tag, contents, the rest after it).
fn der(input: &[u8]) -> std::result::Result<(u8, &[u8], &[u8]), &'static str> {
    let (&tag, rest) = input.split_first().ok_or("truncated")?;
    let (&first, rest) = rest.split_first().ok_or("truncated")?;
    let (len, rest) = match first {
        n if n < 0x80 => (n as usize, rest),
        0x81 => {
            let (&n, rest) = rest.split_first().ok_or("truncated")?;
            (n as usize, rest)
        }
        0x82 => {
            if rest.len() < 2 {
                return Err("truncated");
            }
            (((rest[0] as usize) << 8) | rest[1] as usize, &rest[2..])
        }
        _ => return Err("unsupported length"),
    };
    if rest.len() < len {
        return Err("truncated");
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The algorithm and raw key of a SubjectPublicKeyInfo.
fn parse_spki(spki: &[u8]) -> std::result::Result<(Algorithm, Vec<u8>), String> {
    let (tag, body, rest) = der(spki)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err("not a SubjectPublicKeyInfo".into());
    }
    let (tag, alg, rest) = der(body)?;
    if tag != 0x30 {
        return Err("no algorithm identifier".into());
    }
    let (tag, bits, tail) = der(rest)?;
    if tag != 0x03 || !tail.is_empty() || bits.first() != Some(&0) {
        return Err("no key bits".into());
    }
    let key = bits[1..].to_vec();
    let (tag, oid, params) = der(alg)?;
    if tag != 0x06 {
        return Err("no algorithm".into());
    }
    if oid == OID_ED25519 {
        if !params.is_empty() || key.len() != 32 {
            return Err("an Ed25519 key must be 32 bytes".into());
        }
        return Ok((Algorithm::Ed25519, key));
    }
    if oid == OID_EC_PUBLIC_KEY {
        let (tag, curve, _) = der(params)?;
        if tag != 0x06 || curve != OID_P256 {
            return Err("an EC key on a curve other than P-256 (prime256v1)".into());
        }
        if key.len() != 65 || key[0] != 4 {
            return Err("a P-256 key must be an uncompressed point (65 bytes)".into());
        }
        return Ok((Algorithm::EcdsaP256, key));
    }
    Err("not an ECDSA P-256 or Ed25519 key (RSA and other keys are not supported)".into())
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` (SPKI) file; anything else is an error naming the file.
    pub fn from_file(path: &Path) -> Result<PublicKey> {
        let bytes = limits::read_file_capped(path, limits::KEY_FILE)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
        PublicKey::from_pem(&bytes, &name).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    /// Parses PEM text holding one `PUBLIC KEY`; `name` is what reports call it.
    pub fn from_pem(bytes: &[u8], name: &str) -> std::result::Result<PublicKey, String> {
        const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
        const END: &str = "-----END PUBLIC KEY-----";
        let text = std::str::from_utf8(bytes).map_err(|_| "not a PEM file (not text)".to_string())?;
        let Some(start) = text.find(BEGIN) else {
            let hint = if text.contains("PRIVATE KEY") { " (this is a private key: pass the public one)" } else { "" };
            return Err(format!("no \"{BEGIN}\" block{hint}"));
        };
        let body = &text[start + BEGIN.len()..];
        let end = body.find(END).ok_or_else(|| format!("no \"{END}\" line"))?;
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        let spki = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("bad base64 in the PEM block: {e}"))?;
        let (algorithm, raw) = parse_spki(&spki).map_err(|e| format!("bad public key: {e}"))?;
        Ok(PublicKey { name: name.to_string(), id: Digest::of(&spki), algorithm, raw })
    }

    /// Whether `sig` is this key's signature of `payload`: ECDSA P-256 over SHA-256 (DER, or
    /// the raw 64-byte r||s), or Ed25519.
    pub fn verifies(&self, payload: &[u8], sig: &[u8]) -> bool {
        use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, ED25519};
        match self.algorithm {
            Algorithm::Ed25519 => UnparsedPublicKey::new(&ED25519, &self.raw).verify(payload, sig).is_ok(),
            // DER first (what cosign writes); 64 bytes may also be the raw r||s form, whatever
            // its first byte looks like.
            Algorithm::EcdsaP256 => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.raw).verify(payload, sig).is_ok()
                    || (sig.len() == 64 && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.raw).verify(payload, sig).is_ok())
            }
        }
    }

    /// `cosign.pub (sha256:0123456789ab)`.
    pub fn label(&self) -> String {
        format!("{} ({}…)", self.name, &self.id.to_string()[..19])
    }
}

/// Reads every `--key` file: a missing, malformed or unsupported one is an error in one line.
pub fn load_keys(paths: &[impl AsRef<Path>]) -> Result<Vec<PublicKey>> {
    paths.iter().map(|p| PublicKey::from_file(p.as_ref())).collect()
}

/// What the checks found about one signature (one simple-signing layer).
#[derive(Debug, Clone, Serialize)]
pub struct SignatureCheck {
    /// The manifest it signs (the image's, one platform's, or the index it was picked from).
    pub subject: Digest,
    /// The signature's manifest (cosign's `.sig` manifest, or a referrer).
    pub manifest: Digest,
    /// Which key verified it (`cosign.pub (sha256:…)`), when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why it is bad, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Signed,
    Unsigned,
    BadSignature,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Signed => "signed",
            Verdict::Unsigned => "unsigned",
            Verdict::BadSignature => "bad signature",
        })
    }
}

/// One platform of a multi-platform image, when the image is not signed as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformVerdict {
    pub digest: Digest,
    pub platform: String,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// The verdict on one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageVerdict {
    pub reference: String,
    /// The repository signatures must name (`docker-reference`).
    pub identity: String,
    pub digest: Digest,
    pub verdict: Verdict,
    /// The keys that verified a signature covering the image.
    pub keys: Vec<String>,
    /// Set for an index none of whose signatures covers it whole: each platform's own verdict.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformVerdict>,
    pub signatures: Vec<SignatureCheck>,
}

impl ImageVerdict {
    /// One line for the user: `signed: REF by KEY`, `unsigned: REF`, `bad signature: REF: …`.
    pub fn line(&self) -> String {
        match self.verdict {
            Verdict::Signed => format!("signed: {} by {}", self.reference, self.keys.join(", ")),
            Verdict::Unsigned if self.platforms.iter().any(|p| p.verdict == Verdict::Signed) => {
                let unsigned: Vec<&str> = self.platforms.iter().filter(|p| p.verdict != Verdict::Signed).map(|p| p.platform.as_str()).collect();
                format!("unsigned: {} (only some platforms are signed; not {})", self.reference, unsigned.join(", "))
            }
            Verdict::Unsigned => format!("unsigned: {}", self.reference),
            Verdict::BadSignature => {
                let first = self.signatures.iter().find(|s| s.problem.is_some());
                match first {
                    Some(s) => format!("bad signature: {}: signature {} of {}: {}", self.reference, s.manifest, s.subject, s.problem.as_deref().unwrap_or("")),
                    None => format!("bad signature: {}", self.reference),
                }
            }
        }
    }
}

/// The repository a signature must name for reference `name` (`registry/repository`, with
/// Docker Hub spelled `docker.io`).
fn identity_of(name: &str) -> Result<String> {
    let r: crate::reference::Reference = name.parse()?;
    Ok(format!("{}/{}", r.registry, r.repository))
}

/// `docker-reference` as cosign writes it, normalised like our references (it may spell Docker
/// Hub `index.docker.io`, and carry a tag or digest, which do not count).
fn normalise_identity(s: &str) -> Option<String> {
    let s = s.strip_prefix("index.docker.io/").map(|r| format!("docker.io/{r}")).unwrap_or_else(|| s.to_string());
    identity_of(&s).ok()
}

/// Checks the simple-signing layer `layer` of signature manifest `sig` of `subject`.
fn check_layer(source: &dyn Source, layer: &Descriptor, sig: &Digest, subject: &Digest, identity: &str, keys: &[PublicKey]) -> SignatureCheck {
    let mut check = SignatureCheck { subject: subject.clone(), manifest: sig.clone(), key: None, problem: None };
    let result = (|| -> std::result::Result<String, String> {
        if layer.size > limits::SIGNATURE_PAYLOAD {
            return Err(format!("its payload of {} bytes is over the {} KiB cap", layer.size, limits::SIGNATURE_PAYLOAD >> 10));
        }
        let b64 = layer.annotations.as_ref().and_then(|a| a.get(SIGNATURE_ANNOTATION)).ok_or("no signature annotation")?;
        let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| "the signature annotation is not base64".to_string())?;
        let payload = source.read_small(layer, limits::SIGNATURE_PAYLOAD).map_err(|e| crate::error::one_line(&e.to_string(), 300))?;
        #[derive(serde::Deserialize)]
        struct Payload {
            critical: Critical,
        }
        #[derive(serde::Deserialize)]
        struct Critical {
            identity: Identity,
            image: Image,
        }
        #[derive(serde::Deserialize)]
        struct Identity {
            #[serde(rename = "docker-reference")]
            docker_reference: String,
        }
        #[derive(serde::Deserialize)]
        struct Image {
            #[serde(rename = "docker-manifest-digest")]
            digest: String,
        }
        // The signature first: nothing the payload says counts before a trusted key vouches
        // for it.
        let key = keys.iter().find(|k| k.verifies(&payload, &raw)).ok_or("no --key verifies it (signed by another key, or corrupted)")?;
        let p: Payload = limits::parse_json(&payload, "payload").map_err(|e| format!("not a simple-signing payload: {}", crate::error::one_line(&e.to_string(), 200)))?;
        if p.critical.image.digest != subject.to_string() {
            return Err(format!("its payload signs {}, not {subject}", crate::error::one_line(&p.critical.image.digest, 100)));
        }
        match normalise_identity(&p.critical.identity.docker_reference) {
            Some(id) if id == identity => {}
            _ => return Err(format!("its payload names {}, not {identity}", crate::error::one_line(&p.critical.identity.docker_reference, 200))),
        }
        Ok(key.label())
    })();
    match result {
        Ok(k) => check.key = Some(k),
        Err(e) => check.problem = Some(e),
    }
    check
}

/// The signature manifests a source carries for `subject`, among `carried` (the referrer
/// references `referrers::attach` found for the image): cosign's `.sig` manifest, and
/// referrers in the subject's index that hold simple-signing layers.
fn signatures_of(source: &dyn Source, carried: &[(String, Descriptor)], subject: &Digest) -> Result<Vec<Manifest>> {
    let mut out: Vec<Manifest> = Vec::new();
    for (name, desc) in carried {
        let Some((_, s, link)) = referrers::parse_ref(name) else { continue };
        if &s != subject {
            continue;
        }
        let candidates: Vec<Descriptor> = match link {
            Link::Cosign(suffix) if suffix == "sig" => vec![desc.clone()],
            Link::Cosign(_) => vec![],
            Link::Index => {
                let idx = Manifest::parse(source.read_small(desc, limits::MANIFEST)?, Some(&desc.media_type), name)?;
                graph::children(&idx).into_iter().cloned().collect()
            }
        };
        for d in candidates {
            if out.iter().any(|m| m.digest == d.digest) || !source.has(&d.digest) {
                continue;
            }
            let m = Manifest::parse(source.read_small(&d, limits::MANIFEST)?, Some(&d.media_type), name)?;
            if let ManifestKind::Image(im) = &m.kind
                && im.layers.iter().any(|l| l.media_type == SIMPLESIGNING) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// Every signature check of `subject`.
fn checks_of(source: &dyn Source, carried: &[(String, Descriptor)], subject: &Digest, identity: &str, keys: &[PublicKey]) -> Result<Vec<SignatureCheck>> {
    let mut out = Vec::new();
    for m in signatures_of(source, carried, subject)? {
        let ManifestKind::Image(im) = &m.kind else { continue };
        for l in im.layers.iter().filter(|l| l.media_type == SIMPLESIGNING) {
            out.push(check_layer(source, l, &m.digest, subject, identity, keys));
        }
    }
    Ok(out)
}

fn good_keys(checks: &[SignatureCheck]) -> Vec<String> {
    let mut k: Vec<String> = checks.iter().filter_map(|c| c.key.clone()).collect();
    k.sort();
    k.dedup();
    k
}

/// The verdict on image `name` (pointing at `desc`) in `source`, whose signatures must name
/// `identity_name`'s repository (the image's own name, or with a push `--rewrite` its name
/// before the rewrite).
///
/// The rule for platforms: a good signature of what the reference names (the image manifest,
/// the index, or the index its platform was picked from, which lists it) covers the image. For
/// an index without one, each platform is judged by its own signatures, and the image counts as
/// signed only when every platform is. What is not covered is a bad signature when a signature
/// of it (of the image, or of a platform not signed) failed, else unsigned.
pub fn verify_image(source: &dyn Source, all: &[(String, Descriptor)], name: &str, desc: &Descriptor, identity_name: &str, keys: &[PublicKey]) -> Result<ImageVerdict> {
    let identity = identity_of(identity_name)?;
    let carried = referrers::attach(source, all, vec![(name.to_string(), desc.clone())])?;
    let carried = &carried[1..];
    let mut whole: Vec<Digest> = vec![desc.digest.clone()];
    if let Some(p) = crate::store::picked_from(desc)? {
        // The index counts only if it lists this very manifest (it is verified by its digest).
        if let Some(pd) = crate::source::unlisted_manifest(source, &p, name)? {
            let idx = Manifest::parse(source.read_small(&pd, limits::MANIFEST)?, Some(&pd.media_type), name)?;
            if graph::children(&idx).iter().any(|c| c.digest == desc.digest) {
                whole.push(p);
            }
        }
    }
    let mut signatures = Vec::new();
    for s in &whole {
        signatures.extend(checks_of(source, carried, s, &identity, keys)?);
    }
    let mut keys_found = good_keys(&signatures);
    let mut platforms = Vec::new();
    let mut verdict = match (keys_found.is_empty(), signatures.iter().any(|s| s.problem.is_some())) {
        (false, _) => Verdict::Signed,
        (true, true) => Verdict::BadSignature,
        (true, false) => Verdict::Unsigned,
    };
    if verdict != Verdict::Signed && desc.media_type.is_index() {
        let idx = Manifest::parse(source.read_small(desc, limits::MANIFEST)?, Some(&desc.media_type), name)?;
        let mut all_signed = true;
        for c in graph::children(&idx) {
            let checks = checks_of(source, carried, &c.digest, &identity, keys)?;
            let k = good_keys(&checks);
            let v = if !k.is_empty() {
                Verdict::Signed
            } else if checks.is_empty() {
                Verdict::Unsigned
            } else {
                Verdict::BadSignature
            };
            all_signed &= v == Verdict::Signed;
            platforms.push(PlatformVerdict { digest: c.digest.clone(), platform: c.platform.as_ref().map_or_else(|| "unknown".into(), |p| p.to_string()), verdict: v, keys: k.clone() });
            keys_found.extend(k);
            signatures.extend(checks);
        }
        if all_signed && !platforms.is_empty() {
            verdict = Verdict::Signed;
            keys_found.sort();
            keys_found.dedup();
        } else {
            keys_found.clear();
            if platforms.iter().any(|p| p.verdict == Verdict::BadSignature) {
                verdict = Verdict::BadSignature;
            }
        }
    }
    Ok(ImageVerdict { reference: name.to_string(), identity, digest: desc.digest.clone(), verdict, keys: keys_found, platforms, signatures })
}

/// Verdicts on `images` (referrer references among them are skipped: they are what is
/// checked, not images). `identity` maps a name to the name its signatures must carry.
pub fn verify_images(source: &dyn Source, images: &[(String, Descriptor)], keys: &[PublicKey], identity: &dyn Fn(&str) -> String) -> Result<Vec<ImageVerdict>> {
    let all = source.refs()?;
    images
        .iter()
        .filter(|(n, _)| !referrers::is_referrer_ref(n))
        .map(|(n, d)| verify_image(source, &all, n, d, &identity(n), keys))
        .collect()
}

/// With `--require-signed`: an error naming every image not signed (the first few), else Ok.
pub fn require_signed(verdicts: &[ImageVerdict]) -> Result<()> {
    let bad: Vec<String> = verdicts.iter().filter(|v| v.verdict != Verdict::Signed).map(|v| v.line()).collect();
    match bad.as_slice() {
        [] => Ok(()),
        [one] => Err(Error::Other(format!("--require-signed: {one}"))),
        many => Err(Error::Other(crate::error::one_line(&format!("--require-signed: {} images not signed: {}", many.len(), many.join("; ")), 900))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `openssl ecparam -genkey -name prime256v1 | openssl pkey -pubout` and
    // `openssl genpkey -algorithm ed25519 | openssl pkey -pubout`.
    const EC_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEBBLxThVUBUGq5+uVf0GGjBGrN1i0\nJQ9b5ndiIrVZ8iIl/Jp3X8rvO5q6zJw3lUdBoU8Ox/XD1rCVweUxnKS01Q==\n-----END PUBLIC KEY-----\n";
    const ED_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAt4MsqyDApuU3Fr2nYZtXGoFCv1aV5TxMyz7ca2lacoA=\n-----END PUBLIC KEY-----\n";

    /// A PEM `PUBLIC KEY` of `raw` under the fixed SPKI header of its algorithm.
    fn pem(header: &str, raw: &[u8]) -> String {
        let mut der = hex::decode(header).unwrap();
        der.extend_from_slice(raw);
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", base64::engine::general_purpose::STANDARD.encode(der))
    }

    #[test]
    fn ecdsa_der_and_raw_and_ed25519_signatures_verify_and_tampering_does_not() {
        use ring::rand::SystemRandom;
        use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = SystemRandom::new();
        let payload = br#"{"critical":{"identity":{"docker-reference":"r/a"},"image":{"docker-manifest-digest":"sha256:00"},"type":"cosign container image signature"},"optional":null}"#;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let der_signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let raw_signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let ec = PublicKey::from_pem(pem("3059301306072a8648ce3d020106082a8648ce3d030107034200", der_signer.public_key().as_ref()).as_bytes(), "ec.pub").unwrap();
        let der_sig = der_signer.sign(&rng, payload).unwrap();
        let raw_sig = raw_signer.sign(&rng, payload).unwrap();
        assert_eq!(raw_sig.as_ref().len(), 64);
        assert!(ec.verifies(payload, der_sig.as_ref()) && ec.verifies(payload, raw_sig.as_ref()));
        assert!(!ec.verifies(&payload[1..], der_sig.as_ref()) && !ec.verifies(&payload[1..], raw_sig.as_ref()));
        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed_signer = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
        let ed = PublicKey::from_pem(pem("302a300506032b6570032100", ed_signer.public_key().as_ref()).as_bytes(), "ed.pub").unwrap();
        let ed_sig = ed_signer.sign(payload);
        assert!(ed.verifies(payload, ed_sig.as_ref()) && !ed.verifies(&payload[1..], ed_sig.as_ref()));
        assert!(!ec.verifies(payload, ed_sig.as_ref()) && !ed.verifies(payload, der_sig.as_ref()), "each key its own signatures only");
        // A compressed point (33 bytes) is refused in one line rather than misread.
        let mut compressed = vec![2u8];
        compressed.extend_from_slice(&der_signer.public_key().as_ref()[1..33]);
        let e = PublicKey::from_pem(pem("3039301306072a8648ce3d020106082a8648ce3d030107032200", &compressed).as_bytes(), "c.pub").unwrap_err();
        assert!(e.contains("uncompressed"), "{e}");
    }

    #[test]
    fn keys_parse_from_spki_pem_and_junk_is_one_line() {
        let ec = PublicKey::from_pem(EC_PUB.as_bytes(), "ec.pub").unwrap();
        assert_eq!(ec.algorithm, Algorithm::EcdsaP256);
        let ed = PublicKey::from_pem(ED_PUB.as_bytes(), "ed.pub").unwrap();
        assert_eq!(ed.algorithm, Algorithm::Ed25519);
        for (bad, want) in [
            ("", "no \"-----BEGIN PUBLIC KEY-----\" block"),
            ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "private key"),
            ("-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n", "bad base64"),
            ("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9E\n-----END PUBLIC KEY-----\n", "bad public key"),
            ("-----BEGIN PUBLIC KEY-----\nMFkwEw\n", "END PUBLIC KEY"),
        ] {
            let e = PublicKey::from_pem(bad.as_bytes(), "k").unwrap_err();
            assert!(e.contains(want) && !e.contains('\n'), "{bad:?}: {e}");
        }
    }
}

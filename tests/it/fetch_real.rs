//! Fetch tests against a real registry (docker-registry + skopeo/umoci as peers): fixtures, auth, TLS, multi-arch, concurrency.
use crate::harness::cmd::sha256;
use crate::harness::fixtures::push_all;
use crate::harness::registry::{Registry, Variant};

/// Harness check: every fixture pushes to every registry variant and the registry serves it.
#[test]
fn harness_pushes_fixtures_to_every_variant() {
    for v in [Variant::Plain, Variant::Auth, Variant::Tls, Variant::AuthTls] {
        let reg = Registry::start(v);
        let f = push_all(&reg);
        for p in [&f.simple, &f.schema2, &f.zstd, &f.multi, &f.shared] {
            let raw = reg.raw_manifest(&p.reference);
            assert_eq!(sha256(&raw), p.digest, "{v:?} {}", p.reference);
        }
    }
}

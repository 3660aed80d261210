//! TLS trust for registry connections: system roots, `--cert-dir`, and per-host certs.d folders.
use std::path::{Path, PathBuf};

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::error::{Error, Result};

/// System CA bundles, first found wins (Debian, Fedora/RHEL, openSUSE, Alpine).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn pem_certs(path: &Path, out: &mut Vec<Certificate<'static>>) -> Result<()> {
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    for item in ureq::tls::parse_pem(&data) {
        match item {
            Ok(PemItem::Certificate(c)) => out.push(c.to_owned()),
            Ok(_) => {}
            Err(e) => return Err(Error::Other(format!("{}: bad PEM certificate: {e}", path.display()))),
        }
    }
    Ok(())
}

/// CA files of a directory: `*.crt` (and `*.pem`); other files (client keys) are ignored.
fn dir_certs(dir: &Path, out: &mut Vec<Certificate<'static>>) -> Result<usize> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "crt" || x == "pem")).collect();
    files.sort();
    let before = out.len();
    for f in files {
        pem_certs(&f, out)?;
    }
    Ok(out.len() - before)
}

/// The TLS configuration for one registry host.
pub fn config_for(host: &str, cert_dir: Option<&Path>, verify: bool) -> Result<TlsConfig> {
    if !verify {
        return Ok(TlsConfig::builder().disable_verification(true).build());
    }
    let mut certs = Vec::new();
    let mut extra = 0;
    if let Some(d) = cert_dir {
        if !d.is_dir() {
            return Err(Error::Other(format!("--cert-dir {}: not a directory", d.display())));
        }
        extra += dir_certs(d, &mut certs)?;
    }
    for base in ["/etc/containers/certs.d", "/etc/docker/certs.d"] {
        extra += dir_certs(&Path::new(base).join(host), &mut certs)?;
    }
    let env_bundle = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let system = env_bundle.into_iter().chain(SYSTEM_BUNDLES.iter().map(PathBuf::from)).find(|p| p.is_file());
    let roots = match system {
        Some(bundle) => {
            pem_certs(&bundle, &mut certs)?;
            RootCerts::new_with_certs(&certs)
        }
        // No system bundle: Mozilla's roots, unless extra CAs were given (then only those).
        None if extra == 0 => RootCerts::WebPki,
        None => RootCerts::new_with_certs(&certs),
    };
    Ok(TlsConfig::builder().root_certs(roots).build())
}

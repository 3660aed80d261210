//! `ocibundle fetch`: flags to `fetch::FetchOptions` and `RegistryOptions`, then plan + execute.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use clap::{ArgAction, Args};
use ocibundle::fetch::{self, FetchOptions, PlatformChoice};
use ocibundle::registry::auth::{CredentialSource, Credentials};
use ocibundle::registry::{Registry, RegistryOptions};
use ocibundle::{Platform, Reference, Store};

use super::read_ref_list;

/// Which images: references on the command line and/or a list file.
#[derive(Args)]
pub struct ImageArgs {
    /// Image references (docker syntax: redis:7, host:5000/ns/app@sha256:...)
    #[arg(value_name = "REF")]
    pub refs: Vec<String>,
    /// Read references from FILE, one a line (# comments; - for stdin)
    #[arg(long, value_name = "FILE")]
    pub images: Option<PathBuf>,
}

/// How to pull: platforms, registry access, parallelism.
#[derive(Args)]
pub struct PullArgs {
    /// Platform to keep from multi-platform images (default: this machine's)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", conflicts_with = "all_platforms")]
    platform: Option<String>,
    /// Keep every platform of multi-platform images
    #[arg(long)]
    all_platforms: bool,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Blobs downloaded in parallel
    #[arg(long, default_value_t = 4, value_name = "N")]
    jobs: usize,
}

#[derive(Args)]
pub struct FetchArgs {
    #[command(flatten)]
    images: ImageArgs,
    #[command(flatten)]
    pull: PullArgs,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
}

/// Flags shared by every command that talks to registries.
#[derive(Args)]
pub struct RegistryArgs {
    /// Credentials for the registries (USER:PASSWORD)
    #[arg(long, value_name = "USER:PASS")]
    creds: Option<String>,
    /// Auth file (docker config.json / containers auth.json)
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
    /// Directory of extra CA certificates (*.crt)
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// Verify TLS certificates (--tls-verify=false also allows plain HTTP)
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    tls_verify: bool,
}

impl RegistryArgs {
    pub fn options(&self) -> anyhow::Result<RegistryOptions> {
        let explicit = self.creds.as_deref().map(Credentials::parse).transpose()?;
        let retry_base = std::env::var("OCIBUNDLE_RETRY_BASE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(250);
        Ok(RegistryOptions {
            creds: CredentialSource::new(explicit, self.authfile.as_deref())?,
            cert_dir: self.cert_dir.clone(),
            tls_verify: self.tls_verify,
            retry_base: Duration::from_millis(retry_base),
            ..RegistryOptions::default()
        })
    }
}

/// References from the command line and `--images`, parsed, duplicates dropped.
pub fn collect_refs(refs: &[String], images: Option<&Path>) -> anyhow::Result<Vec<Reference>> {
    let mut all: Vec<String> = refs.to_vec();
    if let Some(f) = images {
        all.extend(read_ref_list(f)?);
    }
    if all.is_empty() {
        bail!("no image references given (pass REF... or --images FILE)");
    }
    let mut out: Vec<Reference> = Vec::new();
    for s in all {
        let r: Reference = s.parse()?;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

impl PullArgs {
    /// Fetches `refs` into the store at `root`; `progress` shows bars on a terminal.
    pub fn fetch(&self, root: &Path, refs: &[Reference], progress: bool) -> anyhow::Result<fetch::FetchReport> {
        let platform = match (&self.platform, self.all_platforms) {
            (_, true) => PlatformChoice::All,
            (Some(p), false) => PlatformChoice::One(p.parse::<Platform>()?),
            (None, false) => PlatformChoice::One(Platform::host()),
        };
        if self.jobs == 0 {
            bail!("--jobs must be at least 1");
        }
        let opts = FetchOptions { platform, jobs: self.jobs, progress };
        let reg = Registry::new(self.registry.options()?);
        let store = Store::open(root)?;
        let plan = fetch::plan(&reg, &store, refs, &opts)?;
        Ok(fetch::execute(&reg, &store, plan, &opts)?)
    }
}

pub fn run(root: &Path, a: FetchArgs) -> anyhow::Result<i32> {
    let refs = collect_refs(&a.images.refs, a.images.images.as_deref())?;
    let report = a.pull.fetch(root, &refs, !a.json)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for img in &report.images {
            println!("{} {} fetched {} present {}", img.reference, img.digest, img.counts.bytes_fetched, img.counts.bytes_present);
        }
    }
    Ok(0)
}

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

/// Which platforms of multi-platform images.
#[derive(Args)]
pub struct PlatformArgs {
    /// Platform to keep from multi-platform images (default: this machine's)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", conflicts_with = "all_platforms")]
    platform: Option<String>,
    /// Keep every platform of multi-platform images
    #[arg(long)]
    all_platforms: bool,
}

impl PlatformArgs {
    pub fn choice(&self) -> anyhow::Result<PlatformChoice> {
        Ok(match (&self.platform, self.all_platforms) {
            (_, true) => PlatformChoice::All,
            (Some(p), false) => PlatformChoice::One(p.parse::<Platform>()?),
            (None, false) => PlatformChoice::One(Platform::host()),
        })
    }
}

/// How to pull: platforms, registry access, parallelism.
#[derive(Args)]
pub struct PullArgs {
    #[command(flatten)]
    platforms: PlatformArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Blobs downloaded in parallel
    #[arg(long, default_value_t = 4, value_name = "N")]
    jobs: usize,
    /// Referrers to fetch with each image (signatures, SBOMs, attestations): all, none, or
    /// artifact types separated by commas (sig, att, sbom name cosign's tags)
    #[arg(long, value_name = "all|none|TYPE,...", default_value = "all")]
    referrers: String,
}

#[derive(Args)]
pub struct FetchArgs {
    #[command(flatten)]
    images: ImageArgs,
    #[command(flatten)]
    pull: PullArgs,
    /// With a lock file (--images images.lock): fetch the locked digests even where the tag
    /// has moved since (each move is reported); without it a moved tag fails the fetch
    #[arg(long)]
    allow_moved: bool,
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
    /// Give up on a request or blob still failing this long after its first try, even if
    /// it makes progress (e.g. 90s, 10m, 1h; default: never while it makes progress)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retry_timeout: Option<Duration>,
}

/// `500ms`, `90s`, `10m`, `2h`; a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected a number and a unit (ms, s, m, h), e.g. 10m"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    match ms {
        Some(0) => Err(format!("{s:?}: must be more than zero")),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Err(format!("{s:?}: too long")),
    }
}

/// A millisecond count from the environment (a knob for tests and odd networks).
fn env_ms(name: &str) -> Option<Duration> {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).map(Duration::from_millis)
}

impl RegistryArgs {
    pub fn options(&self) -> anyhow::Result<RegistryOptions> {
        let explicit = self.creds.as_deref().map(Credentials::parse).transpose()?;
        let d = RegistryOptions::default();
        Ok(RegistryOptions {
            creds: CredentialSource::new(explicit, self.authfile.as_deref())?,
            cert_dir: self.cert_dir.clone(),
            tls_verify: self.tls_verify,
            retry_base: env_ms("OCIBUNDLE_RETRY_BASE_MS").unwrap_or(d.retry_base),
            retry_timeout: self.retry_timeout,
            silence: env_ms("OCIBUNDLE_SILENCE_TIMEOUT_MS").filter(|t| !t.is_zero()).unwrap_or(d.silence),
            ..d
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
        let platform = self.platforms.choice()?;
        if self.jobs == 0 {
            bail!("--jobs must be at least 1");
        }
        let opts = FetchOptions { platform, jobs: self.jobs, progress, referrers: self.referrers.parse()? };
        let reg = Registry::new(self.registry.options()?);
        let store = Store::open(root)?;
        let plan = fetch::plan(&reg, &store, refs, &opts)?;
        Ok(fetch::execute(&reg, &store, plan, &opts)?)
    }
}

impl PullArgs {
    /// Fetches exactly what `lock` pins, each image stored under its reference. Every tag is
    /// asked first: one that moved since the lock fails the fetch before anything is fetched
    /// (naming old -> new for each), or with `allow_moved` is reported and the locked digest
    /// fetched. An optional image the registry does not have is left out with a warning.
    pub fn fetch_locked(&self, root: &Path, lock: &ocibundle::lock::Lock, allow_moved: bool, progress: bool) -> anyhow::Result<fetch::FetchReport> {
        if self.jobs == 0 {
            bail!("--jobs must be at least 1");
        }
        let reg = Registry::new(self.registry.options()?);
        let mut moves = Vec::new();
        for e in &lock.entries {
            match ocibundle::lock::moved(&reg, e) {
                Ok(Some(now)) => moves.push(format!("{}: {} -> {now}", e.reference, e.digest)),
                Ok(None) => {}
                Err(err) if e.optional => eprintln!("warning: optional image {}: {err}", e.reference),
                Err(err) => return Err(err.into()),
            }
        }
        if !moves.is_empty() {
            if !allow_moved {
                bail!("{} tag(s) moved since the lock (run `ocibundle lock` again to follow them, or --allow-moved to fetch what was locked): {}", moves.len(), moves.join("; "));
            }
            for m in &moves {
                eprintln!("warning: tag moved since the lock, fetching the locked digest: {m}");
            }
        }
        let filter: ocibundle::referrers::Filter = self.referrers.parse()?;
        let store = Store::open(root)?;
        let mut plan = fetch::FetchPlan { images: Vec::new(), blobs: Default::default() };
        let mut pinned: Vec<&ocibundle::lock::LockEntry> = Vec::new();
        for e in &lock.entries {
            let mut by_digest = e.reference.clone();
            by_digest.digest = Some(e.digest.clone());
            // Referrers are found below, for every image at once, and held to the lock.
            let opts = FetchOptions { platform: ocibundle::lock::platform_choice(e), jobs: self.jobs, progress, referrers: ocibundle::referrers::Filter::None };
            let one = match fetch::plan(&reg, &store, &[by_digest], &opts) {
                Ok(p) => p,
                Err(err) if e.optional => {
                    eprintln!("warning: optional image {} left out: {err}", e.reference);
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            for mut img in one.images {
                ocibundle::lock::check(e, &img.entry, "registry")?;
                img.reference = e.reference.clone();
                plan.images.push(img);
                pinned.push(e);
            }
            for (d, b) in one.blobs {
                plan.blobs.entry(d).or_insert(b);
            }
        }
        if filter != ocibundle::referrers::Filter::None {
            hold_referrers(&reg, &mut plan, &pinned, lock.pins_referrers, &filter, self.jobs)?;
        }
        let opts = FetchOptions { platform: PlatformChoice::All, jobs: self.jobs, progress, referrers: filter };
        Ok(fetch::execute(&reg, &store, plan, &opts)?)
    }
}

/// Finds the referrers of every planned image (`pinned[i]` is the lock entry of image `i`). A
/// version 2 lock keeps only what it pins: a pinned referrer the registry no longer has fails
/// the fetch before anything is fetched (a warning for an optional image), and referrers found
/// that the lock does not pin are left behind, counted on stderr. A version 1 lock pins none,
/// so every referrer found is kept.
fn hold_referrers(reg: &Registry, plan: &mut fetch::FetchPlan, pinned: &[&ocibundle::lock::LockEntry], pins_referrers: bool, filter: &ocibundle::referrers::Filter, jobs: usize) -> anyhow::Result<()> {
    let asked: Vec<(Reference, Vec<ocibundle::Digest>)> = plan.images.iter().map(|img| (img.reference.clone(), fetch::subjects(img))).collect();
    let mut missing: Vec<String> = Vec::new();
    for ((img, found), e) in plan.images.iter_mut().zip(ocibundle::referrers::discover_each(reg, &asked, filter, jobs)).zip(pinned) {
        let found = found?;
        if !pins_referrers {
            img.referrers = found;
            continue;
        }
        let held = found.hold_to(&e.reference, &e.referrers, filter)?;
        for p in &held.missing {
            let err = ocibundle::referrers::pins::missing_error(&e.reference, p, "the registry no longer has it");
            if e.optional {
                eprintln!("warning: optional image: {err}");
            } else {
                missing.push(err.to_string());
            }
        }
        if !held.new.is_empty() {
            let n = held.new.len();
            let mut named: Vec<String> = held.new.iter().take(5).map(|p| p.to_string()).collect();
            if n > 5 {
                named.push(format!("and {} more", n - 5));
            }
            eprintln!("warning: {}: {n} referrer{} found upstream that the lock does not pin, left behind (lock again to take {}): {}", e.reference, if n == 1 { "" } else { "s" }, if n == 1 { "it" } else { "them" }, named.join(", "));
        }
        img.referrers = held.kept;
    }
    if let Some(first) = missing.first() {
        bail!("{} pinned referrer(s) missing, nothing fetched; first: {first}", missing.len());
    }
    for img in &plan.images {
        fetch::add_referrer_blobs(&mut plan.blobs, img);
    }
    Ok(())
}

pub fn run(root: &Path, a: FetchArgs) -> anyhow::Result<i32> {
    let lock = a.images.images.as_deref().map(super::read_lock).transpose()?.flatten();
    let report = match &lock {
        Some(lock) => {
            if !a.images.refs.is_empty() {
                bail!("--images names a lock file, which pins every image: pass no REF beside it");
            }
            a.pull.fetch_locked(root, lock, a.allow_moved, !a.json)?
        }
        None => {
            let refs = collect_refs(&a.images.refs, a.images.images.as_deref())?;
            a.pull.fetch(root, &refs, !a.json)?
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for img in &report.images {
            println!("{} {} fetched {} present {}", img.reference, img.digest, img.counts.bytes_fetched, img.counts.bytes_present);
            for r in &img.referrers {
                println!("  referrer {} {} of {} ({} bytes)", r.artifact_type, r.digest, r.subject, r.size);
            }
        }
        if let Some(note) = retry_note(report.retries, report.bytes_resumed) {
            let n = report.images.len();
            eprintln!("fetched {n} image{} {note}", if n == 1 { "" } else { "s" });
        }
    }
    Ok(0)
}

/// `(12 retries, 3.1 MB resumed)` after a run that needed them; nothing after a clean one.
pub fn retry_note(retries: u64, resumed: u64) -> Option<String> {
    (retries > 0 || resumed > 0).then(|| format!("({retries} retries, {} resumed)", super::human(resumed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_and_refuse_zero_and_nonsense() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["0s", "", "m", "10 parsecs", "-3s", "1.5s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}

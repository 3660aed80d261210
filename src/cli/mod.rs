//! Command-line flags (clap) and their conversion into library options; one file per command.
mod bundle;
mod export;
pub mod fetch;
mod import;
mod inspect;
mod lock;
mod push;
mod store;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ocibundle", version, about = "Carry container images across an air gap: fetch from registries into a verified, deduplicated store.")]
pub struct Cli {
    /// Store directory (default: $OCIBUNDLE_STORE, else $XDG_DATA_HOME/ocibundle/store)
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull images from registries into the store (verified, resumable, deduplicated)
    Fetch(fetch::FetchArgs),
    /// Write one deduplicated bundle file of images from the store
    Bundle(bundle::BundleArgs),
    /// Re-hash every blob of a bundle and check every image in it is complete (with --key: its signatures)
    Verify(verify::VerifyArgs),
    /// List a bundle's images, platforms, layers and shared blobs (reads no layer data)
    Inspect(inspect::InspectArgs),
    /// Exact size of the bundle that `bundle` would write, and per-image sharing
    Size(bundle::SizeArgs),
    /// Copy a bundle into the store, verifying every blob
    Import(import::ImportArgs),
    /// Restore images as a docker-archive, OCI layout or OCI archive, without a daemon
    Export(export::ExportArgs),
    /// Push images from a bundle or the store into a registry (resumable, nothing sent twice)
    Push(push::PushArgs),
    /// Pin every image of a list to the digests its tags name now (a lock file for fetch,
    /// bundle and verify --images)
    Lock(lock::LockArgs),
    /// Inspect and maintain the store
    #[command(subcommand)]
    Store(store::StoreCmd),
}

impl Cli {
    fn store_root(&self) -> anyhow::Result<PathBuf> {
        match &self.store {
            Some(p) => Ok(p.clone()),
            None => Ok(ocibundle::Store::default_root()?),
        }
    }
}

/// Runs the parsed command; the exit code for success (failures are errors).
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let root = cli.store_root()?;
    match cli.command {
        Command::Fetch(args) => fetch::run(&root, args),
        Command::Bundle(a) => bundle::run_bundle(&root, a),
        Command::Verify(a) => verify::run(&root, a),
        Command::Inspect(a) => inspect::run(a),
        Command::Size(a) => bundle::run_size(&root, a),
        Command::Import(a) => import::run(&root, a),
        Command::Export(a) => export::run(&root, a),
        Command::Push(a) => push::run(&root, a),
        Command::Lock(a) => lock::run(a),
        Command::Store(cmd) => store::run(&root, cmd),
    }
}

/// Human-readable byte count (decimal units, as disk vendors and `du --si` count).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// The text of an image list or lock. Read once per run and kept: a command asks whether it
/// is a lock and then for its references, and the list may be a pipe (`-`, `<(...)`) that
/// gives its bytes only once.
fn read_list_text(path: &std::path::Path) -> anyhow::Result<String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static READ: Mutex<Option<HashMap<std::path::PathBuf, String>>> = Mutex::new(None);
    let mut read = READ.lock().unwrap();
    let read = read.get_or_insert_with(HashMap::new);
    if let Some(t) = read.get(path) {
        return Ok(t.clone());
    }
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    };
    read.insert(path.to_path_buf(), text.clone());
    Ok(text)
}

/// Reads references from a file (or `-` for stdin): one a line, `#` comments, blanks ignored.
/// A lock file gives the references it pins (optional ones too).
pub fn read_ref_list(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    Ok(read_marked_list(path)?.into_iter().map(|(_, r)| r).collect())
}

/// The lock file `path` holds, or `None` when it is a plain image list.
pub fn read_lock(path: &std::path::Path) -> anyhow::Result<Option<ocibundle::lock::Lock>> {
    let text = read_list_text(path)?;
    if !ocibundle::lock::is_lock(&text) {
        return Ok(None);
    }
    Ok(Some(ocibundle::lock::Lock::parse(&text, &path.display().to_string())?))
}

/// An image list as `verify --images` and `lock` read it: references, a leading `?` marking an
/// optional one (`true`). A lock file gives its entries.
pub fn read_marked_list(path: &std::path::Path) -> anyhow::Result<Vec<(bool, String)>> {
    let text = read_list_text(path)?;
    if ocibundle::lock::is_lock(&text) {
        let lock = ocibundle::lock::Lock::parse(&text, &path.display().to_string())?;
        return Ok(lock.entries.into_iter().map(|e| (e.optional, e.reference.to_string())).collect());
    }
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| match l.strip_prefix('?') {
            Some(rest) => (true, rest.trim().to_string()),
            None => (false, l.to_string()),
        })
        .collect())
}

/// A bundle to read as a stream: `-` (stdin) or a pipe/FIFO; `None` for a regular file.
pub fn stream_input(path: &std::path::Path) -> anyhow::Result<Option<(Box<dyn std::io::Read>, String)>> {
    if path.as_os_str() == "-" {
        return Ok(Some((Box::new(std::io::stdin().lock()), "stdin".to_string())));
    }
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() && !m.is_dir() => {
            let f = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok(Some((Box::new(f), path.display().to_string())))
        }
        _ => Ok(None),
    }
}

/// What `export`, `push`, `bundle` and `size` read: `--from SOURCE` (a bundle, read over the
/// store, which may hold a delta's base; a docker-archive; an OCI layout or archive) or the
/// store alone.
pub struct Sources {
    pub store: Option<ocibundle::Store>,
    from: Option<ocibundle::transport::Opened>,
}

impl Sources {
    pub fn open(root: &std::path::Path, from: Option<&std::path::Path>) -> anyhow::Result<Sources> {
        // No layout at all means "no store"; a layout that is there but broken is an error.
        let store = if root.join("oci-layout").exists() { Some(ocibundle::Store::open_existing(root)?) } else { None };
        let from = from.map(ocibundle::transport::open).transpose()?;
        if store.is_none() && from.is_none() {
            anyhow::bail!("no store at {} (fetch or import images first, or pass --from SOURCE)", root.display());
        }
        // A format 2 delta read with --from (export, push, bundle): its base's chunks come from
        // the store's own layers, as on import.
        if let (Some(o), Some(s)) = (&from, &store) {
            o.attach_base(s)?;
        }
        if let Some(o) = &from {
            for n in o.notes() {
                eprintln!("note: {n}");
            }
        }
        Ok(Sources { store, from })
    }

    /// Runs `f` on the source.
    pub fn with<T>(&self, f: impl FnOnce(&dyn ocibundle::source::Source) -> T) -> T {
        match (&self.from, &self.store) {
            (Some(o), s) => f(&*o.source(s.as_ref())),
            (None, Some(s)) => f(s),
            (None, None) => unreachable!("Sources::open checks there is one"),
        }
    }
}

/// Where `export` and `push` read images from, and which.
#[derive(clap::Args)]
pub struct SourceArgs {
    /// Read images from SOURCE instead of the store: a bundle (any of its volumes),
    /// docker-archive:FILE, oci:DIR[:REF] or oci-archive:FILE[:REF]
    #[arg(long, value_name = "SOURCE")]
    pub from: Option<PathBuf>,
    #[command(flatten)]
    pub images: fetch::ImageArgs,
    /// Every image in the source
    #[arg(long, conflicts_with_all = ["refs", "images"])]
    pub all: bool,
}

/// The references a selection names in `source`: every one with `--all`. From a lock file: the
/// locked images, each the image its pin names (an optional one may be missing), and, for a
/// version 2 lock, the referrer references to leave out (`unpinned_referrers`).
pub fn selected_names(source: &dyn ocibundle::source::Source, sel: &SourceArgs) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    if let Some(lock) = sel.images.images.as_deref().map(read_lock).transpose()?.flatten() {
        if !sel.images.refs.is_empty() {
            anyhow::bail!("--images names a lock file, which pins every image: pass no REF beside it");
        }
        return Ok((locked_names(source, &lock)?, unpinned_referrers(source, &lock)?));
    }
    Ok((names_in(source, sel.all, &sel.images)?, Vec::new()))
}

/// A version 2 lock's referrer pins held against `source`: a pinned referrer the source lacks
/// is an error (a warning for an optional image); a referrer reference carrying only referrers
/// the lock does not pin is returned, to be left out, with a warning counting them; one that
/// mixes pinned and unpinned referrers is an error (a fetch with the lock writes it again with
/// the pinned ones only). Nothing for a lock that pins no referrers (version 1).
pub fn unpinned_referrers(source: &dyn ocibundle::source::Source, lock: &ocibundle::lock::Lock) -> anyhow::Result<Vec<String>> {
    let mut leave = Vec::new();
    if !lock.pins_referrers {
        return Ok(leave);
    }
    let holder = format!("the {} does not hold it", source.name());
    for (e, name, c) in ocibundle::referrers::pins::held_against(source, lock)? {
        for p in &c.missing {
            let err = ocibundle::referrers::pins::missing_error(&e.reference, p, &holder);
            if !e.optional {
                anyhow::bail!("{err} (fetch --images with the lock brings it)");
            }
            eprintln!("warning: optional image: {err}");
        }
        if let Some(r) = c.mixed_refs.first() {
            anyhow::bail!("{r}: the {} lists referrers of {name} the lock does not pin beside pinned ones (first: {}); fetch --images with the lock keeps only the pinned ones", source.name(), c.extra[0]);
        }
        if !c.unpinned_refs.is_empty() {
            leave.extend(c.unpinned_refs.iter().cloned());
            eprintln!("warning: {name}: {} referrer(s) the lock does not pin left out (first: {})", c.extra.len(), c.extra[0]);
        }
    }
    Ok(leave)
}

/// The references `images` names (normalised), or every one in `source` with `all`.
pub fn names_in(source: &dyn ocibundle::source::Source, all: bool, images: &fetch::ImageArgs) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = if all {
        source.refs()?.into_iter().map(|(n, _)| n).collect()
    } else {
        fetch::collect_refs(&images.refs, images.images.as_deref())?.iter().map(|r| r.to_string()).collect()
    };
    if names.is_empty() {
        anyhow::bail!("the {} holds no images", source.name());
    }
    Ok(names)
}

/// The references of `lock` that `source` holds, each checked against its pin: a source holding
/// another digest under the name is an error naming both; a missing optional image is left out
/// with a warning (a missing required one is left for the caller's "not in the source" error).
pub fn locked_names(source: &dyn ocibundle::source::Source, lock: &ocibundle::lock::Lock) -> anyhow::Result<Vec<String>> {
    let refs = source.refs()?;
    let mut names = Vec::new();
    for e in &lock.entries {
        let name = e.reference.to_string();
        match refs.iter().find(|(n, _)| *n == name) {
            Some((_, d)) => {
                ocibundle::lock::check(e, d, &source.name())?;
                names.push(name);
            }
            None if e.optional => eprintln!("warning: optional image {name} is not in the {}: left out", source.name()),
            None => names.push(name),
        }
    }
    if names.is_empty() {
        anyhow::bail!("the {} holds none of the locked images", source.name());
    }
    Ok(names)
}

/// The promotion gate's flags (`verify`, `import`, `push`): trusted keys and whether an image
/// that is not signed by one of them stops the command.
#[derive(clap::Args, Default)]
pub struct SignArgs {
    /// Check cosign signatures with this public key (PEM: ECDSA P-256 or Ed25519; repeatable)
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// Fail when an image is unsigned or badly signed (needs --key)
    #[arg(long)]
    pub require_signed: bool,
}

impl SignArgs {
    /// Checks the signatures of `images` in `source` when keys were given (before anything is
    /// stored or pushed), printing one line per image on stderr unless `quiet`; an error with
    /// `--require-signed` when one is not signed. `identity` gives the name an image's
    /// signatures must carry.
    pub fn gate(&self, source: &dyn ocibundle::source::Source, images: &[(String, ocibundle::image::Descriptor)], identity: &dyn Fn(&str) -> String, quiet: bool) -> anyhow::Result<Option<Vec<ocibundle::signature::ImageVerdict>>> {
        if self.keys.is_empty() {
            if self.require_signed {
                anyhow::bail!("--require-signed needs at least one --key FILE");
            }
            return Ok(None);
        }
        let keys = ocibundle::signature::load_keys(&self.keys)?;
        let verdicts = ocibundle::signature::verify_images(source, images, &keys, identity)?;
        if !quiet {
            for v in &verdicts {
                eprintln!("{}", v.line());
            }
        }
        if self.require_signed {
            ocibundle::signature::require_signed(&verdicts)?;
        }
        Ok(Some(verdicts))
    }
}

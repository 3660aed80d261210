//! The content-addressed store: an OCI image layout whose blobs are written once, verified.
mod add;
mod blob;
mod check;
mod refs;
mod sink;

pub use add::{add, AddOptions, Added, ANNOTATION_TITLE, DEFAULT_ARTIFACT_TYPE, MODELPACK_ARTIFACT_TYPE};
pub use blob::{PartialBlob, Sealed};
pub use sink::StoreSink;
pub use check::{FsckReport, GcReport, Problem};
pub use refs::{picked_from, RefEntry, ANNOTATION_CONTAINERD_NAME, ANNOTATION_INDEX_DIGEST, ANNOTATION_REF_NAME};

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};

/// A store rooted at a directory (an OCI image layout plus `.ocibundle/` for private state).
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// Held while a command may add blobs that no reference reaches yet; `gc` takes it exclusively.
pub struct UseGuard {
    _file: File,
}

impl Store {
    /// The default location: `$OCIBUNDLE_STORE`, else `$XDG_DATA_HOME/ocibundle/store`,
    /// else `~/.local/share/ocibundle/store`.
    pub fn default_root() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("OCIBUNDLE_STORE").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p).join("ocibundle/store"));
        }
        match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(h) => Ok(PathBuf::from(h).join(".local/share/ocibundle/store")),
            None => Err(Error::Other("no store location: set --store, OCIBUNDLE_STORE or HOME".into())),
        }
    }

    /// Opens a store, creating an empty layout if the directory holds none.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        let store = Store { root };
        fs::create_dir_all(store.blobs_dir()).at(store.blobs_dir())?;
        fs::create_dir_all(store.tmp_dir()).at(store.tmp_dir())?;
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        } else {
            check_layout_file(&layout)?;
        }
        if !store.index_path().exists() {
            let _lock = store.lock_file("index.lock", true)?;
            if !store.index_path().exists() {
                refs::write_index(&store, &[])?;
            }
        }
        Ok(store)
    }

    /// Opens an existing store without creating anything; errors if there is none.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        if !root.join("oci-layout").is_file() {
            return Err(Error::Other(format!("{}: not an ocibundle store (no oci-layout file)", root.display())));
        }
        Store::open(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }
    pub(crate) fn private_dir(&self) -> PathBuf {
        self.root.join(".ocibundle")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.private_dir().join("tmp")
    }
    pub(crate) fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    /// True if the blob is stored (with the expected size, when given). Existence is the dedup
    /// check: a blob only ever gets its final name after its digest was verified.
    /// A symlink under a blob's name is not a blob (it may point anywhere): never followed.
    pub fn has_blob(&self, d: &Digest, size: Option<u64>) -> bool {
        match fs::symlink_metadata(self.blob_path(d)) {
            Ok(m) => m.is_file() && size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    /// Stores a small blob (a manifest) held in memory, after checking it against `d`.
    pub fn put_bytes(&self, d: &Digest, bytes: &[u8]) -> Result<()> {
        if self.has_blob(d, Some(bytes.len() as u64)) {
            return Ok(());
        }
        let mut h = Hasher::new();
        h.update(bytes);
        h.verify("manifest", d, Some(bytes.len() as u64))?;
        self.write_atomic(&self.blob_path(d), bytes)
    }

    /// Streams a local file into the store, for a blob whose digest nobody knows yet: copied
    /// into a temp file and hashed on the way (1 MiB at a time, so a 10 GB file needs no more
    /// memory than a small one), fsynced, then renamed to its digest (or dropped if the store
    /// has it). `what` names the file in errors. Returns the digest and size of what was read.
    pub fn put_file(&self, path: &Path, what: &str) -> Result<(Digest, u64)> {
        use std::io::Read;
        let mut src = File::open(path).map_err(|e| Error::io(path, e))?;
        fs::create_dir_all(self.tmp_dir()).at(self.tmp_dir())?;
        let (f, tmp_path) = tempfile_in(&self.tmp_dir())?;
        let res = (|| {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
            let mut h = Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                if crate::cancel::requested() {
                    return Err(Error::Interrupted);
                }
                let n = src.read(&mut buf).map_err(|e| Error::io(path, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(|e| Error::io(&tmp_path, e).context(what))?;
            }
            let f = out.into_inner().map_err(|e| Error::io(&tmp_path, e.into_error()).context(what))?;
            let size = h.len();
            let digest = h.finish();
            if self.has_blob(&digest, Some(size)) {
                return Ok((digest, size));
            }
            f.sync_data().map_err(|e| Error::io(&tmp_path, e).context(what))?;
            fs::rename(&tmp_path, self.blob_path(&digest)).at(self.blob_path(&digest))?;
            Ok((digest, size))
        })();
        let _ = fs::remove_file(&tmp_path);
        res
    }

    /// Opens a blob for mapping window by window, after checking it still has `size` bytes.
    pub fn map_blob(&self, d: &Digest, size: u64) -> Result<crate::mapped::MappedFile> {
        let path = self.blob_path(d);
        let file = self.open_blob(d)?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len != size {
            return Err(Error::Other(format!(
                "store {}: blob {d} has {len} bytes, not {size} (the store is damaged: run `ocibundle store fsck`)",
                self.root.display()
            )));
        }
        Ok(crate::mapped::MappedFile { file, path, len })
    }

    /// Opens a blob, for reading a stored blob as a stream. Only a regular file is a blob: a
    /// symlink (O_NOFOLLOW), a directory or a device under a blob's name is refused.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.blob_path(d);
        let f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path);
        let f = f.and_then(|f| {
            if f.metadata()?.is_file() {
                Ok(f)
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        });
        f.map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Error::Other(format!("{}: a symlink, not a blob (the store is damaged: run `ocibundle store fsck`)", path.display()))
            } else if e.kind() == std::io::ErrorKind::NotFound {
                Error::Other(format!("blob {d} is not in the store {}", self.root.display()))
            } else {
                Error::io(self.blob_path(d), e)
            }
        })
    }

    /// Reads a stored blob into memory, refusing anything over `cap` bytes.
    pub fn read_blob_capped(&self, d: &Digest, cap: u64) -> Result<Vec<u8>> {
        let f = self.open_blob(d)?;
        let len = f.metadata().at(self.blob_path(d))?.len();
        if len > cap {
            return Err(Error::TooLarge { what: format!("blob {d}"), limit: cap });
        }
        crate::limits::read_capped(f, cap, &format!("blob {d}"), |e| Error::io(self.blob_path(d), e))
    }

    /// Writes a small file atomically: temp file, fsync, rename.
    pub fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<()> {
        fs::create_dir_all(self.tmp_dir()).at(self.tmp_dir())?;
        let tmp = tempfile_in(&self.tmp_dir())?;
        let (mut f, tmp_path) = tmp;
        let res = (|| {
            f.write_all(data).at(&tmp_path)?;
            f.sync_data().at(&tmp_path)?;
            fs::rename(&tmp_path, path).at(path)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp_path);
        }
        res
    }

    /// Takes a lock file under `.ocibundle/` (blocking), exclusive or shared.
    pub(crate) fn lock_file(&self, name: &str, exclusive: bool) -> Result<File> {
        let dir = self.private_dir();
        fs::create_dir_all(&dir).at(&dir)?;
        let path = dir.join(name);
        let f = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).at(&path)?;
        if exclusive { f.lock() } else { f.lock_shared() }.at(&path)?;
        Ok(f)
    }

    /// Marks this process as a user of the store (fetch/import): gc waits until it is done.
    pub fn use_guard(&self) -> Result<UseGuard> {
        let guard = UseGuard { _file: self.lock_file("gc.lock", false)? };
        // Small writes (manifests, index.json) of runs that were killed mid-write.
        crate::litter::sweep_dead_writers(&self.tmp_dir(), "tmp-");
        Ok(guard)
    }

    /// Makes renames into `blobs/sha256` durable (one directory fsync per batch, not per blob).
    pub fn sync_blobs_dir(&self) -> Result<()> {
        File::open(self.blobs_dir()).and_then(|d| d.sync_all()).at(self.blobs_dir())
    }
}

/// Creates a uniquely named temp file in `dir`.
fn tempfile_in(dir: &Path) -> Result<(File, PathBuf)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    for _ in 0..100 {
        let name = format!("tmp-{}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), nanos());
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Err(Error::Other(format!("{}: cannot create a temp file", dir.display())))
}

fn nanos() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
}

/// Refuses an `oci-layout` file that is not JSON or names a layout version other than 1.x:
/// what a later version means is unknown, so nothing in such a directory is trusted.
fn check_layout_file(path: &Path) -> Result<()> {
    check_layout_bytes(&crate::limits::read_file_capped(path, crate::limits::OCI_LAYOUT_FILE)?, path)
}

/// `check_layout_file` on bytes already read (from an archive member); `path` names them.
pub fn check_layout_bytes(bytes: &[u8], path: &Path) -> Result<()> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Layout {
        image_layout_version: String,
    }
    let layout: Layout = crate::limits::parse_json(bytes, &path.display().to_string())?;
    let v = &layout.image_layout_version;
    if v.split('.').next() != Some("1") || v.split('.').count() != 3 || !v.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(Error::UnsupportedLayout { path: path.to_path_buf(), version: v.chars().take(40).collect() });
    }
    Ok(())
}

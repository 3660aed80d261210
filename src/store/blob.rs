//! Partial blobs: a locked temp file per digest that downloads append to, resume from, and
//! that is renamed to its final name only once digest and size match, either at once
//! (`commit`) or when the copy it belongs to commits (`seal`, then `Sealed::publish`).
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::Store;
use crate::digest::{Digest, Hasher};
use crate::error::{IoContext, Result};

const BUF: usize = 1 << 20;

/// An in-progress blob. Only one process holds a given digest's partial at a time (file lock);
/// others wait and then find the blob complete.
pub struct PartialBlob {
    store: Store,
    /// The image and blob this is for, named in every error (`REF: blob DIGEST`).
    what: String,
    digest: Digest,
    size: Option<u64>,
    path: PathBuf,
    out: HashingFile,
}

struct HashingFile {
    file: BufWriter<File>,
    hasher: Hasher,
    /// Start of the range not yet handed to the kernel for writeback.
    flushed: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        crate::writeback::kick(&self.file, &mut self.flushed, self.hasher.len());
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl PartialBlob {
    /// Opens (or waits for) the partial file of `digest`. Returns `None` when the blob is
    /// already stored, possibly by another process that held the lock meanwhile. An existing
    /// partial is re-hashed so a download can continue from its end. `what` (`REF: blob
    /// DIGEST`) is named in every error, the file's own errors (a full disk) included.
    pub fn open(store: &Store, digest: &Digest, size: Option<u64>, what: &str) -> Result<Option<PartialBlob>> {
        Self::open_named(store, digest, size, what).map_err(|e| e.context(what))
    }

    fn open_named(store: &Store, digest: &Digest, size: Option<u64>, what: &str) -> Result<Option<PartialBlob>> {
        let path = store.tmp_dir().join(format!("{}.partial", digest.hex()));
        loop {
            if store.has_blob(digest, size) {
                return Ok(None);
            }
            fs::create_dir_all(store.tmp_dir()).at(store.tmp_dir())?;
            adopt_orphans(store, digest, &path);
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).at(&path)?;
            file.lock().at(&path)?;
            // The holder before us may have renamed or removed this inode: start again then.
            let same = match fs::metadata(&path) {
                Ok(m) => m.ino() == file.metadata().at(&path)?.ino(),
                Err(_) => false,
            };
            if !same {
                continue;
            }
            if store.has_blob(digest, size) {
                let _ = fs::remove_file(&path);
                return Ok(None);
            }
            let mut hasher = Hasher::new();
            let len = file.metadata().at(&path)?.len();
            let mut file = file;
            if size.is_some_and(|s| len > s) {
                file.set_len(0).at(&path)?;
            } else if len > 0 {
                let mut buf = vec![0u8; BUF];
                let mut r = (&file).take(len);
                loop {
                    let n = r.read(&mut buf).at(&path)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                if hasher.len() != len {
                    hasher = Hasher::new();
                    file.set_len(0).at(&path)?;
                }
            }
            let pos = hasher.len();
            file.seek(SeekFrom::Start(pos)).at(&path)?;
            let out = HashingFile { file: BufWriter::with_capacity(BUF, file), flushed: pos, hasher };
            return Ok(Some(PartialBlob { store: store.clone(), what: what.to_string(), digest: digest.clone(), size, path, out }));
        }
    }

    /// A file error of this partial (or of its final name), naming what it is for.
    fn io(&self, path: &std::path::Path, e: io::Error) -> crate::Error {
        crate::Error::io(path, e).context(&self.what)
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Bytes already present: a download resumes from here.
    pub fn offset(&self) -> u64 {
        self.out.hasher.len()
    }

    /// Throws away what is there, to start the download from byte zero.
    pub fn restart(&mut self) -> Result<()> {
        let out = &mut self.out.file;
        let r = out.flush().and_then(|()| out.get_mut().set_len(0)).and_then(|()| out.get_mut().seek(SeekFrom::Start(0)));
        r.map_err(|e| self.io(&self.path, e))?;
        self.out.hasher = Hasher::new();
        self.out.flushed = 0;
        Ok(())
    }

    /// The sink for downloaded bytes; hashes as it writes.
    pub fn writer(&mut self) -> &mut impl Write {
        &mut self.out
    }

    /// Flushes what was written so far (e.g. before giving up, so a later run can resume).
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.io(&self.path, e))
    }

    /// Checks digest and size; only then fsyncs and renames into `blobs/sha256/`. On a mismatch
    /// the partial is deleted: its bytes can never become right.
    pub fn commit(self) -> Result<()> {
        self.seal()?.publish()
    }

    /// Checks digest and size and makes the bytes durable, without naming them yet: a copy
    /// names its blobs when it commits, so a copy that fails leaves none. The sealed file is
    /// `<hex>.ready-PID`; dropped unpublished it goes back to being the partial (complete: the
    /// next copy re-hashes it and reads nothing again), and if the process dies first, the
    /// next `PartialBlob::open` of that digest takes it back the same way.
    pub fn seal(mut self) -> Result<Sealed> {
        self.flush()?;
        let hasher = std::mem::take(&mut self.out.hasher);
        if let Err(e) = hasher.verify(&self.what, &self.digest, self.size) {
            let _ = fs::remove_file(&self.path);
            return Err(e);
        }
        self.out.file.get_ref().sync_data().map_err(|e| self.io(&self.path, e))?;
        let ready = ready_path(&self.store, &self.digest, std::process::id());
        fs::rename(&self.path, &ready).map_err(|e| self.io(&ready, e))?;
        Ok(Sealed { store: self.store.clone(), what: self.what.clone(), digest: self.digest.clone(), ready: Some(ready), partial: self.path.clone() })
    }

    /// Drops the partial file entirely.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn ready_path(store: &Store, d: &Digest, pid: u32) -> PathBuf {
    store.tmp_dir().join(format!("{}.ready-{pid}", d.hex()))
}

/// Takes back, as the digest's partial, what a dead process sealed but never published.
fn adopt_orphans(store: &Store, d: &Digest, partial: &std::path::Path) {
    let Ok(entries) = fs::read_dir(store.tmp_dir()) else { return };
    let prefix = format!("{}.ready-", d.hex());
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = n.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() || crate::litter::alive(pid as i32) {
            continue;
        }
        // Only where no partial is being written: a rename never replaces one.
        if !partial.exists() {
            let _ = fs::rename(e.path(), partial);
        } else {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A verified, durable blob waiting for its name (see `PartialBlob::seal`).
pub struct Sealed {
    store: Store,
    what: String,
    digest: Digest,
    ready: Option<PathBuf>,
    partial: PathBuf,
}

impl Sealed {
    /// Renames the blob to its final name.
    pub fn publish(mut self) -> Result<()> {
        let ready = self.ready.take().expect("published once");
        let dest = self.store.blob_path(&self.digest);
        match fs::rename(&ready, &dest) {
            Ok(()) => Ok(()),
            Err(e) => Err(crate::Error::io(&dest, e).context(&self.what)),
        }
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        if let Some(ready) = self.ready.take()
            && fs::rename(&ready, &self.partial).is_err() {
            let _ = fs::remove_file(ready);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn resume_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = vec![7u8; 3 << 20];
        let d = Digest::of(&data);
        {
            let mut p = PartialBlob::open(&store, &d, Some(data.len() as u64), "blob").unwrap().unwrap();
            p.writer().write_all(&data[..1000]).unwrap();
            p.flush().unwrap();
        }
        let mut p = PartialBlob::open(&store, &d, Some(data.len() as u64), "blob").unwrap().unwrap();
        assert_eq!(p.offset(), 1000);
        p.writer().write_all(&data[1000..]).unwrap();
        p.commit().unwrap();
        assert!(store.has_blob(&d, Some(data.len() as u64)));
        assert!(PartialBlob::open(&store, &d, None, "blob").unwrap().is_none());
    }
    #[test]
    fn mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"right");
        let mut p = PartialBlob::open(&store, &d, Some(5), "blob").unwrap().unwrap();
        p.writer().write_all(b"wrong").unwrap();
        assert!(matches!(p.commit(), Err(crate::Error::DigestMismatch { .. })));
        assert!(!store.has_blob(&d, None));
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }
    #[test]
    fn a_sealed_blob_is_named_only_when_published_and_taken_back_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = b"sealed bytes".to_vec();
        let d = Digest::of(&data);
        let n = Some(data.len() as u64);
        let mut p = PartialBlob::open(&store, &d, n, "blob").unwrap().unwrap();
        p.writer().write_all(&data).unwrap();
        let sealed = p.seal().unwrap();
        assert!(!store.has_blob(&d, None), "sealed is not named");
        drop(sealed);
        // Dropped unpublished: the next open finds the whole blob in its partial.
        let p = PartialBlob::open(&store, &d, n, "blob").unwrap().unwrap();
        assert_eq!(p.offset(), data.len() as u64);
        let sealed = p.seal().unwrap();
        // A process killed while holding it: its file is taken back by the next open.
        let orphan = ready_path(&store, &d, 2_147_483_600);
        fs::rename(sealed.ready.as_ref().unwrap(), &orphan).unwrap();
        std::mem::forget(sealed);
        let p = PartialBlob::open(&store, &d, n, "blob").unwrap().unwrap();
        assert_eq!(p.offset(), data.len() as u64, "the orphan was adopted");
        assert!(!orphan.exists());
        p.seal().unwrap().publish().unwrap();
        assert!(store.has_blob(&d, n));
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0, "nothing left in tmp");
    }
}

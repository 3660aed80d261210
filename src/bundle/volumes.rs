//! Where bundle bytes go and come from: stdout, one file, or numbered volumes (`FILE.001`, …)
//! written under temp names and renamed only when complete, and read back as one stream.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::mapped::{Chunk, Shared};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::format::{decode_volume_header, encode_volume_header, VOLUME_HEADER_LEN};
use crate::digest::{BundleId, Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::writeback;

/// Where a bundle is written.
#[derive(Debug, Clone)]
pub enum Target {
    Stdout,
    /// Nowhere: only counts (exact sizes of version 2 bundles, which `size` predicts by writing).
    Discard { split: Option<u64> },
    File(PathBuf),
    Split { base: PathBuf, size: u64 },
}

/// A volume's name: `FILE.001`.
pub fn volume_path(base: &Path, n: u32) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(format!(".{n:03}"));
    PathBuf::from(s)
}

struct OpenVolume {
    file: io::BufWriter<File>,
    tmp: PathBuf,
    final_path: PathBuf,
    written: u64,
    /// Bytes handed to the kernel for writeback so far (see `writeback`).
    drop_behind: writeback::DropBehind,
    hasher: HashThread,
}


/// Hashes a volume's bytes on its own thread (chunks are shared, not copied), so writing does
/// not wait for it.
struct HashThread {
    tx: Option<SyncSender<Chunk>>,
    handle: Option<JoinHandle<Digest>>,
}

impl HashThread {
    fn new() -> HashThread {
        let (tx, rx): (SyncSender<Chunk>, Receiver<Chunk>) = sync_channel(4);
        let handle = std::thread::spawn(move || {
            let mut h = Hasher::new();
            for (chunk, range) in rx {
                h.update(&(*chunk).as_ref()[range]);
            }
            h.finish()
        });
        HashThread { tx: Some(tx), handle: Some(handle) }
    }
    fn update(&self, data: &[u8]) {
        self.update_shared(Arc::new(data.to_vec()), 0..data.len());
    }
    fn update_shared(&self, chunk: Shared, range: Range<usize>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((chunk, range));
        }
    }
    fn finish(mut self) -> Digest {
        drop(self.tx.take());
        self.handle.take().unwrap().join().expect("hash thread")
    }
}

/// A one-pass writer of the logical bundle stream into the target.
pub struct VolumeWriter {
    target: Target,
    bundle_id: BundleId,
    current: Option<OpenVolume>,
    done: Vec<(PathBuf, PathBuf, Digest, u64)>,
    stdout: Option<Box<dyn Write>>,
    number: u32,
    pub position: u64,
}

impl VolumeWriter {
    pub fn new(target: Target, bundle_id: BundleId) -> Result<VolumeWriter> {
        if let Target::Split { size, .. } = &target
            && *size <= VOLUME_HEADER_LEN + 4096 {
            return Err(Error::Other(format!("--split-size {size} is too small (minimum {} bytes)", VOLUME_HEADER_LEN + 4097)));
        }
        let stdout: Option<Box<dyn Write>> = match &target {
            Target::Stdout => Some(Box::new(io::BufWriter::with_capacity(1 << 20, io::stdout()))),
            Target::Discard { .. } => Some(Box::new(io::sink())),
            _ => None,
        };
        Ok(VolumeWriter { target, bundle_id, current: None, done: Vec::new(), stdout, number: 0, position: 0 })
    }

    /// The size of each volume file, when split.
    pub fn split_size(&self) -> Option<u64> {
        match &self.target {
            Target::Split { size, .. } => Some(*size),
            Target::Discard { split } => *split,
            _ => None,
        }
    }

    fn open_next(&mut self) -> Result<()> {
        self.number += 1;
        let (final_path, header) = match &self.target {
            Target::File(p) => (p.clone(), false),
            Target::Split { base, .. } => (volume_path(base, self.number), true),
            Target::Stdout | Target::Discard { .. } => unreachable!(),
        };
        let tmp = crate::litter::claim_temp(&final_path);
        let f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).at(&final_path)?;
        let mut v = OpenVolume { file: io::BufWriter::with_capacity(1 << 20, f), tmp, final_path, written: 0, drop_behind: writeback::DropBehind::at(0), hasher: HashThread::new() };
        if header {
            let h = encode_volume_header(self.number, &self.bundle_id);
            v.file.write_all(&h).at(&v.final_path)?;
            v.hasher.update(&h);
            v.written = VOLUME_HEADER_LEN;
        }
        self.current = Some(v);
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(mut v) = self.current.take() {
            v.file.flush().at(&v.final_path)?;
            v.file.get_ref().sync_data().at(&v.final_path)?;
            let digest = v.hasher.finish();
            self.done.push((v.tmp, v.final_path, digest, v.written));
        }
        Ok(())
    }

    /// Finishes: fsync, rename every volume into place, write `FILE.sha256`. Returns the
    /// final paths and sizes.
    pub fn commit(mut self) -> Result<Vec<(PathBuf, u64)>> {
        if let Some(s) = &mut self.stdout {
            s.flush().map_err(|e| Error::io("stdout", e))?;
            return Ok(vec![]);
        }
        if self.current.is_none() && self.done.is_empty() {
            self.open_next()?;
        }
        self.close_current()?;
        let mut sums = String::new();
        let mut out = Vec::new();
        for (tmp, fin, digest, len) in &self.done {
            fs::rename(tmp, fin).at(fin)?;
            let name = fin.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            sums.push_str(&format!("{}  {}\n", digest.hex(), name));
            out.push((fin.clone(), *len));
        }
        let base = match &self.target {
            Target::File(p) => p.clone(),
            Target::Split { base, .. } => base.clone(),
            Target::Stdout | Target::Discard { .. } => unreachable!(),
        };
        let mut sum_path = base.as_os_str().to_owned();
        sum_path.push(".sha256");
        let sum_path = PathBuf::from(sum_path);
        let tmp = crate::litter::claim_temp(&sum_path);
        fs::write(&tmp, sums).at(&sum_path)?;
        File::open(&tmp).and_then(|f| f.sync_all()).at(&sum_path)?;
        fs::rename(&tmp, &sum_path).at(&sum_path)?;
        if let Some(dir) = sum_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        self.done.clear();
        Ok(out)
    }

    fn write_logical(&mut self, buf: &[u8]) -> Result<()> {
        self.write_shared(Arc::new(buf.to_vec()), 0..buf.len())
    }

    /// Writes `range` of a shared chunk; the volume hash thread reads it without a copy.
    pub fn write_shared(&mut self, chunk: Shared, range: Range<usize>) -> Result<()> {
        let bytes = &(*chunk).as_ref()[range.clone()];
        if let Some(s) = &mut self.stdout {
            s.write_all(bytes).map_err(|e| Error::io("stdout", e))?;
            self.position += bytes.len() as u64;
            return Ok(());
        }
        let mut start = 0;
        while start < bytes.len() {
            let buf = &bytes[start..];
            if self.current.is_none() {
                self.open_next()?;
            }
            let room = match &self.target {
                Target::Split { size, .. } => size - self.current.as_ref().unwrap().written,
                _ => u64::MAX,
            };
            let n = (buf.len() as u64).min(room) as usize;
            let v = self.current.as_mut().unwrap();
            v.file.write_all(&buf[..n]).at(&v.final_path)?;
            v.hasher.update_shared(chunk.clone(), range.start + start..range.start + start + n);
            v.written += n as u64;
            v.drop_behind.kick_and_drop_buf(&v.file, v.written);
            self.position += n as u64;
            start += n;
            if let Target::Split { size, .. } = &self.target
                && v.written == *size {
                self.close_current()?;
            }
        }
        Ok(())
    }
}

impl Write for VolumeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_logical(buf).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for VolumeWriter {
    /// A writer dropped without commit leaves no file behind.
    fn drop(&mut self) {
        if let Some(v) = self.current.take() {
            let _ = fs::remove_file(&v.tmp);
        }
        for (tmp, ..) in &self.done {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// One volume of a bundle being read.
struct Part {
    file: File,
    path: PathBuf,
    skip: u64,
    start: u64,
    len: u64,
    /// The bundle id in its volume header (split bundles).
    id: Option<[u8; 32]>,
}

/// The logical stream of a bundle, from one file or its volumes.
pub struct VolumeSet {
    parts: Vec<Part>,
    pub len: u64,
    /// Payload bytes per volume (split bundles only).
    pub payload_per_volume: Option<u64>,
    pub name: String,
}

fn split_volume_name(p: &Path) -> Option<(PathBuf, u32)> {
    let s = p.to_str()?;
    let (base, num) = s.rsplit_once('.')?;
    if num.len() >= 3 && num.bytes().all(|b| b.is_ascii_digit()) {
        Some((PathBuf::from(base), num.parse().ok()?))
    } else {
        None
    }
}

impl VolumeSet {
    /// Opens `path`: a single bundle file, any volume `FILE.NNN` of a split bundle, or `FILE`
    /// when only `FILE.001`… exist.
    pub fn open(path: &Path) -> Result<VolumeSet> {
        let name = path.display().to_string();
        // A volume is recognised by its magic, not by its name (`images.20240101` is a file).
        let base = if path.is_file() {
            let mut magic = [0u8; 8];
            let f = File::open(path).at(path)?;
            let is_volume = f.read_exact_at(&mut magic, 0).is_ok() && &magic == super::format::VOLUME_MAGIC;
            match split_volume_name(path) {
                Some((base, _)) if is_volume => Some(base),
                _ if is_volume => return Err(Error::Other(format!("{name}: a bundle volume must be named FILE.NNN (001, 002, ...)"))),
                _ => None,
            }
        } else if volume_path(path, 1).is_file() {
            Some(path.to_path_buf())
        } else {
            return Err(Error::Other(format!("{name}: no such bundle file (nor {})", volume_path(path, 1).display())));
        };
        let Some(base) = base else {
            let file = File::open(path).at(path)?;
            let len = file.metadata().at(path)?.len();
            return Ok(VolumeSet { parts: vec![Part { file, path: path.into(), skip: 0, start: 0, len, id: None }], len, payload_per_volume: None, name });
        };
        // Every FILE.NNN beside it; gaps are missing volumes.
        let dir = base.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let stem = base.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let mut numbers: Vec<u32> = fs::read_dir(dir)
            .at(dir)?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                let rest = n.strip_prefix(&stem)?.strip_prefix('.')?;
                (rest.len() >= 3 && rest.bytes().all(|b| b.is_ascii_digit())).then(|| rest.parse().ok()).flatten()
            })
            .collect();
        numbers.sort();
        let max = numbers.last().copied().unwrap_or(0);
        for n in 1..=max {
            if !numbers.contains(&n) {
                return Err(Error::Other(format!("volume {} is missing", volume_path(&base, n).display())));
            }
        }
        if max == 0 {
            return Err(Error::Other(format!("{name}: no volumes found")));
        }
        let mut parts = Vec::new();
        let mut start = 0;
        let mut payload = None;
        for n in 1..=max {
            let p = volume_path(&base, n);
            let file = File::open(&p).at(&p)?;
            let flen = file.metadata().at(&p)?.len();
            let mut h = [0u8; 64];
            if flen < VOLUME_HEADER_LEN {
                return Err(Error::Other(format!("{}: too short for a bundle volume", p.display())));
            }
            file.read_exact_at(&mut h, 0).at(&p)?;
            let (num, vid) = decode_volume_header(&h, &p.display().to_string())?;
            if num != n {
                return Err(Error::Other(format!("{} holds volume {num}, not {n} (volumes renamed or swapped?)", p.display())));
            }
            let len = flen - VOLUME_HEADER_LEN;
            if n < max {
                match payload {
                    None => payload = Some(len),
                    Some(pl) if pl != len => {
                        return Err(Error::Other(format!("{}: {} bytes, other volumes have {} (truncated?)", p.display(), flen, pl + VOLUME_HEADER_LEN)));
                    }
                    _ => {}
                }
            }
            parts.push(Part { file, path: p, skip: VOLUME_HEADER_LEN, start, len, id: Some(vid) });
            start += len;
        }
        Ok(VolumeSet { parts, len: start, payload_per_volume: payload, name: volume_path(&base, 1).display().to_string() })
    }

    /// Volumes whose header names another bundle than `id`.
    pub fn foreign_volumes(&self, id: &[u8; 32]) -> Vec<&Path> {
        self.parts.iter().filter(|p| p.id.is_some_and(|v| &v != id)).map(|p| p.path.as_path()).collect()
    }

    /// The bundle id most volumes carry, and whether they all agree.
    pub fn majority_id(&self) -> Option<([u8; 32], bool)> {
        let ids: Vec<[u8; 32]> = self.parts.iter().filter_map(|p| p.id).collect();
        let best = ids.iter().max_by_key(|i| ids.iter().filter(|j| j == i).count())?;
        Some((*best, ids.iter().all(|i| i == best)))
    }

    /// True if the last volume is as long as the others (so a later one may be missing).
    pub fn last_is_full(&self) -> bool {
        self.parts.len() > 1 && self.payload_per_volume == Some(self.parts.last().unwrap().len)
    }

    pub fn volume_count(&self) -> usize {
        self.parts.len()
    }
    pub fn last_volume(&self) -> &Path {
        &self.parts.last().unwrap().path
    }

    /// Reads exactly `buf.len()` bytes at logical offset `pos`.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> Result<()> {
        if pos + buf.len() as u64 > self.len {
            return Err(Error::Other(format!("{}: truncated (needs byte {} of {})", self.name, pos + buf.len() as u64, self.len)));
        }
        while !buf.is_empty() {
            let i = self.parts.partition_point(|p| p.start + p.len <= pos);
            let p = &self.parts[i];
            let off = pos - p.start;
            let n = (buf.len() as u64).min(p.len - off) as usize;
            p.file.read_exact_at(&mut buf[..n], p.skip + off).at(&p.path)?;
            buf = &mut buf[n..];
            pos += n as u64;
        }
        Ok(())
    }

    /// `[pos, pos + len)` of the logical stream, to map window by window.
    pub fn mapped(&self, pos: u64, len: u64) -> MappedRange<'_> {
        MappedRange { set: self, pos, len }
    }

    /// A reader over `[pos, pos + len)` of the logical stream.
    pub fn range(&self, pos: u64, len: u64) -> RangeReader<'_> {
        RangeReader { set: self, pos, end: pos + len }
    }
}

/// A range of the logical stream mapped a window at a time; a window never crosses a volume end.
pub struct MappedRange<'a> {
    set: &'a VolumeSet,
    pos: u64,
    len: u64,
}

impl crate::mapped::Mapped for MappedRange<'_> {
    fn window(&self, offset: u64, max: usize) -> Result<crate::mapped::Window> {
        let set = self.set;
        let pos = self.pos + offset;
        if offset >= self.len || pos >= set.len {
            return Err(Error::Other(format!("{}: truncated (needs byte {} of {})", set.name, pos + 1, set.len)));
        }
        let i = set.parts.partition_point(|p| p.start + p.len <= pos);
        let p = &set.parts[i];
        let off = pos - p.start;
        let n = (max as u64).min(p.len - off).min(self.len - offset) as usize;
        crate::mapped::Window::map(&p.file, p.skip + off, n).at(&p.path)
    }
}

pub struct RangeReader<'a> {
    set: &'a VolumeSet,
    pos: u64,
    end: u64,
}

impl io::Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.end - self.pos) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.set.read_exact_at(&mut buf[..n], self.pos).map_err(|e| io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

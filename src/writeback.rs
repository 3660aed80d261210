//! Early writeback: big outputs ask the kernel to start writing dirty pages every few MiB, so
//! the final fsync finds little left to do and the disk works while we compute. Outputs nobody
//! re-reads at once (bundles, exports) also drop what is on disk from the page cache behind
//! them (`DropBehind`).
use std::io::BufWriter;
use std::os::fd::AsRawFd;

const STEP: u64 = 32 << 20;
/// How far behind the writer pages are dropped.
const DROP_LAG: u64 = 4 * STEP;

/// Starts writeback of what was written since the last call once `STEP` bytes gathered.
/// `written` counts bytes given to the writer; only what left its buffer is kicked.
pub fn kick(w: &BufWriter<std::fs::File>, flushed: &mut u64, written: u64) {
    kick_file(w.get_ref(), flushed, written - w.buffer().len() as u64);
}

/// The same for an unbuffered file (the one place that asks the kernel): `written` is what
/// the file holds.
pub fn kick_file(f: &std::fs::File, flushed: &mut u64, written: u64) {
    if written < *flushed + STEP {
        return;
    }
    // SAFETY: as above.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), *flushed as i64, (written - *flushed) as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
    *flushed = written;
}

/// Where an output that drops itself from the page cache behind it stands: what was handed
/// to the kernel for writeback, and what is on disk and dropped (trailing by `DROP_LAG`).
#[derive(Debug, Clone, Copy)]
pub struct DropBehind {
    flushed: u64,
    dropped: u64,
}

impl DropBehind {
    /// For an output whose bytes before `offset` are someone else's (or already handled).
    pub fn at(offset: u64) -> DropBehind {
        DropBehind { flushed: offset, dropped: offset }
    }

    /// `kick_file`, and once a range kicked earlier is on disk, its pages are dropped from the
    /// page cache: a big output keeps only its last ~160 MiB in memory, evicts nothing else,
    /// and recycles the same pages instead of taking fresh ones. Measured on this VM after
    /// 5.4 GB of other writes: OCI layout export (with its blobs also dropped whole once
    /// synced) 1.2-1.4 s with it, 3.4-3.6 s without (the kernel's cost of finding fresh pages).
    /// `written` is what the file holds.
    pub fn kick_and_drop(&mut self, f: &std::fs::File, written: u64) {
        kick_file(f, &mut self.flushed, written);
        // Only what was kicked a few steps ago: its writeback is long done, so waiting for it
        // costs nothing and the writer never runs at the disk's pace.
        let upto = self.flushed.saturating_sub(DROP_LAG);
        if upto <= self.dropped {
            return;
        }
        // SAFETY: plain syscalls on an fd we own; failure only loses the optimisation.
        unsafe {
            let fd = f.as_raw_fd();
            let (off, len) = (self.dropped as i64, (upto - self.dropped) as i64);
            libc::sync_file_range(fd, off, len, libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER);
            libc::posix_fadvise(fd, off, len, libc::POSIX_FADV_DONTNEED);
        }
        self.dropped = upto;
    }

    /// The same for a buffered writer (what is still in its buffer does not count).
    pub fn kick_and_drop_buf(&mut self, w: &BufWriter<std::fs::File>, written: u64) {
        self.kick_and_drop(w.get_ref(), written - w.buffer().len() as u64);
    }
}

/// Drops a whole file, already synced, from the page cache (outputs nobody re-reads at once).
pub fn drop_synced(f: &std::fs::File) {
    // SAFETY: a plain syscall on an fd we own; failure only loses the optimisation.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

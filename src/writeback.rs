//! Early writeback: big outputs ask the kernel to start writing dirty pages every few MiB, so
//! the final fsync finds little left to do and the disk works while we compute. Outputs nobody
//! re-reads at once (bundles, exports) also drop what is on disk from the page cache behind
//! them (`kick_and_drop`).
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

/// `kick_file`, and once a range kicked earlier is on disk, its pages are dropped from the
/// page cache: a big output keeps only its last ~160 MiB in memory, evicts nothing else, and
/// recycles the same pages instead of taking fresh ones. Measured on this VM after 5.4 GB of
/// other writes: OCI layout export (with its blobs also dropped whole once synced) 1.2-1.4 s
/// with it, 3.4-3.6 s without (the kernel's cost of finding fresh pages). `dropped` trails
/// `flushed` by `DROP_LAG`.
pub fn kick_and_drop(f: &std::fs::File, flushed: &mut u64, dropped: &mut u64, written: u64) {
    kick_file(f, flushed, written);
    // Only what was kicked a few steps ago: its writeback is long done, so waiting for it
    // costs nothing and the writer never runs at the disk's pace.
    let upto = flushed.saturating_sub(DROP_LAG);
    if upto <= *dropped {
        return;
    }
    // SAFETY: plain syscalls on an fd we own; failure only loses the optimisation.
    unsafe {
        let fd = f.as_raw_fd();
        let (off, len) = (*dropped as i64, (upto - *dropped) as i64);
        libc::sync_file_range(fd, off, len, libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER);
        libc::posix_fadvise(fd, off, len, libc::POSIX_FADV_DONTNEED);
    }
    *dropped = upto;
}

/// `kick_and_drop` for a buffered writer (what is still in its buffer does not count).
pub fn kick_and_drop_buf(w: &BufWriter<std::fs::File>, flushed: &mut u64, dropped: &mut u64, written: u64) {
    let end = written - w.buffer().len() as u64;
    kick_and_drop(w.get_ref(), flushed, dropped, end);
}

/// Drops a whole file, already synced, from the page cache (outputs nobody re-reads at once).
pub fn drop_synced(f: &std::fs::File) {
    // SAFETY: a plain syscall on an fd we own; failure only loses the optimisation.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

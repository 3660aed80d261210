//! Early writeback: big outputs ask the kernel to start writing dirty pages every few MiB, so
//! the final fsync finds little left to do and the disk works while we compute.
use std::io::BufWriter;
use std::os::fd::AsRawFd;

const STEP: u64 = 32 << 20;

/// Starts writeback of what was written since the last call once `STEP` bytes gathered.
/// `written` counts bytes given to the writer; only what left its buffer is kicked.
pub fn kick(w: &mut BufWriter<std::fs::File>, flushed: &mut u64, written: u64) {
    if written < *flushed + STEP {
        return;
    }
    let pending = w.buffer().len() as u64;
    let end = written - pending;
    if end <= *flushed {
        return;
    }
    // SAFETY: a plain syscall on an fd we own; failure only loses the optimisation.
    unsafe {
        libc::sync_file_range(w.get_ref().as_raw_fd(), *flushed as i64, (end - *flushed) as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
    *flushed = end;
}

/// The same for an unbuffered file: `written` is what the file holds.
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

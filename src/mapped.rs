//! Read-only windows of a file mapped into memory, shared between threads: the bundle writer
//! hands the same store bytes to the output and to two hash threads without first copying
//! them into a buffer. Windows are small (a few MiB) and unmapped when the last user drops
//! them, so memory stays bounded. Only for files nobody rewrites in place (store blobs, a
//! bundle being read). A mapped page that cannot be read (a disk pulled out, an I/O error, a
//! file truncated by someone else) raises SIGBUS instead of returning an error: the handler
//! installed here turns it into one clear `error:` line and exit status 1 (temp outputs, all
//! under temp names, stay behind).
use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Bytes shared between threads without a copy: a mapped window or an owned buffer.
pub type Shared = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A shared chunk and the part of it that is meant.
pub type Chunk = (Shared, Range<usize>);

/// One read-only mapping (memmap2 does the page alignment and the unmapping on drop).
pub struct Window(Option<memmap2::Mmap>);

extern "C" fn on_bus_error(_: libc::c_int) {
    const MSG: &[u8] = b"error: a file being read failed under its memory mapping (I/O error, a removed disk, or the file was truncated while in use); nothing was completed\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::_exit(1);
    }
}

fn install_fault_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    ONCE.call_once(|| unsafe {
        libc::signal(libc::SIGBUS, on_bus_error as *const () as libc::sighandler_t);
    });
}

impl Window {
    /// Maps `len` bytes of `file` from `offset` (any offset: memmap2 maps from the page below
    /// it and hands out only the bytes asked for), its pages populated up front.
    pub fn map(file: &File, offset: u64, len: usize) -> io::Result<Window> {
        if len == 0 {
            // No system call for nothing (and no mapping of files that cannot be mapped).
            return Ok(Window(None));
        }
        install_fault_handler();
        // SAFETY: memmap2 makes a fresh read-only MAP_SHARED mapping; what it cannot promise is
        // that the bytes stay put, and `&[u8]` needs them to. They do here because only files
        // nobody rewrites in place are mapped (store blobs are written once under a temp name and
        // renamed; a bundle being read is complete): see the module note. The one way left for
        // them to change, someone truncating the file, does not change bytes: touching a lost
        // page raises SIGBUS, which the handler above turns into an exit before any code reads
        // through the slice again.
        let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(len).populate().map(file)? };
        Ok(Window(Some(map)))
    }
}

/// A blob opened once for mapping window by window: a store file or a range of a bundle.
pub trait Mapped {
    /// Up to `max` bytes from `offset` (fewer where the source has a seam, such as a volume
    /// end, or where the blob ends); `offset` must be inside the blob.
    fn window(&self, offset: u64, max: usize) -> Result<Window>;
}

/// A whole file of known length, to map window by window.
pub struct MappedFile {
    pub file: File,
    pub path: PathBuf,
    pub len: u64,
}

impl Mapped for MappedFile {
    fn window(&self, offset: u64, max: usize) -> Result<Window> {
        let n = (max as u64).min(self.len.saturating_sub(offset)) as usize;
        Window::map(&self.file, offset, n).map_err(|e| Error::io(&self.path, e))
    }
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn windows_at_any_offset_read_the_file() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        for (off, len) in [(0usize, 0usize), (0, 1), (1, 4095), (4095, 2), (4096, 50_000), (12_345, 87_655)] {
            let w = Window::map(&f, off as u64, len).unwrap();
            assert_eq!(w.as_ref(), &data[off..off + len], "{off}+{len}");
        }
    }

    /// In a child process (this test binary run again): map a file, truncate it, touch the
    /// lost page. The child must end with the one-line error and status 1, not a crash.
    #[test]
    fn a_page_lost_under_a_mapping_is_one_error_line() {
        if std::env::var_os("OCIBUNDLE_FAULT_CHILD").is_some() {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&vec![1u8; 1 << 16]).unwrap();
            let w = Window::map(&f, 0, 1 << 16).unwrap();
            f.set_len(0).unwrap();
            let sum: u64 = w.as_ref().iter().map(|&b| b as u64).sum();
            panic!("read {sum} from a truncated mapping without a fault");
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "mapped::tests::a_page_lost_under_a_mapping_is_one_error_line", "--nocapture", "--test-threads", "1"])
            .env("OCIBUNDLE_FAULT_CHILD", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "child status {:?}, stderr: {err}", out.status);
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: a file being read failed under its memory mapping"), "stderr: {err}");
    }
}

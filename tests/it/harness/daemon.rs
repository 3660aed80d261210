//! Owns what the tests' private daemons (registry, containerd, dockerd) share: dying with the
//! test process, being stopped (TERM, then KILL of their process group), and leaving no mount
//! behind under their temp dirs.
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Puts the daemon in its own process group and has the kernel SIGKILL it if the test process
/// dies without dropping it (SIGKILL, timeout). The signal follows the spawning thread: a
/// daemon must not outlive the test thread that started it, which per-test daemons never do.
pub fn dies_with_test(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// SIGTERM, up to `grace` for a clean exit, then SIGKILL to the whole process group (helpers
/// the daemon started, such as dockerd's containerd, included).
pub fn stop(mut child: Child, grace: Duration) {
    // SAFETY: signalling our own child and its process group.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Lazily unmounts anything still mounted under `root` (deepest first), so the temp dir can go.
pub fn unmount_under(root: &Path) {
    let root = root.display().to_string();
    let Ok(m) = std::fs::read_to_string("/proc/self/mounts") else { return };
    let mut points: Vec<&str> = m.lines().filter_map(|l| l.split(' ').nth(1)).filter(|p| p.starts_with(&root)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

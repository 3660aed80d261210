//! Temp outputs and what killed runs leave of them: every output is written as `FINAL.tmp-PID`
//! beside its final name and renamed on commit; a run killed before that (kill -9, power loss)
//! leaves its temp behind, so the next run that writes `FINAL` removes every `FINAL.tmp-PID`
//! whose process is gone (a 20 GB export must not leave 20 GB behind for good).
use std::path::{Path, PathBuf};

/// The temp name this process writes `fin` under, after sweeping the temps of dead runs.
pub fn claim_temp(fin: &Path) -> PathBuf {
    sweep(fin);
    let mut s = fin.as_os_str().to_owned();
    s.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(s)
}

/// Removes `fin.tmp-PID` (a file or a directory) for every PID that is not a running process.
pub fn sweep(fin: &Path) {
    let (Some(dir), Some(name)) = (fin.parent(), fin.file_name()) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = n.strip_prefix(&prefix).and_then(|p| p.parse::<i32>().ok()) else { continue };
        if pid <= 0 || pid as u32 == std::process::id() || alive(pid) {
            continue;
        }
        let p = e.path();
        // symlink_metadata: a symlink planted under such a name is removed, never followed.
        let _ = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
            Err(_) => continue,
        };
    }
}

/// Removes the files `PREFIXPID-...` in `dir` whose process is gone (the store's atomic small
/// writes: a run killed between creating one and renaming it leaves it behind).
pub fn sweep_dead_writers(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let pid = n.strip_prefix(prefix).and_then(|r| r.split('-').next()).and_then(|p| p.parse::<i32>().ok());
        let Some(pid) = pid else { continue };
        if pid > 0 && pid as u32 != std::process::id() && !alive(pid) && e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

pub(crate) fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temps_of_dead_runs_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let fin = dir.path().join("out.tar");
        // A PID far above any pid_max in use here is not running.
        let dead = dir.path().join("out.tar.tmp-2147483600");
        let dead_dir = dir.path().join("out.tar.tmp-2147483601");
        let live = dir.path().join(format!("out.tar.tmp-{}", std::process::id()));
        let other = dir.path().join("other.tar.tmp-2147483600");
        std::fs::write(&dead, b"x").unwrap();
        std::fs::create_dir_all(dead_dir.join("blobs")).unwrap();
        std::fs::write(&live, b"x").unwrap();
        std::fs::write(&other, b"x").unwrap();
        let mine = claim_temp(&fin);
        assert_eq!(mine, live);
        assert!(!dead.exists() && !dead_dir.exists());
        assert!(live.exists(), "this process's own temp");
        assert!(other.exists(), "another output's temp");
        // PID 1 is always running.
        let init = dir.path().join("out.tar.tmp-1");
        std::fs::write(&init, b"x").unwrap();
        sweep(&fin);
        assert!(init.exists());
    }

    #[test]
    fn small_writes_of_dead_runs_go() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("tmp-2147483600-3-99");
        let live = dir.path().join(format!("tmp-{}-1-5", std::process::id()));
        let partial = dir.path().join("abc.partial");
        for p in [&dead, &live, &partial] {
            std::fs::write(p, b"x").unwrap();
        }
        sweep_dead_writers(dir.path(), "tmp-");
        assert!(!dead.exists() && live.exists() && partial.exists());
    }
}

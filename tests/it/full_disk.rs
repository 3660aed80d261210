//! Owns the full-disk tests: every command that writes, on a filesystem that fills up (a small
//! tmpfs, as a USB disk that is too small): exit 1, one `error:` line saying so, nothing under
//! a final name; fetch and import resume once there is room.
//!
//! Needs root (it mounts tmpfs), as the podman and containerd tests do. Expected values come from
//! the images the fake registry serves and docs/cli.md (the error contract). No timing.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::cmd::{Env, hex_of, s};
use crate::harness::fakereg::{FakeRegistry, TestImage};

/// A tmpfs of a given size mounted on a temp dir; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(kib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        mount(&["-t", "tmpfs", "-o", &format!("size={kib}k,mode=0755"), "tmpfs", s(dir.path())]);
        Tmpfs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Gives the filesystem more (or less) room; what is on it stays.
    fn resize(&self, kib: u64) {
        mount(&["-o", &format!("remount,size={kib}k"), s(self.path())]);
    }
    /// Everything on it, as paths relative to its root.
    fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                out.push(p.strip_prefix(self.path()).unwrap().to_path_buf());
            }
        }
        out.sort();
        out
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

fn mount(args: &[&str]) {
    let out = Command::new("mount").args(args).output().expect("spawn mount");
    assert!(
        out.status.success(),
        "mount {args:?} failed (these tests need root, as the podman tests do): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts the run failed for want of room: exit 1, one `error:` line that says so and names
/// `what`.
fn fails_full(env: &Env, args: &[&str], what: &str) -> String {
    let line = env.fails(args);
    assert!(line.contains("No space left on device"), "ocibundle {args:?}: the error does not say the disk is full: {line}");
    assert!(line.contains(what), "ocibundle {args:?}: the error does not name {what}: {line}");
    line
}

/// Two incompressible layers (3 MB and 2 MB), so each output is ~5 MB.
fn image(reg: &FakeRegistry) -> TestImage {
    reg.add_image("test/full", "v1", &[3_000_000, 2_000_000])
}


#[test]
fn bundle_and_every_export_on_a_full_disk_leave_nothing() {
    let reg = FakeRegistry::start();
    let img = image(&reg);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let disk = Tmpfs::mount(1024);

    let b = disk.path().join("x.bundle");
    fails_full(&env, &["bundle", "-o", s(&b), &img.reference], &format!("{}:", s(&b)));
    assert_eq!(disk.files(), Vec::<PathBuf>::new(), "bundle left files behind");

    for (flag, name) in [("--docker-archive", "d.tar"), ("--oci-archive", "o.tar"), ("--oci-layout", "lay")] {
        let out = disk.path().join(name);
        // The layout names the file (under its final name), the archives the blob being written.
        let what = if flag == "--oci-layout" { format!("{}/blobs/sha256/", s(&out)) } else { "sha256:".to_string() };
        fails_full(&env, &["export", flag, s(&out), &img.reference], &what);
        assert_eq!(disk.files(), Vec::<PathBuf>::new(), "export {flag} left files behind");
    }

    // With room, the same commands work and the outputs are whole.
    disk.resize(64 * 1024);
    env.ok(&["bundle", "-o", s(&b), &img.reference]);
    env.ok(&["verify", s(&b)]);
    env.ok(&["export", "--oci-layout", s(&disk.path().join("lay")), &img.reference]);
}

#[test]
fn fetch_onto_a_full_disk_resumes_when_there_is_room() {
    let reg = FakeRegistry::start();
    let img = image(&reg);
    let env = Env::new();
    let disk = Tmpfs::mount(2048);
    let store = disk.path().join("store");
    let args = ["--store", s(&store), "fetch", &img.reference];
    fails_full(&env, &args, "test/full");
    // Nothing incomplete under a final name: the store checks clean (only partials are kept).
    let fsck = env.run(&["--store", s(&store), "store", "fsck"]);
    assert!(fsck.status.success(), "store fsck after a full disk: {}", String::from_utf8_lossy(&fsck.stdout));
    let kept: u64 = std::fs::read_dir(store.join(".ocibundle/tmp"))
        .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0);
    assert!(kept > 0, "no partial download was kept");

    disk.resize(64 * 1024);
    let mark = reg.log().len();
    env.ok(&args);
    env.ok(&["--store", s(&store), "store", "fsck"]);
    for b in img.blobs() {
        let data = std::fs::read(store.join("blobs/sha256").join(hex_of(&b.digest))).unwrap();
        assert_eq!(crate::harness::cmd::sha256(&data), b.digest);
    }
    let resumed = reg.log()[mark..].iter().any(|r| r.method == "GET" && r.range_start().is_some_and(|n| n > 0));
    assert!(resumed, "the rerun downloaded everything again instead of resuming:\n{}", reg.log_summary());
}

#[test]
fn import_onto_a_full_disk_resumes_when_there_is_room() {
    let reg = FakeRegistry::start();
    let img = image(&reg);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let b = env.path().join("x.bundle");
    env.ok(&["bundle", "-o", s(&b), &img.reference]);

    let disk = Tmpfs::mount(2048);
    let store = disk.path().join("store");
    let args = ["--store", s(&store), "import", s(&b)];
    fails_full(&env, &args, "sha256:");
    let fsck = env.run(&["--store", s(&store), "store", "fsck"]);
    assert!(fsck.status.success(), "store fsck after a full disk: {}", String::from_utf8_lossy(&fsck.stdout));

    disk.resize(64 * 1024);
    env.ok(&args);
    env.ok(&["--store", s(&store), "store", "fsck"]);
    let out = disk.path().join("lay");
    env.ok(&["--store", s(&store), "export", "--oci-layout", s(&out), &img.reference]);
}

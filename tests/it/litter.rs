//! Owns the tests of what killed runs leave behind (issue 11, "no litter"): the next export or
//! bundle that writes the same output removes the temps of processes that are gone, and keeps
//! those of running ones.
use crate::harness::cmd::{Env, s};
use crate::harness::fixtures;
use crate::harness::registry::{Registry, Variant};

/// A PID that was just in use and is not any more (a reaped child).
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn temps_of_killed_exports_and_bundles_are_swept_by_the_next_run() {
    let reg = Registry::start(Variant::Plain);
    let simple = fixtures::push_one(&reg, "simple");
    let env = Env::new();
    env.ok(&["fetch", &simple.reference]);
    let out = env.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut live = std::process::Command::new("sleep").arg("60").spawn().unwrap();

    for (fin, args) in [
        ("a.tar", vec!["export", "--docker-archive"]),
        ("layout", vec!["export", "--oci-layout"]),
        ("b.bundle", vec!["bundle", "-o"]),
    ] {
        let fin = out.join(fin);
        let dead = out.join(format!("{}.tmp-{}", fin.file_name().unwrap().to_string_lossy(), dead_pid()));
        let running = out.join(format!("{}.tmp-{}", fin.file_name().unwrap().to_string_lossy(), live.id()));
        // What a killed run leaves: a half-written file, or a half-filled layout directory.
        if fin.extension().is_none() {
            std::fs::create_dir_all(dead.join("blobs/sha256")).unwrap();
            std::fs::write(dead.join("blobs/sha256/half"), vec![0u8; 4096]).unwrap();
        } else {
            std::fs::write(&dead, vec![0u8; 4096]).unwrap();
        }
        std::fs::write(&running, b"busy").unwrap();
        let mut a = args.clone();
        a.push(s(&fin));
        a.push(&simple.reference);
        env.ok(&a);
        assert!(fin.exists(), "{fin:?} was not written");
        assert!(!dead.exists(), "{dead:?}, left by a dead run, is still there");
        assert!(running.exists(), "{running:?} belongs to a running process and was removed");
    }
    live.kill().unwrap();
    live.wait().unwrap();
}

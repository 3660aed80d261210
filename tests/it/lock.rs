//! Owns the tests of the lock file (issue 12, "Lock file"): `ocibundle lock` against a real
//! registry, then `fetch`, `bundle` and `verify --images images.lock` acting on the pinned
//! digests, a tag moved after the lock reported old -> new (fetch refuses it, or with
//! --allow-moved fetches what was locked), and bad lock lines named by number. Expected
//! digests come from the registry (`Docker-Content-Digest`) and the fixtures.
use std::fs;

use crate::harness::cmd::{s, Env};
use crate::harness::fixtures::{layout, push, push_one, PushMode};
use crate::harness::registry::{Registry, Variant};

#[test]
fn lock_pins_fetch_bundle_and_verify_and_reports_a_moved_tag() {
    let reg = Registry::start(Variant::Plain);
    let simple = push_one(&reg, "simple");
    let multi = push_one(&reg, "multi");
    let zstd = push_one(&reg, "zstd");
    let env = Env::new();
    let list = env.path().join("images.txt");
    let missing = format!("{}/test/not-there:v1", reg.host());
    fs::write(&list, format!("# the site's images\n{}\n{}  # multi-arch\n?{}\n?{missing}\n", simple.reference, multi.reference, zstd.reference)).unwrap();
    let lock = env.path().join("images.lock");
    let out = env.run(&["lock", "--images", s(&list), "-o", s(&lock), "--platform", "linux/amd64"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("optional image {missing} left out")), "{out:?}");
    let text = fs::read_to_string(&lock).unwrap();
    let amd64 = &multi.image.children[0].manifest.digest;
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(text.lines().next(), Some("# ocibundle lock v2"));
    assert_eq!(
        lines,
        [format!("{} {}", simple.reference, simple.digest), format!("{} {} linux/amd64={amd64}", multi.reference, multi.digest), format!("?{} {}", zstd.reference, zstd.digest)]
    );
    // Stable: the same tags give the same bytes.
    let again = env.ok(&["lock", "--images", s(&list), "--platform", "linux/amd64"]);
    assert_eq!(again, text);

    // A lock read from a pipe (read once: asked whether it is a lock, then for its images).
    let piped = Env::new();
    let mut child = piped.cmd().args(["fetch", "--images", "-"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(piped.ok(&["store", "ls"]).contains(&format!("{} {amd64}", multi.reference)));

    // Fetch, bundle and verify with the lock.
    env.ok(&["fetch", "--images", s(&lock)]);
    let ls = env.ok(&["store", "ls"]);
    assert!(ls.contains(&format!("{} {amd64}", multi.reference)) && ls.contains(&format!("{} {}", simple.reference, simple.digest)), "{ls}");
    let bundle = env.path().join("site.bundle");
    env.ok(&["bundle", "-o", s(&bundle), "--images", s(&lock)]);
    env.ok(&["verify", s(&bundle), "--images", s(&lock)]);

    // The tag moves after the lock: fetch refuses, naming old -> new, and fetches nothing.
    let shared = push(&reg, &layout().dir, "shared", &format!("{}:v1", simple.repo), PushMode::Oci);
    let fresh = Env::new();
    let e = fresh.fails(&["fetch", "--images", s(&lock)]);
    assert!(e.contains(&format!("{}: {} -> {shared}", simple.reference, simple.digest)) && e.contains("--allow-moved"), "{e}");
    assert!(!fresh.store().join("index.json").exists() || !fresh.ok(&["store", "ls"]).contains(&simple.reference));
    // --allow-moved: reported, and the locked digest is what is fetched.
    let out = fresh.run(&["fetch", "--images", s(&lock), "--allow-moved"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{} -> {shared}", simple.digest)));
    assert!(fresh.ok(&["store", "ls"]).contains(&format!("{} {}", simple.reference, simple.digest)));

    // A store that followed the tag does not pass for the lock: bundle and verify say so.
    let follower = Env::new();
    follower.ok(&["fetch", &simple.reference, &multi.reference, "--platform", "linux/amd64"]);
    let e = follower.fails(&["bundle", "-o", s(&follower.path().join("b")), "--images", s(&lock)]);
    assert!(e.contains(&format!("{}: the store", simple.reference)) && e.contains(&format!("holds {shared}, but the lock pins {}", simple.digest)), "{e}");
    let b2 = follower.path().join("followed.bundle");
    follower.ok(&["bundle", "-o", s(&b2), "--all"]);
    let e = follower.fails(&["verify", s(&b2), "--images", s(&lock)]);
    assert!(e.contains(&format!("holds {shared}, but the lock pins {}", simple.digest)), "{e}");
}

#[test]
fn lock_bad_lines_are_named_by_number() {
    let env = Env::new();
    let f = env.path().join("f.txt");
    fs::write(&f, b"x").unwrap();
    env.ok(&["store", "add", "127.0.0.1:1/a/b:1", s(&f)]);
    let bundle = env.path().join("x.bundle");
    env.ok(&["bundle", "-o", s(&bundle), "--all"]);
    let bad = env.path().join("bad.lock");
    let d = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    fs::write(&bad, format!("# ocibundle lock v1\n127.0.0.1:1/a/b:1 {d}\nthis is not a reference\n")).unwrap();
    for args in [vec!["fetch", "--images", s(&bad)], vec!["bundle", "-o", "x", "--images", s(&bad)], vec!["verify", s(&bundle), "--images", s(&bad)]] {
        let e = env.fails(&args);
        assert!(e.contains("bad.lock:3:"), "{args:?}: {e}");
    }
    fs::write(&bad, "# ocibundle lock v9\n").unwrap();
    let e = env.fails(&["fetch", "--images", s(&bad)]);
    assert!(e.contains("bad.lock:1:") && e.contains("unsupported version"), "{e}");
    // Version 2: a referrer line that is not one, or that names a subject the image does not have.
    let e2 = "sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
    for (body, want) in [
        (format!("127.0.0.1:1/a/b:1 {d}\n  referrer {e2} cosign:sig\n"), "referrer DIGEST KIND SUBJECT"),
        (format!("127.0.0.1:1/a/b:1 {d}\n  referrer {e2} signature {d}\n"), "not an artifact type"),
        (format!("127.0.0.1:1/a/b:1 {d}\n  referrer {e2} cosign:sig {e2}\n"), "is not 127.0.0.1:1/a/b:1"),
    ] {
        fs::write(&bad, format!("# ocibundle lock v2\n{body}")).unwrap();
        let fresh = Env::new();
        let e = fresh.fails(&["fetch", "--images", s(&bad)]);
        assert!(e.contains("bad.lock:3:") && e.contains(want), "{e}");
        assert!(!fresh.store().exists(), "nothing stored");
        let out = env.path().join("never.bundle");
        for args in [vec!["bundle", "-o", s(&out), "--images", s(&bad)], vec!["verify", s(&bundle), "--images", s(&bad)]] {
            let e = env.fails(&args);
            assert!(e.contains("bad.lock:3:") && e.contains(want), "{args:?}: {e}");
        }
        assert!(!out.exists(), "no bundle written");
    }
}

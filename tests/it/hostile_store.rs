//! Owns the tests of stores that lie about themselves (issue 11's "every reader distrusts the
//! store", the part that lives in the store's own files): unknown layout versions, oversized or
//! malformed index.json. Each is refused by every command that reads the store, in one line.
use crate::harness::cmd::{Env, s};

/// The commands that open a store to read it, each writing its output under `out`.
fn readers(store: &str, out: &std::path::Path) -> Vec<Vec<String>> {
    let o = |n: &str| out.join(n).to_str().unwrap().to_string();
    [
        vec!["store", "fsck"],
        vec!["store", "ls"],
        vec!["export", "--docker-archive", &o("a.tar"), "--all"],
        vec!["export", "--oci-layout", &o("layout"), "--all"],
        vec!["bundle", "-o", &o("b.bundle"), "--all"],
    ]
    .into_iter()
    .map(|rest| ["--store", store].iter().chain(rest.iter()).map(|a| a.to_string()).collect())
    .collect()
}

/// A store as `fetch` would leave it, without a registry: an empty but valid layout.
fn empty_store(env: &Env) -> std::path::PathBuf {
    let st = env.store();
    ocibundle::Store::open(&st).unwrap();
    env.ok(&["--store", s(&st), "store", "ls"]);
    assert!(st.join("oci-layout").is_file() && st.join("index.json").is_file());
    st
}

fn assert_all_refuse(env: &Env, st: &std::path::Path, want: &[&str]) {
    let out = env.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for args in readers(s(st), &out) {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = env.fails(&a);
        for w in want {
            assert!(line.contains(w), "ocibundle {a:?}: {line:?} should name {w:?}");
        }
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "ocibundle {a:?} left {left:?} behind");
    }
}

#[test]
fn unknown_image_layout_version_is_refused_by_every_reader() {
    let env = Env::new();
    let st = empty_store(&env);
    std::fs::write(st.join("oci-layout"), br#"{"imageLayoutVersion":"9.9.9"}"#).unwrap();
    assert_all_refuse(&env, &st, &["oci-layout", "9.9.9"]);
    std::fs::write(st.join("oci-layout"), b"not json").unwrap();
    assert_all_refuse(&env, &st, &["oci-layout", "invalid JSON"]);
}

#[test]
fn oversized_index_json_is_refused_before_it_is_read() {
    let env = Env::new();
    let st = empty_store(&env);
    // 100 MB of spaces would parse as nothing; the size alone must refuse it, so RSS stays flat.
    let f = std::fs::OpenOptions::new().write(true).open(st.join("index.json")).unwrap();
    f.set_len(100_000_000).unwrap();
    drop(f);
    assert_all_refuse(&env, &st, &["index.json", "100000000 bytes", "limit"]);
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kib=%M"])
        .arg(env!("CARGO_BIN_EXE_ocibundle"))
        .args(["--store", s(&st), "store", "fsck"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let kib: u64 = err.lines().find_map(|l| l.strip_prefix("maxrss_kib=")).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("no maxrss in {err}"));
    assert!(kib < 64 * 1024, "store fsck on a 100 MB index.json peaked at {kib} KiB");
}

#[test]
fn malformed_index_json_is_named() {
    let env = Env::new();
    let st = empty_store(&env);
    std::fs::write(st.join("index.json"), br#"{"schemaVersion":2,"manifests":[{"digest":"#).unwrap();
    assert_all_refuse(&env, &st, &["index.json", "invalid JSON"]);
}

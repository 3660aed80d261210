//! Owns the tests of stores that lie about themselves (issue 11's "every reader distrusts the
//! store", the part that lives in the store's own files): unknown layout versions, oversized or
//! malformed index.json. Each is refused by every command that reads the store, in one line.
use crate::harness::cmd::{Env, s};

/// The commands that open a store to read it, each writing its output under `out`.
fn readers(store: &str, out: &std::path::Path) -> Vec<Vec<String>> {
    let o = |n: &str| out.join(n).to_str().unwrap().to_string();
    // What `store add` would add: beside `out`, which must stay empty.
    let file = out.with_file_name("add-me.txt");
    let _ = std::fs::write(&file, b"a file for store add");
    [
        vec!["store", "fsck"],
        vec!["store", "ls"],
        vec!["export", "--docker-archive", &o("a.tar"), "--all"],
        vec!["export", "--oci-layout", &o("layout"), "--all"],
        vec!["export", "--oci-archive", &o("o.tar"), "--all"],
        vec!["export", "--files", &o("files"), "--all"],
        vec!["export", "--ollama", &o("ollama"), "--all"],
        vec!["bundle", "-o", &o("b.bundle"), "--all"],
        // A writer reads index.json too: refused before a file is stored.
        vec!["store", "add", "registry.lan/x/y:1", file.to_str().unwrap()],
        // Refused before any request: the port is closed, and --dry-run would send nothing.
        vec!["push", "--all", "--dry-run", "--to", "127.0.0.1:1/x"],
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

#[test]
fn a_symlink_under_a_blob_name_is_never_followed() {
    let reg = crate::harness::registry::Registry::start(crate::harness::registry::Variant::Plain);
    let simple = crate::harness::fixtures::push_one(&reg, "simple");
    let env = Env::new();
    env.ok(&["fetch", &simple.reference]);
    let st = env.store();
    // The layer's file moves elsewhere and a symlink to it takes its name: same bytes, but the
    // store no longer owns them, and a symlink may as well point at /etc/shadow.
    let layer = &simple.image.layers[0].digest;
    let blob = env.blob_path(layer);
    let outside = env.path().join("outside");
    std::fs::rename(&blob, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &blob).unwrap();
    let o = env.run(&["--store", s(&st), "store", "fsck", "--json"]);
    assert_eq!(o.status.code(), Some(1), "fsck passed a symlinked blob:\n{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains("symlink"), "{}", String::from_utf8_lossy(&o.stdout));
    let out = env.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for args in [
        vec!["export", "--docker-archive", "x.tar"],
        vec!["export", "--oci-layout", "lay"],
        vec!["bundle", "-o", "b.bundle"],
    ] {
        let mut a: Vec<String> = ["--store", s(&st)].iter().map(|x| x.to_string()).collect();
        a.extend(args.iter().map(|x| if x.ends_with(".tar") || x.ends_with(".bundle") || *x == "lay" { s(&out.join(x)).to_string() } else { x.to_string() }));
        a.push(simple.reference.clone());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let line = env.fails(&a);
        assert!(line.contains(crate::harness::cmd::hex_of(layer)), "ocibundle {a:?}: {line}");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "ocibundle {a:?} left output behind");
    }
}

#[test]
fn a_layer_that_still_inflates_right_but_lost_its_digest_is_refused_by_export() {
    let reg = crate::harness::registry::Registry::start(crate::harness::registry::Variant::Plain);
    let simple = crate::harness::fixtures::push_one(&reg, "simple");
    let env = Env::new();
    env.ok(&["fetch", &simple.reference]);
    let st = env.store();
    // Bytes 4..8 of a gzip member are its MTIME: changing them changes the blob's digest but
    // not one byte of what it inflates to, so only a check of the blob's own digest sees it.
    let layer = &simple.image.layers[0].digest;
    let blob = env.blob_path(layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "the fixture's layer is gzip");
    bytes[4] ^= 0x5a;
    std::fs::write(&blob, &bytes).unwrap();
    let out = env.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let line = env.fails(&["--store", s(&st), "export", "--docker-archive", s(&out.join("x.tar")), &simple.reference]);
    assert!(line.contains(crate::harness::cmd::hex_of(layer)) && line.contains("mismatch"), "{line}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "export left output behind");
}

//! Owns the tests of what `bundle` is given: missing references, --fetch, --force, a corrupt store blob.
use super::*;

#[test]
fn bundle_missing_ref_fetch_and_force() {
    let reg = Registry::start(Variant::Plain);
    let simple = push_one(&reg, "simple");
    let zstd = push_one(&reg, "zstd");
    let env = Env::new();
    env.ok(&["fetch", &simple.reference]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.obun");

    let e = fails(
        &env,
        &["bundle", "-o", s(&out), &simple.reference, &zstd.reference],
    );
    assert!(
        e.contains(&zstd.reference),
        "error does not list the missing reference: {e}"
    );
    assert!(
        !e.contains(&simple.reference),
        "error lists a reference that is in the store: {e}"
    );
    assert!(
        fs::read_dir(dir.path()).unwrap().next().is_none(),
        "a failed bundle left files: {:?}",
        fs::read_dir(dir.path()).unwrap().collect::<Vec<_>>()
    );

    env.ok(&[
        "bundle",
        "--fetch",
        "-o",
        s(&out),
        &simple.reference,
        &zstd.reference,
    ]);
    assert!(
        store_refs(&env.store()).contains(&zstd.reference),
        "--fetch stored the image"
    );
    let i = env.json(&["inspect", s(&out)]);
    let imgs: Vec<&str> = i["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        imgs,
        vec![simple.reference.as_str(), zstd.reference.as_str()],
        "{i}"
    );
    let zi = i["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["reference"] == zstd.reference.as_str())
        .unwrap();
    assert_eq!(
        zi["digest"],
        zstd.digest.as_str(),
        "the registry's digest: {i}"
    );
    env.ok(&["verify", s(&out)]);

    let before = fs::read(&out).unwrap();
    let e = fails(&env, &["bundle", "-o", s(&out), &simple.reference]);
    assert!(
        e.contains(s(&out)),
        "error does not name the existing output: {e}"
    );
    assert_eq!(
        fs::read(&out).unwrap(),
        before,
        "a refused bundle changed the file"
    );
    env.ok(&["bundle", "--force", "-o", s(&out), &simple.reference]);
    let i = env.json(&["inspect", s(&out)]);
    assert_eq!(
        i["images"].as_array().unwrap().len(),
        1,
        "--force replaced the bundle: {i}"
    );
    sha256sum_check(dir.path(), "out.obun.sha256");
}

/// A store blob that no longer matches its digest never reaches a bundle, and the failed
/// bundle leaves no file behind.
#[test]
fn bundle_refuses_corrupt_store_blob() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("rot/img", "v1", &[4000]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let p = env.store().join("blobs/sha256").join(img.layers[0].hex());
    let mut perm = fs::metadata(&p).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    fs::set_permissions(&p, perm).unwrap();
    let mut data = fs::read(&p).unwrap();
    data[2000] ^= 0x40;
    fs::write(&p, &data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rot.obun");
    let e = fails(&env, &["bundle", "-o", s(&out), &img.reference]);
    assert!(
        e.contains(&img.layers[0].digest),
        "error does not name the bad blob: {e}"
    );
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "a failed bundle left {left:?}");
    // A store blob cut short is named too (the plan checks sizes before writing starts).
    fs::write(&p, &data[..3000]).unwrap();
    let e = fails(&env, &["bundle", "-o", s(&out), &img.reference]);
    assert!(
        e.contains(&img.layers[0].digest) && e.contains("fsck"),
        "error does not name the short blob: {e}"
    );
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "a failed bundle left {left:?}");
}

//! Owns the `size` tests: the prediction equals the bytes `bundle` writes.
use super::*;

/// `size` predicts exactly the bytes `bundle` writes: one file, volumes (sum of the volume
/// files, their count) and a delta; `size FILE` on the written bundle says the same.
#[test]
fn size_predicts_bytes_written() {
    let reg = FakeRegistry::start();
    let shared = layer("size-shared", 12_000);
    let a = add_image_with(&reg, "size/a", "v1", &[&shared, &layer("size-a", 9_000)]);
    let b = add_image_with(&reg, "size/b", "v1", &[&shared, &layer("size-b", 15_000)]);
    let c = add_image_with(&reg, "size/c", "v1", &[&layer("size-c", 7_000)]);
    let env = Env::new();
    env.ok(&["fetch", &a.reference, &b.reference, &c.reference]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ra, rb, rc) = (
        a.reference.as_str(),
        b.reference.as_str(),
        c.reference.as_str(),
    );
    let len = |p: &Path| fs::metadata(p).unwrap().len();

    // One file.
    let z = env.json(&["size", ra, rb]);
    let f = d.join("ab.obun");
    let j = env.json(&["bundle", "-o", s(&f), ra, rb]);
    assert_eq!(z["bundle_bytes"], len(&f), "size before bundle: {z}");
    assert_eq!(z["volumes"], 1, "{z}");
    assert_eq!(j["bytes"], len(&f), "bundle --json bytes: {j}");
    let zf = env.json(&["size", s(&f)]);
    assert_eq!(zf["bundle_bytes"], len(&f), "size FILE: {zf}");
    for k in [
        "volumes",
        "dedup_bytes",
        "carried_bytes",
        "carried_blobs",
        "required_blobs",
        "sum_per_image_bytes",
    ] {
        assert_eq!(
            zf[k], z[k],
            "size FILE and size REFS disagree on {k}:\n{zf}\n{z}"
        );
    }

    // Volumes.
    let z = env.json(&["size", "--split-size", "20k", ra, rb, rc]);
    let v = d.join("abc.obun");
    env.ok(&["bundle", "--split-size", "20k", "-o", s(&v), ra, rb, rc]);
    let vols = volumes_of(&v);
    assert!(vols.len() >= 3, "want at least 3 volumes, got {vols:?}");
    assert!(
        !v.exists(),
        "a split bundle writes no FILE without a number"
    );
    assert_eq!(z["volumes"], vols.len(), "size --split-size volumes: {z}");
    assert_eq!(
        z["bundle_bytes"],
        vols.iter().map(|p| len(p)).sum::<u64>(),
        "sum of the volume files: {z}"
    );
    for (i, p) in vols.iter().enumerate() {
        assert_eq!(
            *p,
            volume(&v, i as u32 + 1),
            "volume names are FILE.001, FILE.002, ..."
        );
        if i + 1 < vols.len() {
            assert_eq!(
                len(p),
                20_000,
                "{} is exactly --split-size 20k = 20000 bytes",
                p.display()
            );
        } else {
            assert!(
                len(p) <= 20_000 && len(p) > 64,
                "last volume {} bytes",
                len(p)
            );
        }
    }
    for name in [v.clone(), volume(&v, 2)] {
        let zf = env.json(&["size", s(&name)]);
        assert_eq!(
            zf["bundle_bytes"],
            z["bundle_bytes"],
            "size {}: {zf}",
            name.display()
        );
        assert_eq!(zf["volumes"], z["volumes"], "size {}: {zf}", name.display());
    }

    // Delta against the one-file bundle of a and b.
    let z = env.json(&["size", "--since", s(&f), rb, rc]);
    let delta = d.join("delta.obun");
    env.ok(&["bundle", "--since", s(&f), "-o", s(&delta), rb, rc]);
    assert_eq!(z["bundle_bytes"], len(&delta), "size --since: {z}");
    assert!(
        as_u64(&z["required_blobs"]) > 0,
        "b's blobs are in the base: {z}"
    );
    let zf = env.json(&["size", s(&delta)]);
    assert_eq!(zf["bundle_bytes"], len(&delta), "size DELTA: {zf}");
    for k in [
        "carried_bytes",
        "carried_blobs",
        "required_blobs",
        "dedup_bytes",
    ] {
        assert_eq!(
            zf[k], z[k],
            "size DELTA and size --since disagree on {k}:\n{zf}\n{z}"
        );
    }

    // Delta and volumes together.
    let z = env.json(&["size", "--since", s(&f), "--split-size", "10k", rb, rc]);
    let dv = d.join("dv.obun");
    env.ok(&[
        "bundle",
        "--since",
        s(&f),
        "--split-size",
        "10k",
        "-o",
        s(&dv),
        rb,
        rc,
    ]);
    let vols = volumes_of(&dv);
    assert_eq!(z["volumes"], vols.len(), "{z}");
    assert_eq!(
        z["bundle_bytes"],
        vols.iter().map(|p| len(p)).sum::<u64>(),
        "{z}"
    );
}

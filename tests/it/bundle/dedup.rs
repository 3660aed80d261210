//! Owns the bundle tests of content carried once: shared layers, and delta bundles since a bundle or an inventory.
use super::*;

/// Three images sharing a layer: the layer is carried once (`inspect --json` `shared`, entry
/// count, and the layer's bytes occur once in the file). The bundle's overhead over the unique
/// blob bytes is exactly what docs/design.md specifies: 64 (header) + 48 per entry + the index
/// JSON + 64 (trailer); for these three tiny images that is well under 64 KiB.
#[test]
fn dedup_shared_layer_is_carried_once() {
    let reg = FakeRegistry::start();
    let (a, b, c, shared) = three_sharing(&reg);
    let env = Env::new();
    env.ok(&["fetch", &a.reference, &b.reference, &c.reference]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dedup.obun");
    env.ok(&[
        "bundle",
        "-o",
        s(&f),
        &a.reference,
        &b.reference,
        &c.reference,
    ]);
    let bytes = fs::read(&f).unwrap();

    let unique = unique_blobs(&[&a, &b, &c]);
    let unique_bytes: u64 = unique.values().sum();
    assert_eq!(
        unique.len(),
        3 + 3 + 4,
        "3 manifests, 3 configs, 4 distinct layers"
    );
    let shared_digest = a.layers[0].digest.clone();
    assert_eq!(b.layers[0].digest, shared_digest);

    let v = env.json(&["inspect", s(&f)]);
    assert_eq!(v["blobs"], unique.len(), "inspect blobs: {v}");
    assert_eq!(v["blob_bytes"], unique_bytes, "inspect blob_bytes: {v}");
    let sh = v["shared"]
        .as_array()
        .unwrap_or_else(|| panic!("no shared array: {v}"));
    assert_eq!(sh.len(), 1, "exactly one shared blob: {v}");
    assert_eq!(sh[0]["digest"], shared_digest.as_str(), "{v}");
    assert_eq!(sh[0]["size"], shared.1.len(), "{v}");
    let mut users: Vec<String> = sh[0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    users.sort();
    let mut want = vec![
        a.reference.clone(),
        b.reference.clone(),
        c.reference.clone(),
    ];
    want.sort();
    assert_eq!(users, want, "images sharing the layer: {v}");
    for img in [&a, &b, &c] {
        let i = v["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["reference"] == img.reference.as_str())
            .unwrap_or_else(|| panic!("{} not in {v}", img.reference));
        assert_eq!(i["bytes"], img.total_size(), "inspect image bytes: {i}");
        assert_eq!(i["digest"], img.manifest_digest.as_str());
    }
    assert_eq!(
        entry_digests(&f),
        unique.keys().cloned().collect::<BTreeSet<_>>(),
        "index entries = the unique blobs"
    );
    assert_eq!(
        occurrences(&bytes, &shared.1),
        1,
        "the shared layer's bytes occur once in the bundle"
    );

    let (_, index_len) = trailer(&bytes);
    let overhead = bytes.len() as u64 - unique_bytes;
    assert_eq!(
        overhead,
        64 + 48 * unique.len() as u64 + index_len + 64,
        "overhead = header + entry headers + index + trailer"
    );
    assert!(
        overhead < 64 * 1024,
        "overhead {overhead} bytes for 3 tiny images"
    );

    let z = env.json(&["size", &a.reference, &b.reference, &c.reference]);
    assert_eq!(z["bundle_bytes"], bytes.len(), "size: {z}");
    assert_eq!(z["dedup_bytes"], unique_bytes, "size: {z}");
    assert_eq!(z["carried_blobs"], unique.len(), "size: {z}");
    assert_eq!(
        z["sum_per_image_bytes"],
        a.total_size() + b.total_size() + c.total_size(),
        "size: {z}"
    );
    for i in z["images"].as_array().unwrap() {
        assert_eq!(
            i["shared_bytes"],
            shared.1.len(),
            "per-image shared bytes: {i}"
        );
    }

    let dst = Env::new();
    dst.ok(&["import", s(&f)]);
    assert_eq!(
        store_blobs(&dst.store()),
        unique.keys().cloned().collect::<Vec<_>>()
    );
    assert_store_clean(&dst, &[&a.reference, &b.reference, &c.reference]);
}

/// `bundle --since BASE` carries only what BASE lacks and lists the rest in `requires`;
/// importing it needs the base first; a delta against a `store inventory` carries the same.
#[test]
fn delta_since_bundle_and_inventory() {
    let reg = FakeRegistry::start();
    let shared = layer("delta-shared", 8000);
    let i1 = add_image_with(&reg, "delta/one", "v1", &[&shared, &layer("delta-1", 3000)]);
    let i2 = add_image_with(&reg, "delta/two", "v1", &[&shared, &layer("delta-2", 4000)]);
    let env = Env::new();
    env.ok(&["fetch", &i1.reference, &i2.reference]);
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.obun");
    let delta = dir.path().join("delta.obun");
    let jb = env.json(&["bundle", "-o", s(&base), &i1.reference]);
    let jd = env.json(&[
        "bundle",
        "-o",
        s(&delta),
        "--since",
        s(&base),
        &i2.reference,
    ]);
    assert_eq!(jd["requires"], 1, "bundle --json requires: {jd}");

    let v = env.json(&["inspect", s(&delta)]);
    let req: Vec<&str> = v["requires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        req,
        vec![shared_digest(&i1)],
        "requires = the layer the base holds: {v}"
    );
    assert_eq!(v["requires"][0]["size"], shared.1.len());
    assert_eq!(v["base"]["kind"], "bundle", "{v}");
    assert_eq!(
        v["base"]["id"], jb["bundle_id"],
        "base id = the base bundle's id: {v}"
    );
    let want: BTreeSet<String> = unique_blobs(&[&i2])
        .into_keys()
        .filter(|d| d != shared_digest(&i1))
        .collect();
    assert_eq!(
        entry_digests(&delta),
        want,
        "the delta carries i2's blobs minus the base's"
    );

    // Without the base.
    let empty = Env::new();
    let e = fails(&empty, &["import", s(&delta)]);
    assert!(
        e.contains(shared_digest(&i1)),
        "import without base does not name the missing blob: {e}"
    );
    assert!(store_refs(&empty.store()).is_empty() && bad_store_blobs(&empty.store()).is_empty());
    let e = fails(&empty, &["verify", s(&delta)]);
    assert!(
        e.contains(shared_digest(&i1)),
        "verify without base does not name the missing blob: {e}"
    );

    // Base, then delta.
    let dst = Env::new();
    dst.ok(&["import", s(&base)]);
    let v = dst.json(&["verify", s(&delta)]);
    assert_eq!(
        v["ok"], true,
        "verify DELTA against a store holding the base: {v}"
    );
    let r = dst.json(&["import", s(&delta)]);
    assert_eq!(r["blobs_imported"], want.len(), "{r}");
    assert_store_clean(&dst, &[&i1.reference, &i2.reference]);
    assert_eq!(store_blobs(&dst.store()), store_blobs(&env.store()));

    // Against an inventory of a store holding only i1 (the offline side).
    let offline = Env::new();
    offline.ok(&["import", s(&base)]);
    let inv = dir.path().join("inv.txt");
    offline.ok(&["store", "inventory", "-o", s(&inv)]);
    let inv_text = fs::read_to_string(&inv).unwrap();
    assert_eq!(
        inv_text.lines().next(),
        Some("# ocibundle inventory v1"),
        "{inv_text}"
    );
    let listed: BTreeSet<String> = inv_text
        .lines()
        .skip(1)
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        unique_blobs(&[&i1]).into_keys().collect::<BTreeSet<_>>(),
        "inventory lists the store's blobs"
    );
    let delta2 = dir.path().join("delta2.obun");
    env.ok(&[
        "bundle",
        "-o",
        s(&delta2),
        "--since",
        s(&inv),
        &i2.reference,
    ]);
    assert_eq!(
        entry_digests(&delta2),
        want,
        "delta against the inventory carries the same blobs"
    );
    let v = env.json(&["inspect", s(&delta2)]);
    assert_eq!(v["base"]["kind"], "inventory", "{v}");
    assert_eq!(v["requires"][0]["digest"], shared_digest(&i1), "{v}");
    offline.ok(&["import", s(&delta2)]);
    assert_store_clean(&offline, &[&i1.reference, &i2.reference]);
}

pub(super) fn shared_digest(i: &TestImage) -> &str {
    &i.layers[0].digest
}

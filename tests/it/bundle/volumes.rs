//! Owns the split-volume tests: any volume name accepted, missing, swapped, foreign and truncated volumes named.
use super::*;

/// A store with two images (one ~46 kB, one ~43 kB) and two split bundles of 20k volumes.
pub(super) struct Split {
    _reg: FakeRegistry,
    env: Env,
    dir: tempfile::TempDir,
    img: TestImage,
    other: TestImage,
}

pub(super) fn split_setup() -> Split {
    let reg = FakeRegistry::start();
    let img = add_image_with(
        &reg,
        "vol/main",
        "v1",
        &[&layer("vol-1", 30_000), &layer("vol-2", 15_000)],
    );
    let other = add_image_with(
        &reg,
        "vol/other",
        "v1",
        &[&layer("vol-3", 28_000), &layer("vol-4", 14_000)],
    );
    let env = Env::new();
    env.ok(&["fetch", &img.reference, &other.reference]);
    let dir = tempfile::tempdir().unwrap();
    Split {
        _reg: reg,
        env,
        dir,
        img,
        other,
    }
}

/// Writes `NAME.001…` in a new folder `dir/sub` for `reference` with 20k volumes.
pub(super) fn split_bundle(sp: &Split, sub: &str, reference: &str) -> PathBuf {
    let d = sp.dir.path().join(sub);
    fs::create_dir_all(&d).unwrap();
    let base = d.join("b.obun");
    sp.env
        .ok(&["bundle", "--split-size", "20k", "-o", s(&base), reference]);
    base
}

/// Every reader accepts FILE.001, FILE.003 and FILE; `sha256sum -c FILE.sha256` passes;
/// an existing first volume is refused without --force.
#[test]
fn volumes_every_reader_accepts_any_volume_name() {
    let sp = split_setup();
    let base = split_bundle(&sp, "good", &sp.img.reference);
    let d = base.parent().unwrap();
    let vols = volumes_of(&base);
    assert_eq!(vols.len(), 3, "46 kB in 20 kB volumes: {vols:?}");
    for v in &vols {
        assert_eq!(
            &fs::read(v).unwrap()[..8],
            b"OCIBVOL\x01",
            "{} starts with a volume header",
            v.display()
        );
    }
    let sums = fs::read_to_string(base.with_extension("obun.sha256")).expect("FILE.sha256 written");
    assert_eq!(sums.lines().count(), 3, "one line per volume:\n{sums}");
    for (line, v) in sums.lines().zip(&vols) {
        let name = v.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            line,
            format!(
                "{}  {name}",
                &sha256(&fs::read(v).unwrap())["sha256:".len()..]
            ),
            "relative names"
        );
    }
    sha256sum_check(d, "b.obun.sha256");
    assert!(
        temp_leftovers(d).is_empty(),
        "temp files left: {:?}",
        temp_leftovers(d)
    );

    let mut ids = BTreeSet::new();
    for name in [volume(&base, 1), volume(&base, 3), base.clone()] {
        let v = sp.env.json(&["verify", s(&name)]);
        assert_eq!(v["ok"], true, "verify {}: {v}", name.display());
        let i = sp.env.json(&["inspect", s(&name)]);
        assert_eq!(i["volumes"], 3, "inspect {}: {i}", name.display());
        assert_eq!(i["images"][0]["reference"], sp.img.reference.as_str());
        ids.insert(i["bundle_id"].as_str().unwrap().to_string());
        let z = sp.env.json(&["size", s(&name)]);
        assert_eq!(
            z["bundle_bytes"],
            vols.iter()
                .map(|p| fs::metadata(p).unwrap().len())
                .sum::<u64>(),
            "size {}: {z}",
            name.display()
        );
        let dst = Env::new();
        dst.ok(&["import", s(&name)]);
        assert_store_clean(&dst, &[&sp.img.reference]);
    }
    assert_eq!(
        ids.len(),
        1,
        "one bundle id whatever the volume named: {ids:?}"
    );

    // Existing output: refused (naming it, changing nothing), then replaced with --force.
    let before: Vec<Vec<u8>> = vols.iter().map(|v| fs::read(v).unwrap()).collect();
    let e = fails(
        &sp.env,
        &[
            "bundle",
            "--split-size",
            "20k",
            "-o",
            s(&base),
            &sp.other.reference,
        ],
    );
    assert!(
        e.contains(s(&volume(&base, 1))),
        "error names the existing volume: {e}"
    );
    assert_eq!(
        vols.iter()
            .map(|v| fs::read(v).unwrap())
            .collect::<Vec<_>>(),
        before,
        "a refused bundle changed the volumes"
    );
    sp.env.ok(&[
        "bundle",
        "--split-size",
        "20k",
        "-o",
        s(&base),
        "--force",
        &sp.other.reference,
    ]);
    let i = sp.env.json(&["inspect", s(&base)]);
    assert_eq!(
        i["images"][0]["reference"],
        sp.other.reference.as_str(),
        "--force replaced the bundle: {i}"
    );
    sha256sum_check(d, "b.obun.sha256");
}

/// A fresh good volume set in `dir/NAME`, damaged by `damage`; verify and import of
/// `FILE.001` must fail (import storing nothing). Returns (FILE, verify's error, import's error).
pub(super) fn damaged_split(sp: &Split, name: &str, damage: &dyn Fn(&Path)) -> (PathBuf, String, String) {
    let base = split_bundle(sp, name, &sp.img.reference);
    damage(&base);
    let v = fails(&sp.env, &["verify", s(&volume(&base, 1))]);
    let store = sp.dir.path().join(format!("store-{name}"));
    let i = fails(
        &sp.env,
        &["--store", s(&store), "import", s(&volume(&base, 1))],
    );
    assert!(
        assert_import_left_nothing_bad(&store, name).is_ok() && store_blobs(&store).is_empty(),
        "{name}: import stored something"
    );
    (base, v, i)
}

/// Damaged volume sets: the error names the volume at fault.
#[test]
fn volumes_missing_swapped_foreign_truncated_are_named() {
    let sp = split_setup();
    let foreign = split_bundle(&sp, "foreign", &sp.other.reference);
    assert!(
        volumes_of(&foreign).len() >= 3,
        "the other bundle has 3 volumes too"
    );

    let case = |name: &str, damage: &dyn Fn(&Path)| damaged_split(&sp, name, damage);

    let (base, v, i) = case("middle-missing", &|b| {
        fs::remove_file(volume(b, 2)).unwrap()
    });
    for e in [&v, &i] {
        assert!(
            e.contains(s(&volume(&base, 2))),
            "missing middle volume: error does not name {}: {e}",
            volume(&base, 2).display()
        );
        assert!(e.contains("missing"), "says it is missing: {e}");
    }

    let (base, v, i) = case("swapped", &|b| {
        let t = b.with_extension("tmp-swap");
        fs::rename(volume(b, 1), &t).unwrap();
        fs::rename(volume(b, 2), volume(b, 1)).unwrap();
        fs::rename(&t, volume(b, 2)).unwrap();
    });
    for e in [&v, &i] {
        assert!(
            e.contains(s(&volume(&base, 1))) || e.contains(s(&volume(&base, 2))),
            "swapped volumes: error names neither: {e}"
        );
    }

    let (base, v, i) = case("foreign-middle", &|b| {
        fs::copy(volume(&foreign, 2), volume(b, 2)).unwrap();
    });
    for e in [&v, &i] {
        assert!(
            e.contains(s(&volume(&base, 2))),
            "foreign volume 2: error does not name it: {e}"
        );
        assert!(
            e.contains("another bundle"),
            "says it belongs to another bundle: {e}"
        );
    }

    let (base, v, i) = case("last-missing", &|b| fs::remove_file(volume(b, 3)).unwrap());
    for e in [&v, &i] {
        assert!(
            e.contains(s(&volume(&base, 2))) || e.contains(s(&volume(&base, 3))),
            "last volume removed: error names no volume: {e}"
        );
        assert!(
            e.contains("missing") || e.contains("truncated"),
            "last volume removed: unclear error: {e}"
        );
    }

    let (base, v, i) = case("middle-truncated", &|b| {
        let p = volume(b, 2);
        let data = fs::read(&p).unwrap();
        fs::write(&p, &data[..data.len() - 1]).unwrap();
    });
    for e in [&v, &i] {
        assert!(
            e.contains(s(&volume(&base, 2))),
            "truncated volume 2 not named: {e}"
        );
    }
}

/// A foreign FIRST volume is the one to blame, not its rightful neighbour: the index (in the
/// last volume) and the other volumes say which bundle this is (docs/design.md: "a missing,
/// swapped or foreign volume is named in the error").
#[test]
fn volumes_foreign_first_volume_is_the_one_named() {
    let sp = split_setup();
    let foreign = split_bundle(&sp, "foreign", &sp.other.reference);
    let (base, v, i) = damaged_split(&sp, "foreign-first", &|b| {
        fs::copy(volume(&foreign, 1), volume(b, 1)).unwrap();
    });
    for e in [&v, &i] {
        assert!(
            e.contains("another bundle"),
            "says a volume belongs to another bundle: {e}"
        );
        let named_first = e.find(s(&volume(&base, 1)));
        let named_second = e.find(s(&volume(&base, 2)));
        assert!(
            named_first.is_some() && named_second.is_none_or(|p2| named_first.unwrap() < p2),
            "foreign volume 1: the error should blame {} (the foreign one): {e}",
            volume(&base, 1).display()
        );
    }
}

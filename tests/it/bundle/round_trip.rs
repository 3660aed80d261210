//! Owns the bundle round-trip tests with real tools, determinism, and bundle names and pipes.
use super::*;

/// fetch (plain, schema2, zstd, shared, and multi with --all-platforms) from a real registry,
/// bundle --all, verify, import into a fresh store: skopeo reads every OCI image back with the
/// registry's digests, the schema2 manifest is byte-exact, the blob set and index.json are the
/// same as the source store's, and fsck is clean.
#[test]
fn round_trip_real_registry_fetch_bundle_verify_import() {
    let reg = Registry::start(Variant::Plain);
    let fx = fixtures::push_all(&reg);
    let src = Env::new();
    src.ok(&[
        "fetch",
        &fx.simple.reference,
        &fx.schema2.reference,
        &fx.zstd.reference,
        &fx.shared.reference,
    ]);
    src.ok(&["fetch", "--all-platforms", &fx.multi.reference]);
    // The same index under another tag, fetched for the host's platform only: the store entry
    // is the amd64 child with `io.ocibundle.index.digest`, and the index blob travels too.
    let multi_one = format!("{}/test/multi:one", reg.host());
    let layout = fixtures::layout();
    let index_digest = fixtures::push(&reg, &layout.dir, "multi", "test/multi:one", PushMode::All);
    assert_eq!(index_digest, fx.multi.digest);
    let amd64 = layout.image("multi").children[0].clone();
    assert_eq!(amd64.platform, "linux/amd64");
    src.ok(&["fetch", &multi_one]);
    let all = [&fx.simple, &fx.schema2, &fx.zstd, &fx.multi, &fx.shared];

    let out = tempfile::tempdir().unwrap();
    let b = out.path().join("all.obun");
    let doc = src.json(&["bundle", "-o", s(&b), "--all"]);
    assert_eq!(
        doc["files"][0]["bytes"],
        fs::metadata(&b).unwrap().len(),
        "bundle --json files: {doc}"
    );
    assert!(
        temp_leftovers(out.path()).is_empty(),
        "temp files left: {:?}",
        temp_leftovers(out.path())
    );
    sha256sum_check(out.path(), "all.obun.sha256");
    let v = src.json(&["verify", s(&b)]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["blobs_checked"],
        store_blobs(&src.store()).len(),
        "verify checks every blob once: {v}"
    );

    let dst = Env::new();
    let r = dst.json(&["import", s(&b)]);
    let mut want: Vec<&str> = all.iter().map(|p| p.reference.as_str()).collect();
    want.push(&multi_one);
    want.sort();
    assert_eq!(
        r["images"],
        serde_json::json!(want),
        "import --json images: {r}"
    );
    assert_store_clean(&dst, &want);
    assert_eq!(
        store_blobs(&dst.store()),
        store_blobs(&src.store()),
        "imported blob set = source blob set"
    );
    let idx = |e: &Env| -> Value {
        serde_json::from_slice(&fs::read(e.store().join("index.json")).unwrap()).unwrap()
    };
    assert_eq!(
        idx(&dst)["manifests"],
        idx(&src)["manifests"],
        "imported index.json entries = source entries"
    );

    for p in [&fx.simple, &fx.zstd, &fx.shared, &fx.multi] {
        let oci = format!("oci:{}:{}", dst.store().display(), p.reference);
        let raw = tool("skopeo", &["inspect", "--raw", &oci]);
        assert_eq!(
            sha256(raw.as_bytes()),
            p.digest,
            "skopeo reads {} from the imported store with the registry's digest",
            p.reference
        );
        let tmp = tempfile::tempdir().unwrap();
        let dest = format!("dir:{}", tmp.path().join("img").display());
        let mut args = vec!["copy", "--quiet"];
        if p.repo.ends_with("multi") {
            args.push("--all");
        }
        args.extend([oci.as_str(), dest.as_str()]);
        tool("skopeo", &args);
        assert!(
            tmp.path().join("img/manifest.json").exists(),
            "skopeo copy {oci} wrote no manifest.json"
        );
    }
    // skopeo's oci: transport cannot see Docker schema2 entries: compare bytes instead.
    let raw = reg.raw_manifest(&fx.schema2.reference);
    let blob = |d: &str| {
        fs::read(
            dst.store()
                .join("blobs/sha256")
                .join(d.strip_prefix("sha256:").unwrap()),
        )
    };
    assert_eq!(
        blob(&fx.schema2.digest).expect("schema2 manifest imported"),
        raw,
        "schema2 manifest bytes"
    );
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], MT_DOCKER_MANIFEST);
    for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
        let d = d["digest"].as_str().unwrap();
        assert_eq!(
            sha256(&blob(d).unwrap_or_else(|e| panic!("schema2 blob {d} not imported: {e}"))),
            d
        );
    }
    let entry = idx(&dst)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["annotations"]["org.opencontainers.image.ref.name"] == fx.schema2.reference.as_str()
        })
        .cloned()
        .expect("schema2 reference imported");
    assert_eq!(entry["digest"], fx.schema2.digest.as_str());
    assert_eq!(entry["mediaType"], MT_DOCKER_MANIFEST);

    let entry = idx(&dst)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == multi_one.as_str())
        .cloned()
        .expect("multi:one imported");
    assert_eq!(entry["digest"], amd64.manifest.digest.as_str(), "{entry}");
    assert_eq!(
        entry["annotations"]["io.ocibundle.index.digest"],
        fx.multi.digest.as_str(),
        "{entry}"
    );
    assert_eq!(
        sha256(&blob(&fx.multi.digest).expect("the index travelled")),
        fx.multi.digest
    );
    let oci = format!("oci:{}:{multi_one}", dst.store().display());
    let raw = tool("skopeo", &["inspect", "--raw", &oci]);
    assert_eq!(
        sha256(raw.as_bytes()),
        amd64.manifest.digest,
        "skopeo reads the amd64 child"
    );
}

/// Same images → same bytes: twice, refs in another order (and repeated), via `--images`, to
/// stdout (with `--json` going to stderr), and from another store filled in another order.
#[test]
fn determinism_same_images_give_identical_bytes() {
    let reg = FakeRegistry::start();
    let (a, b, c, _) = three_sharing(&reg);
    let env = Env::new();
    env.ok(&["fetch", &a.reference, &b.reference, &c.reference]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ra, rb, rc) = (
        a.reference.as_str(),
        b.reference.as_str(),
        c.reference.as_str(),
    );

    let j1 = env.json(&["bundle", "-o", s(&d.join("x1")), ra, rb, rc]);
    env.ok(&["bundle", "-o", s(&d.join("x2")), ra, rb, rc]);
    env.ok(&["bundle", "-o", s(&d.join("x3")), rc, ra, rb, ra]);
    let list = d.join("list.txt");
    fs::write(
        &list,
        format!("# images to carry\n{rb}\n\n{rc}   # trailing comment\n{ra}\n"),
    )
    .unwrap();
    env.ok(&["bundle", "-o", s(&d.join("x4")), "--images", s(&list)]);
    let o = env.run(&["bundle", "-o", "-", rb, rc, ra, "--json"]);
    assert!(
        o.status.success(),
        "bundle -o -:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout_bundle = o.stdout;

    let other = Env::new();
    for r in [rc, rb, ra] {
        other.ok(&["fetch", r]);
    }
    other.ok(&["bundle", "-o", s(&d.join("x5")), ra, rb, rc]);

    let x1 = fs::read(d.join("x1")).unwrap();
    for (name, got) in [
        ("same args again", fs::read(d.join("x2")).unwrap()),
        (
            "refs reordered and repeated",
            fs::read(d.join("x3")).unwrap(),
        ),
        ("--images list", fs::read(d.join("x4")).unwrap()),
        ("-o - (stdout)", stdout_bundle),
        (
            "another store, fetched in another order",
            fs::read(d.join("x5")).unwrap(),
        ),
    ] {
        assert!(
            got == x1,
            "{name}: {} bytes differ from the first bundle's {} bytes (first difference at byte {:?})",
            got.len(),
            x1.len(),
            got.iter().zip(&x1).position(|(p, q)| p != q)
        );
    }
    assert_eq!(
        index(&x1)["bundle_id"],
        j1["bundle_id"],
        "bundle --json bundle_id is the index's"
    );
    assert_eq!(
        hex::encode(&x1[16..48]),
        j1["bundle_id"].as_str().unwrap(),
        "header bundle id"
    );
    // A different image set is a different bundle.
    env.ok(&["bundle", "-o", s(&d.join("y")), ra, rb]);
    assert_ne!(
        index(&fs::read(d.join("y")).unwrap())["bundle_id"],
        j1["bundle_id"],
        "different images, same bundle id"
    );
}

/// A one-file bundle whose name happens to end in `.NNN` (a date, a build number) is still one
/// file: docs/design.md says a bundle without --split-size has no volume header.
#[test]
fn single_file_bundle_named_like_a_volume() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("name/img", "v1", &[800]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("images.20240101");
    env.ok(&["bundle", "-o", s(&f), &img.reference]);
    env.ok(&["verify", s(&f)]);
    env.ok(&["inspect", s(&f)]);
    let dst = Env::new();
    dst.ok(&["import", s(&f)]);
    assert_store_clean(&dst, &[&img.reference]);
}

/// docs/design.md ("Why entries also have inline headers"): `import -` reads a bundle from a
/// pipe, verifying each blob as it passes.
#[test]
fn import_from_stdin_pipe() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("pipe/img", "v1", &[900, 300]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.obun");
    env.ok(&["bundle", "-o", s(&f), &img.reference]);
    let dst = Env::new();
    let o = dst
        .cmd()
        .args(["import", "-"])
        .stdin(fs::File::open(&f).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "import - < bundle:\n{}", text(&o));
    assert_store_clean(&dst, &[&img.reference]);
}

/// The `error: ` line names a missing bundle file once (regression: the io error was printed twice).
#[test]
fn missing_bundle_file_error_names_it_once() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("nope.obun");
    for cmd in ["verify", "inspect", "import"] {
        let e = fails(&env, &[cmd, s(&f)]);
        assert_eq!(
            e,
            format!(
                "error: {}: no such bundle file (nor {}.001)",
                f.display(),
                f.display()
            ),
            "{cmd}"
        );
    }
}

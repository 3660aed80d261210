//! Owns the export-from-a-bundle tests: the same output as from the store, and a delta that needs its base.
use super::*;

#[test]
fn export_from_bundle_equals_export_from_store_and_delta_needs_base() {
    let st = Setup::new();
    let bundle = st.path("four.obun");
    let mut args = vec!["bundle", "-o", s(&bundle)];
    args.extend(st.four());
    st.env.ok(&args);

    let from_store = st.path("store.tar");
    let mut args = vec!["export", "--docker-archive", s(&from_store)];
    args.extend(st.four());
    let j1 = st.env.json(&args);

    // From the bundle, with no store at all.
    let empty = Env::new();
    let from_bundle = st.path("bundle.tar");
    let mut args = vec![
        "export",
        "--docker-archive",
        s(&from_bundle),
        "--from",
        s(&bundle),
    ];
    args.extend(st.four());
    let j2 = empty.json(&args);
    assert!(
        store_refs(&empty.store()).is_empty(),
        "export --from created or filled a store"
    );
    let want = with_tags(st.expect_four());
    check_docker_archive(&fs::read(&from_bundle).unwrap(), &want);
    assert_eq!(
        j1["images"], j2["images"],
        "same images, IDs and manifests from the store and the bundle"
    );
    assert!(
        fs::read(&from_store).unwrap() == fs::read(&from_bundle).unwrap(),
        "the docker-archive from the bundle differs from the one from the store (not deterministic)"
    );
    // From a split bundle, naming its second volume.
    let split = st.path("split.obun");
    let mut args = vec!["bundle", "-o", s(&split), "--split-size", "5000"];
    args.extend(st.four());
    st.env.ok(&args);
    let vol2 = crate::harness::bundles::volume(&split, 2);
    assert!(
        crate::harness::bundles::volume(&split, 3).exists(),
        "want at least 3 volumes"
    );
    let from_split = st.path("split.tar");
    let mut args = vec![
        "export",
        "--docker-archive",
        s(&from_split),
        "--from",
        s(&vol2),
    ];
    args.extend(st.four());
    empty.ok(&args);
    assert!(
        fs::read(&from_split).unwrap() == fs::read(&from_store).unwrap(),
        "the docker-archive from the split bundle differs from the one from the store"
    );
    // --all from the bundle = its images.
    let all = st.path("all.tar");
    let j3 = empty.json(&[
        "export",
        "--docker-archive",
        s(&all),
        "--from",
        s(&bundle),
        "--all",
    ]);
    assert_eq!(
        j3["images"], j1["images"],
        "--all --from BUNDLE exports the bundle's images"
    );
    // OCI layout from the bundle: the registry's digests.
    let lay = st.path("layout");
    empty.ok(&[
        "export",
        "--oci-layout",
        s(&lay),
        "--from",
        s(&bundle),
        &st.fx.zstd.reference,
    ]);
    let idx: Value = serde_json::from_slice(&fs::read(lay.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        idx["manifests"][0]["digest"],
        st.fx.zstd.digest.as_str(),
        "{idx}"
    );
    layout_blobs(&lay);

    // Delta: shared's first layer is in the base (simple), so the delta does not carry it.
    let base = st.path("base.obun");
    let delta = st.path("delta.obun");
    st.env
        .ok(&["bundle", "-o", s(&base), &st.fx.simple.reference]);
    st.env.ok(&[
        "bundle",
        "-o",
        s(&delta),
        "--since",
        s(&base),
        &st.fx.shared.reference,
    ]);
    let missing = &st.fx.simple.image.layers[0].digest;
    let outdir = tempfile::tempdir().unwrap();
    let x = outdir.path().join("x.tar");
    let e = fails(
        &empty,
        &[
            "export",
            "--docker-archive",
            s(&x),
            "--from",
            s(&delta),
            &st.fx.shared.reference,
        ],
    );
    assert!(
        e.contains(missing.as_str()),
        "the error does not name the blob the delta leaves to its base ({missing}): {e}"
    );
    assert!(
        dir_names(outdir.path()).is_empty(),
        "failed export left {:?}",
        dir_names(outdir.path())
    );
    let e = fails(
        &empty,
        &[
            "export",
            "--oci-layout",
            s(&outdir.path().join("lay")),
            "--from",
            s(&delta),
            &st.fx.shared.reference,
        ],
    );
    assert!(
        e.contains(missing.as_str()),
        "OCI layout: the error does not name {missing}: {e}"
    );
    assert!(
        dir_names(outdir.path()).is_empty(),
        "failed export left {:?}",
        dir_names(outdir.path())
    );
    // With the base imported into the store, the delta exports.
    empty.ok(&["import", s(&base)]);
    empty.ok(&[
        "export",
        "--docker-archive",
        s(&x),
        "--from",
        s(&delta),
        &st.fx.shared.reference,
    ]);
    check_docker_archive(
        &fs::read(&x).unwrap(),
        &with_tags(vec![st.expect(&st.fx.shared.reference)]),
    );
}

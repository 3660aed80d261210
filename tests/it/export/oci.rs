//! Owns the OCI layout / OCI archive export tests: byte-identical blobs, pushed back with the same digests, unpacked by umoci.
use super::*;

#[test]
fn oci_layout_keeps_digests_and_unpacks() {
    let st = Setup::new();
    let dir = st.path("layout");
    let refs = [
        &st.fx.simple,
        &st.fx.schema2,
        &st.fx.zstd,
        &st.fx.multi,
        &st.fx.shared,
    ];
    let mut args = vec!["export", "--oci-layout", s(&dir)];
    args.extend(refs.iter().map(|p| p.reference.as_str()));
    let doc = st.env.json(&args);
    assert_eq!(doc["format"], "oci-layout", "{doc}");
    assert_eq!(doc["images"].as_array().map(Vec::len), Some(5), "{doc}");
    for p in refs {
        let i = doc["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["reference"] == p.reference.as_str());
        let i = i.unwrap_or_else(|| panic!("{} not in {doc}", p.reference));
        assert_eq!(
            i["manifest_digest"],
            p.digest.as_str(),
            "manifest_digest of an OCI layout image = the registry's: {i}"
        );
    }

    assert_eq!(
        serde_json::from_slice::<Value>(&fs::read(dir.join("oci-layout")).unwrap()).unwrap()["imageLayoutVersion"],
        "1.0.0"
    );
    let idx: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blobs = layout_blobs(&dir);
    for p in refs {
        let entries: Vec<&Value> = idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["annotations"]["org.opencontainers.image.ref.name"] == p.reference.as_str()
            })
            .collect();
        assert_eq!(
            entries.len(),
            1,
            "index.json entries for {}: {idx}",
            p.reference
        );
        let d = entries[0];
        assert_eq!(
            d["digest"],
            p.digest.as_str(),
            "{} keeps the registry's digest: {d}",
            p.reference
        );
        assert_eq!(
            d["annotations"]["io.containerd.image.name"],
            p.reference.as_str(),
            "{d}"
        );
        // Every blob the registry serves for it is there, byte for byte.
        assert!(blobs.contains(&p.digest), "manifest {} missing", p.digest);
        let raw = st.reg.raw_manifest(&p.reference);
        let m: Value = serde_json::from_slice(&raw).unwrap();
        let manifests: Vec<Value> = if m["mediaType"] == MT_INDEX {
            assert_eq!(
                d["mediaType"], MT_INDEX,
                "the index is kept for {}",
                p.reference
            );
            m["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let r = format!(
                        "{}@{}",
                        p.reference.rsplit_once(':').unwrap().0,
                        c["digest"].as_str().unwrap()
                    );
                    assert!(
                        blobs.contains(c["digest"].as_str().unwrap()),
                        "child {r} missing"
                    );
                    serde_json::from_slice(&st.reg.raw_manifest(&r)).unwrap()
                })
                .collect()
        } else {
            vec![m]
        };
        for m in manifests {
            assert!(
                blobs.contains(m["config"]["digest"].as_str().unwrap()),
                "config of {} missing",
                p.reference
            );
            for l in m["layers"].as_array().unwrap() {
                assert!(
                    blobs.contains(l["digest"].as_str().unwrap()),
                    "layer {} of {} missing",
                    l["digest"],
                    p.reference
                );
            }
        }
    }
    // The OCI project's own validator agrees, image by image. Debian's build (1.0.0-rc1)
    // predates zstd layers and knows no Docker schema2 media types, so it is asked about the
    // gzip OCI images only; and it takes a multi-image index.json as ambiguous ("descriptor
    // retrieved by refs is not unique"), so each goes into a layout of its own.
    for (i, p) in [&st.fx.simple, &st.fx.shared].iter().enumerate() {
        let one = st.path(&format!("validate-{i}"));
        st.env.ok(&["export", "--oci-layout", s(&one), &p.reference]);
        crate::harness::cmd::tool("oci-image-tool", &["validate", "--type", "image", "--ref", &format!("name={}", p.reference), s(&one)]);
    }
    // Nothing but what the five need (the store holds nothing else here anyway).
    let store_blobs: BTreeSet<String> = crate::harness::bundles::store_blobs(&st.env.store())
        .into_iter()
        .collect();
    assert!(
        blobs.is_subset(&store_blobs),
        "layout blobs not in the store: {:?}",
        blobs.difference(&store_blobs).collect::<Vec<_>>()
    );

    // --all: the same layout (the store holds exactly these five).
    let dir_all = st.path("layout-all");
    st.env.ok(&["export", "--oci-layout", s(&dir_all), "--all"]);
    assert_eq!(layout_blobs(&dir_all), blobs, "--all: the same blobs");
    let idx_all: Value =
        serde_json::from_slice(&fs::read(dir_all.join("index.json")).unwrap()).unwrap();
    let entries = |v: &Value| -> BTreeSet<String> {
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.to_string())
            .collect()
    };
    assert_eq!(
        entries(&idx_all),
        entries(&idx),
        "--all: the same index.json entries"
    );

    // skopeo pushes from the layout to a second registry with the same digests.
    let reg2 = Registry::start(Variant::Plain);
    for (p, all, dest) in [
        (&st.fx.simple, false, "copy/simple:1"),
        (&st.fx.zstd, false, "copy/zstd:1"),
        (&st.fx.multi, true, "copy/multi:1"),
    ] {
        let src = format!("oci:{}:{}", s(&dir), p.reference);
        let dst = format!("docker://{}/{dest}", reg2.host());
        let mut a = vec![
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ];
        if all {
            a.push("--all");
        }
        a.extend([src.as_str(), dst.as_str()]);
        tool("skopeo", &a);
        let (repo, tag) = dest.split_once(':').unwrap();
        assert_eq!(
            reg2.content_digest(repo, tag),
            p.digest,
            "Docker-Content-Digest of {dst} (from {src})"
        );
        assert_eq!(
            sha256(&reg2.raw_manifest(&format!("{}/{dest}", reg2.host()))),
            p.digest,
            "raw manifest of {dst}"
        );
    }

    // umoci unpacks simple: files, modes, links, the whiteout applied.
    let b = tempfile::tempdir().unwrap();
    let bundle = b.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{}", s(&dir), st.fx.simple.reference),
            s(&bundle),
        ],
    );
    check_simple_rootfs(&bundle.join("rootfs"));

    // The OCI archive is the same layout as one tar.
    let oa = st.path("layout.tar");
    let mut args = vec!["export", "--oci-archive", s(&oa)];
    args.extend(refs.iter().map(|p| p.reference.as_str()));
    st.env.ok(&args);
    let t = Tar::read(&fs::read(&oa).unwrap());
    let mut in_tar: BTreeSet<String> = BTreeSet::new();
    for (n, ty, d) in &t.entries {
        if !ty.is_file() {
            continue;
        }
        let on_disk = fs::read(dir.join(n))
            .unwrap_or_else(|e| panic!("{n} of the OCI archive is not in the layout: {e}"));
        assert!(
            *d == on_disk,
            "{n} differs between the OCI archive and the layout"
        );
        in_tar.insert(n.clone());
    }
    let want: BTreeSet<String> = blobs
        .iter()
        .map(|b| format!("blobs/sha256/{}", hex_of(b)))
        .chain(["index.json".to_string(), "oci-layout".to_string()])
        .collect();
    assert_eq!(
        in_tar, want,
        "files of the OCI archive = files of the layout"
    );
    let v: Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            &format!("oci-archive:{}:{}", s(&oa), st.fx.simple.reference),
        ],
    ))
    .unwrap();
    assert_eq!(
        v["Digest"],
        st.fx.simple.digest.as_str(),
        "skopeo inspect oci-archive: {v}"
    );
}

pub(super) fn check_simple_rootfs(root: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let hello = root.join("bin/hello");
    assert_eq!(
        fs::read(&hello).unwrap(),
        b"#!/bin/sh\necho hello from ocibundle\n"
    );
    assert_eq!(
        fs::metadata(&hello).unwrap().permissions().mode() & 0o7777,
        0o755,
        "bin/hello mode"
    );
    assert_eq!(
        fs::read_link(root.join("bin/hi")).unwrap(),
        PathBuf::from("hello"),
        "bin/hi symlink target"
    );
    let h2 = fs::metadata(root.join("bin/hello2")).unwrap();
    assert_eq!(
        h2.ino(),
        fs::metadata(&hello).unwrap().ino(),
        "bin/hello2 is a hard link of bin/hello"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "fixture\n"
    );
    assert_eq!(
        fs::metadata(root.join("etc/hostname"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o644,
        "etc/hostname mode"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/motd")).unwrap(),
        "simple v1\n"
    );
    assert!(
        fs::symlink_metadata(root.join("etc/x")).is_err(),
        "etc/x was whited out by the second layer"
    );
    assert!(
        fs::symlink_metadata(root.join("etc/.wh.x")).is_err(),
        "the whiteout marker itself is not a file"
    );
}

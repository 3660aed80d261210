//! Owns the docker-archive export tests with its real consumers: docker load, podman load, docker's familiar names and digest-only references, containerd, skopeo.
use super::*;

#[test]
fn docker_archive_loads_into_podman() {
    let st = Setup::new();
    let out = st.path("four.tar");
    let mut args = vec!["export", "--docker-archive", s(&out)];
    args.extend(st.four());
    let doc = st.env.json(&args);
    // Private-registry RepoTags are the full names (docker's familiar form keeps a host).
    let want = with_tags(st.expect_four());
    let data = fs::read(&out).unwrap();
    let t = check_docker_archive(&data, &want);
    check_json(&doc, &out, "docker-archive", &want, Some(&t));
    // simple and shared share their first layer blob: one layer file for both.
    assert_eq!(
        st.fx.simple.image.layers[0].digest,
        st.fx.shared.image.layers[0].digest
    );

    let podman = Podman::new();
    let mut loaded = podman.load(&out);
    loaded.sort();
    let mut want_loaded: Vec<String> = st.four().iter().map(|r| r.to_string()).collect();
    want_loaded.sort();
    assert_eq!(loaded, want_loaded, "podman load printed these names");
    assert_eq!(
        podman.images(),
        podman_expect(&want),
        "podman images after load (ID = config digest)"
    );

    // multi, arm64 picked from the index, in a separate archive.
    let arm = st.path("arm64.tar");
    let doc = st.env.json(&[
        "export",
        "--docker-archive",
        s(&arm),
        "--platform",
        "linux/arm64",
        &st.fx.multi.reference,
    ]);
    let mut e = expect_from_registry(
        &st.reg,
        &child_ref(&st.reg, &st.fx.multi.reference, "linux/arm64/v8"),
        &st.fx.multi.reference,
    );
    assert_eq!(e.platform, "linux/arm64/v8");
    let want_arm = vec![(e.clone(), vec![st.fx.multi.reference.clone()])];
    let t = check_docker_archive(&fs::read(&arm).unwrap(), &want_arm);
    check_json(&doc, &arm, "docker-archive", &want_arm, Some(&t));
    podman.remove_all();
    assert_eq!(podman.load(&arm), vec![st.fx.multi.reference.clone()]);
    assert_eq!(
        podman.images(),
        podman_expect(&want_arm),
        "podman images after loading the arm64 archive"
    );
    let arch = podman.ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}}",
        &st.fx.multi.reference,
    ]);
    assert_eq!(arch.trim(), "linux/arm64", "podman sees the arm64 config");

    // `--docker-archive -` straight into `podman load` (stdin).
    podman.remove_all();
    let mut producer = st.env.cmd();
    producer.args([
        "export",
        "--docker-archive",
        "-",
        &st.fx.zstd.reference,
        &st.fx.schema2.reference,
    ]);
    let mut loaded = podman.load_from(&mut producer);
    loaded.sort();
    assert_eq!(
        loaded,
        vec![
            st.fx.schema2.reference.clone(),
            st.fx.zstd.reference.clone()
        ],
        "podman load from the pipe"
    );
    let want_two = with_tags(vec![
        st.expect(&st.fx.schema2.reference),
        st.expect(&st.fx.zstd.reference),
    ]);
    assert_eq!(
        podman.images(),
        podman_expect(&want_two),
        "podman images after loading from the pipe"
    );

    // A one-image OCI archive loads into podman under its full name with the registry's
    // manifest digest (podman refuses OCI archives holding more than one image).
    podman.remove_all();
    let oa = st.path("simple-oci.tar");
    st.env
        .ok(&["export", "--oci-archive", s(&oa), &st.fx.simple.reference]);
    assert_eq!(
        podman.load(&oa),
        vec![st.fx.simple.reference.clone()],
        "podman load of the OCI archive"
    );
    let got = podman.ok(&["images", "--no-trunc", "--format", "{{.ID}} {{.Digest}}"]);
    let simple = st.expect(&st.fx.simple.reference);
    assert_eq!(
        got.trim(),
        format!("{} {}", simple.image_id, st.fx.simple.digest),
        "podman's ID and digest of the OCI archive image"
    );

    // Without --platform: the host's (linux/amd64), and a note on stderr says so.
    let amd = st.path("amd64.tar");
    let o = st.env.run(&[
        "export",
        "--docker-archive",
        s(&amd),
        &st.fx.multi.reference,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("linux/amd64"),
        "no note naming the platform picked: {}",
        text(&o)
    );
    e = expect_from_registry(
        &st.reg,
        &child_ref(&st.reg, &st.fx.multi.reference, "linux/amd64"),
        &st.fx.multi.reference,
    );
    check_docker_archive(
        &fs::read(&amd).unwrap(),
        &[(e, vec![st.fx.multi.reference.clone()])],
    );
}

/// Adds `name` to the store's index.json as another name for the manifest `target` already
/// has (what fetching the same image under that name would give).
pub(super) fn alias_in_store(env: &Env, target: &str, name: &str) {
    let p = env.store().join("index.json");
    let mut idx: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    let ms = idx["manifests"].as_array_mut().unwrap();
    let mut d = ms
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == target)
        .unwrap_or_else(|| panic!("{target} not in the store"))
        .clone();
    d["annotations"]["org.opencontainers.image.ref.name"] = json!(name);
    ms.push(d);
    ms.sort_by(|a, b| {
        a["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .cmp(&b["annotations"]["org.opencontainers.image.ref.name"].as_str())
    });
    fs::write(&p, serde_json::to_vec(&idx).unwrap()).unwrap();
}

#[test]
fn docker_archive_familiar_names_and_digest_only_refs() {
    let st = Setup::new();
    // docker.io names without talking to docker.io: aliases in the store's index.json.
    alias_in_store(
        &st.env,
        &st.fx.simple.reference,
        "docker.io/library/redis:7",
    );
    alias_in_store(&st.env, &st.fx.shared.reference, "docker.io/myorg/app:2");
    let pinned = st.fx.schema2.pinned();
    st.env.ok(&["fetch", &pinned]);
    let v = st.env.json(&["store", "fsck"]);
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(0),
        "the aliased store is sound: {v}"
    );

    let out = st.path("names.tar");
    let doc = st.env.json(&[
        "export",
        "--docker-archive",
        s(&out),
        "docker.io/library/redis:7",
        "myorg/app:2",
        &pinned,
    ]);
    let want = vec![
        (
            expect_from_registry(
                &st.reg,
                &st.fx.simple.reference,
                "docker.io/library/redis:7",
            ),
            vec!["docker.io/library/redis:7".to_string()],
        ),
        (
            expect_from_registry(&st.reg, &st.fx.shared.reference, "docker.io/myorg/app:2"),
            vec!["docker.io/myorg/app:2".to_string()],
        ),
        (expect_from_registry(&st.reg, &pinned, &pinned), vec![]),
    ];
    let t = check_docker_archive(&fs::read(&out).unwrap(), &want);
    check_json(&doc, &out, "docker-archive", &want, Some(&t));

    let podman = Podman::new();
    podman.load(&out);
    assert_eq!(
        podman.images(),
        podman_expect(&want),
        "podman names: fully qualified RepoTags are kept (docker.io/library/redis:7, not localhost/redis:7), no RepoTag -> <none>:<none>"
    );

    let ctd = Containerd::start();
    ctd.import(&out, &[]);
    let names: BTreeSet<String> = ctd
        .images()
        .into_iter()
        .map(|i| i.name)
        .filter(|n| !n.starts_with("sha256:"))
        .collect();
    let want_names: BTreeSet<String> = want.iter().map(|(e, _)| e.reference.clone()).collect();
    assert_eq!(
        names, want_names,
        "containerd names = io.containerd.image.name, the digest-pinned one included"
    );

    // Two names of one image: one manifest.json entry with both RepoTags.
    let two = st.path("two.tar");
    st.env.ok(&[
        "export",
        "--docker-archive",
        s(&two),
        &st.fx.simple.reference,
        "redis:7",
    ]);
    let e = expect_from_registry(&st.reg, &st.fx.simple.reference, &st.fx.simple.reference);
    let t = check_docker_archive(
        &fs::read(&two).unwrap(),
        &[(
            e.clone(),
            vec![st.fx.simple.reference.clone(), "docker.io/library/redis:7".into()],
        )],
    );
    let idx = t.json("index.json");
    let named: BTreeSet<&str> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["annotations"]["io.containerd.image.name"].as_str())
        .collect();
    assert_eq!(
        named,
        BTreeSet::from([st.fx.simple.reference.as_str(), "docker.io/library/redis:7"]),
        "index.json names: {idx}"
    );
}

#[test]
fn containerd_imports_docker_archive_and_oci_archive() {
    let st = Setup::new();
    let ctd = Containerd::start();

    let da = st.path("four.tar");
    let mut args = vec!["export", "--docker-archive", s(&da)];
    args.extend(st.four());
    st.env.ok(&args);
    let want = with_tags(st.expect_four());
    let t = check_docker_archive(&fs::read(&da).unwrap(), &want);
    let idx = t.json("index.json");
    ctd.import(&da, &[]);
    let imgs = ctd.images();
    let mut want_names: Vec<String> = want.iter().map(|(e, _)| e.reference.clone()).collect();
    for (e, _) in &want {
        let entry = idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["io.containerd.image.name"] == e.reference.as_str())
            .unwrap();
        let got = imgs
            .iter()
            .find(|i| i.name == e.reference)
            .unwrap_or_else(|| panic!("containerd has no {}: {imgs:?}", e.reference));
        assert_eq!(
            got.digest,
            entry["digest"].as_str().unwrap(),
            "containerd's target for {} = the archive's index.json manifest",
            e.reference
        );
    }
    // The CRI plugin (built into Debian's containerd 1.6) names each image by its ID too:
    // the config digest.
    assert!(
        ctd.cri(),
        "containerd runs without its CRI plugin:\n{}",
        ctd.log()
    );
    if ctd.cri() {
        want_names.extend(want.iter().map(|(e, _)| e.image_id.clone()));
    }
    let mut got_names: Vec<String> = imgs.iter().map(|i| i.name.clone()).collect();
    got_names.sort();
    want_names.sort();
    assert_eq!(
        got_names, want_names,
        "containerd images after importing the docker-archive"
    );
    // Unpacked: the snapshots exist for the host platform (import unpacks by default).
    let usage = ctd.ctr_ok(&["images", "check"]);
    for (e, _) in &want {
        let line = usage
            .lines()
            .find(|l| l.starts_with(&format!("{} ", e.reference)))
            .unwrap_or_else(|| panic!("{} not in ctr images check:\n{usage}", e.reference));
        assert!(line.contains("complete"), "ctr images check: {line}");
    }
    ctd.remove_all();

    // arm64 from the index, piped: `export --docker-archive - | ctr images import -`.
    let mut producer = st.env.cmd();
    producer.args([
        "export",
        "--docker-archive",
        "-",
        "--platform",
        "linux/arm64",
        &st.fx.multi.reference,
    ]);
    ctd.import_from(&mut producer);
    let arm = expect_from_registry(
        &st.reg,
        &child_ref(&st.reg, &st.fx.multi.reference, "linux/arm64/v8"),
        &st.fx.multi.reference,
    );
    let imgs = ctd.images();
    let got = imgs
        .iter()
        .find(|i| i.name == st.fx.multi.reference)
        .unwrap_or_else(|| panic!("containerd has no {}: {imgs:?}", st.fx.multi.reference));
    assert_eq!(
        got.media_type, MT_MANIFEST,
        "one platform of the index, as an image manifest: {got:?}"
    );
    let names: Vec<&str> = imgs
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !n.starts_with("sha256:"))
        .collect();
    assert_eq!(names, vec![st.fx.multi.reference.as_str()], "{imgs:?}");
    let ids: Vec<&str> = imgs
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| n.starts_with("sha256:"))
        .collect();
    let want_ids: Vec<&str> = if ctd.cri() {
        vec![arm.image_id.as_str()]
    } else {
        vec![]
    };
    assert_eq!(
        ids, want_ids,
        "containerd's image ID of the arm64 export: {imgs:?}"
    );
    ctd.remove_all();

    // OCI archive: registry digests kept, the index too.
    let oa = st.path("oci.tar");
    st.env.ok(&[
        "export",
        "--oci-archive",
        s(&oa),
        &st.fx.simple.reference,
        &st.fx.zstd.reference,
        &st.fx.multi.reference,
    ]);
    ctd.import(&oa, &[]);
    let imgs = ctd.images();
    for p in [&st.fx.simple, &st.fx.zstd, &st.fx.multi] {
        let got = imgs
            .iter()
            .find(|i| i.name == p.reference)
            .unwrap_or_else(|| panic!("containerd has no {}: {imgs:?}", p.reference));
        assert_eq!(
            got.digest, p.digest,
            "containerd's target for {} = the registry's digest",
            p.reference
        );
    }
    let multi = imgs
        .iter()
        .find(|i| i.name == st.fx.multi.reference)
        .unwrap();
    assert_eq!(multi.media_type, MT_INDEX, "the index is kept: {multi:?}");
    let plain: Vec<&str> = imgs
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !n.starts_with("sha256:"))
        .collect();
    assert_eq!(
        plain.len(),
        3,
        "containerd names after importing the OCI archive: {imgs:?}"
    );
}

#[test]
fn skopeo_reads_every_image_of_the_docker_archive() {
    let st = Setup::new();
    let out = st.path("four.tar");
    let mut args = vec!["export", "--docker-archive", s(&out)];
    args.extend(st.four());
    st.env.ok(&args);
    for e in st.expect_four() {
        let src = format!("docker-archive:{}:{}", s(&out), e.reference);
        let v: Value = serde_json::from_str(&tool("skopeo", &["inspect", &src])).unwrap();
        let layers: Vec<&str> = v["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(
            layers, e.diff_ids,
            "skopeo inspect {src}: Layers = the diff_ids"
        );
        let config = tool("skopeo", &["inspect", "--config", "--raw", &src]);
        assert_eq!(
            sha256(config.as_bytes()),
            e.image_id,
            "skopeo inspect --config --raw {src}: the config, unchanged"
        );
        // Copy the whole image out: skopeo reads every layer (and checks their digests).
        let d = tempfile::tempdir().unwrap();
        let dest = format!("dir:{}", d.path().join("img").display());
        tool("skopeo", &["copy", "--quiet", &src, &dest]);
        for diff in &e.diff_ids {
            let f = d.path().join("img").join(hex_of(diff));
            let data = fs::read(&f)
                .unwrap_or_else(|err| panic!("skopeo copy of {src} wrote no layer {diff}: {err}"));
            assert_eq!(sha256(&data), *diff, "{}", f.display());
        }
    }
    // The zstd fixture really has a zstd layer (which skopeo/podman cannot write as docker-archive).
    assert!(
        st.fx
            .zstd
            .image
            .layers
            .iter()
            .any(|l| l.media_type == fixtures::MT_LAYER_ZSTD)
    );
}

/// What `docker load` prints and lists for `want`: docker shows names in their familiar form
/// (`docker.io/library/redis:7` as `redis:7`, `docker.io/myorg/app:2` as `myorg/app:2`; a name
/// with a registry host as is). An image without RepoTags is listed as `<none>:<none>`; its
/// `Loaded image ID:` line is printed only when no image of the archive has a name (docker
/// 20.10, seen here).
fn docker_expect(want: &[(Expect, Vec<String>)]) -> (Vec<String>, Vec<(String, String)>) {
    let any_named = want.iter().any(|(_, tags)| !tags.is_empty());
    let familiar = |t: &str| {
        let t = t.strip_prefix("docker.io/").unwrap_or(t);
        t.strip_prefix("library/").unwrap_or(t).to_string()
    };
    let mut printed = Vec::new();
    let mut listed = Vec::new();
    for (e, tags) in want {
        if tags.is_empty() {
            if !any_named {
                printed.push(format!("ID {}", e.image_id));
            }
            listed.push((e.image_id.clone(), "<none>:<none>".to_string()));
        }
        for t in tags {
            printed.push(familiar(t));
            listed.push((e.image_id.clone(), familiar(t)));
        }
    }
    printed.sort();
    printed.dedup();
    listed.sort();
    listed.dedup();
    (printed, listed)
}

/// The real `docker load` (Debian's dockerd, a private daemon): every image of a multi-image
/// archive (gzip, zstd and schema2 sources) under its names, ID = config digest, layers =
/// the config's diff_ids; familiar and digest-only names; and from a pipe.
#[test]
fn docker_archive_loads_into_docker() {
    let st = Setup::new();
    let docker = Docker::start();

    let out = st.path("four.tar");
    let mut args = vec!["export", "--docker-archive", s(&out)];
    args.extend(st.four());
    st.env.ok(&args);
    let want = with_tags(st.expect_four());
    let (printed, listed) = docker_expect(&want);
    assert_eq!(docker.load(&out), printed, "docker load printed these names");
    assert_eq!(docker.images(), listed, "docker images after load (ID = config digest)");
    for (e, _) in &want {
        let layers = docker.ok(&["image", "inspect", "--format", "{{json .RootFS.Layers}}", &e.reference]);
        let layers: Vec<String> = serde_json::from_str(layers.trim()).unwrap();
        assert_eq!(layers, e.diff_ids, "docker's layers of {}", e.reference);
    }

    // Familiar names and a digest-only reference.
    docker.remove_all();
    alias_in_store(&st.env, &st.fx.simple.reference, "docker.io/library/redis:7");
    alias_in_store(&st.env, &st.fx.shared.reference, "docker.io/myorg/app:2");
    let pinned = st.fx.schema2.pinned();
    st.env.ok(&["fetch", &pinned]);
    let names = st.path("names.tar");
    st.env.ok(&["export", "--docker-archive", s(&names), "redis:7", "myorg/app:2", &pinned]);
    let want = vec![
        (
            expect_from_registry(&st.reg, &st.fx.simple.reference, "docker.io/library/redis:7"),
            vec!["docker.io/library/redis:7".to_string()],
        ),
        (
            expect_from_registry(&st.reg, &st.fx.shared.reference, "docker.io/myorg/app:2"),
            vec!["docker.io/myorg/app:2".to_string()],
        ),
        (expect_from_registry(&st.reg, &pinned, &pinned), vec![]),
    ];
    let (printed, listed) = docker_expect(&want);
    assert_eq!(docker.load(&names), printed, "docker load of familiar and digest-only names");
    assert_eq!(docker.images(), listed, "docker images: redis:7, myorg/app:2, <none>:<none>");

    // An archive of the digest-only image alone: docker prints its ID.
    docker.remove_all();
    let only = st.path("pinned.tar");
    st.env.ok(&["export", "--docker-archive", s(&only), &pinned]);
    let want = vec![(expect_from_registry(&st.reg, &pinned, &pinned), vec![])];
    let (printed, listed) = docker_expect(&want);
    assert_eq!(docker.load(&only), printed, "docker load of a digest-only reference");
    assert_eq!(docker.images(), listed);

    // `--docker-archive -` straight into `docker load`.
    docker.remove_all();
    let mut producer = st.env.cmd();
    producer.args(["export", "--docker-archive", "-", &st.fx.zstd.reference]);
    let want = with_tags(vec![st.expect(&st.fx.zstd.reference)]);
    let (printed, listed) = docker_expect(&want);
    assert_eq!(docker.load_from(&mut producer), printed, "docker load from the pipe");
    assert_eq!(docker.images(), listed);
}

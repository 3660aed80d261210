//! Owns the export tests of layer forms: gzip, zstd and plain layers of one diff_id, a layer used twice, none, and wrong or missing size hints.
use super::*;

#[test]
fn layer_forms_dedup_by_diff_id_and_load() {
    let host = "127.0.0.1:5";
    let (env, mut want) = layer_forms_store(host);
    let v = env.json(&["store", "fsck"]);
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(0),
        "hand-made store: {v}"
    );
    let out = tempfile::tempdir().unwrap();
    let x = out.path().join("forms.tar");
    let doc = env.json(&["export", "--docker-archive", s(&x), "--all"]);
    // gz:v1 and gz:v2 are one image: one manifest.json entry with both tags.
    want[0].1.push(format!("{host}/forms/gz:v2"));
    let t = check_docker_archive(&fs::read(&x).unwrap(), &want);
    assert_eq!(
        doc["images"].as_array().map(Vec::len),
        Some(6),
        "--all = 6 references: {doc}"
    );
    let repos = t.json("repositories");
    let gz = repos[format!("{host}/forms/gz")]
        .as_object()
        .unwrap_or_else(|| panic!("{repos}"));
    assert_eq!(
        gz.len(),
        2,
        "both tags of forms/gz under one repository: {repos}"
    );
    // The layer used twice is listed twice (same file), as its diff_ids say.
    let mf = t.json("manifest.json");
    let twice = mf
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["RepoTags"] == json!([format!("{host}/forms/twice:v1")]))
        .unwrap();
    assert_eq!(twice["Layers"][0], twice["Layers"][2], "{twice}");

    let podman = Podman::new();
    podman.load(&x);
    assert_eq!(podman.images(), podman_expect(&want), "podman images");
    let ctd = Containerd::start();
    ctd.import(&x, &[]);
    let names: BTreeSet<String> = ctd
        .images()
        .into_iter()
        .map(|i| i.name)
        .filter(|n| !n.starts_with("sha256:"))
        .collect();
    let want_names: BTreeSet<String> = want.iter().flat_map(|(_, t)| t.clone()).collect();
    assert_eq!(names, want_names, "containerd names");
    let check = ctd.ctr_ok(&["images", "check"]);
    for n in &want_names {
        let line = check
            .lines()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("{n} not in ctr images check:\n{check}"));
        assert!(line.contains("complete"), "ctr images check: {line}");
    }
    // --jobs 1 writes the same bytes as the default.
    let j1 = out.path().join("jobs1.tar");
    env.ok(&["export", "--docker-archive", s(&j1), "--all", "--jobs", "1"]);
    assert!(
        fs::read(&j1).unwrap() == fs::read(&x).unwrap(),
        "--jobs 1 gives other bytes than the default"
    );
}

/// Layers whose blobs announce a wrong uncompressed size or none: `mm` = [gzip of T1 in two
/// members (ISIZE names only the last), zstd with its content size of T2], `zs` = [zstd of T3
/// without a content size]. Into a file, `mm`'s first layer outgrows its reserved place and
/// moves after the placed ones, leaving a zero-filled padding entry; the archive still loads,
/// and a pipe gets exactly the same bytes.
#[test]
fn layers_with_wrong_or_no_size_hint_still_export_the_same_bytes() {
    let host = "127.0.0.1:5";
    let env = Env::new();
    let mut w = LayoutWriter::new(&env.store());
    let t1 = tar_bytes(&[Entry::Dir("usr/"), Entry::File("usr/one", fixtures::noise(81, 9000), 0o644)]);
    let t2 = tar_bytes(&[Entry::Dir("etc/"), Entry::File("etc/two", fixtures::noise(82, 3000), 0o600)]);
    let t3 = tar_bytes(&[Entry::Dir("opt/"), Entry::File("opt/three", fixtures::noise(83, 5000), 0o755)]);
    let mut two_members = fixtures::gzip(&t1[..4096]);
    two_members.extend(fixtures::gzip(&t1[4096..]));
    let mm1 = (w.blob(&two_members, fixtures::MT_LAYER_GZIP), sha256(&t1));
    let mm2 = (w.blob(&zstd::bulk::compress(&t2, 3).unwrap(), fixtures::MT_LAYER_ZSTD), sha256(&t2));
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_contentsize(false).unwrap();
    std::io::Write::write_all(&mut enc, &t3).unwrap();
    let zs1 = (w.blob(&enc.finish().unwrap(), fixtures::MT_LAYER_ZSTD), sha256(&t3));
    let mut want = Vec::new();
    for (name, layers) in [("mm", vec![mm1, mm2]), ("zs", vec![zs1])] {
        let img = w.image(&layers, "linux/amd64", name);
        let reference = format!("{host}/hints/{name}:v1");
        w.tag(&reference, &img);
        want.push((
            Expect {
                reference: reference.clone(),
                image_id: img.config.as_ref().unwrap().digest.clone(),
                layer_digests: layers.iter().map(|(b, _)| b.digest.clone()).collect(),
                diff_ids: layers.iter().map(|(_, d)| d.clone()).collect(),
                platform: "linux/amd64".into(),
            },
            vec![reference],
        ));
    }
    w.finish();
    let out = tempfile::tempdir().unwrap();
    let x = out.path().join("hints.tar");
    env.ok(&["export", "--docker-archive", s(&x), "--all"]);
    let bytes = fs::read(&x).unwrap();
    let t = check_docker_archive(&bytes, &want);
    let pads: Vec<&(String, tar::EntryType, Vec<u8>)> =
        t.entries.iter().filter(|(n, _, _)| n.starts_with(".ocibundle-padding-")).collect();
    assert_eq!(pads.len(), 1, "one padding entry for the two-member gzip layer: {:?}", t.names());
    assert!(pads[0].2.iter().all(|&b| b == 0), "the padding entry is zeros");
    assert_eq!(pads[0].2.len() as u64, (t1.len() as u64 - 4096).div_ceil(512) * 512, "the padding is the place ISIZE reserved");
    // Placed biggest first (T1's place, now padding, then T2); then T1 and T3 in image order.
    assert!(t1.len() - 4096 > t2.len(), "fixture sizes");
    let layer_names: Vec<&str> = t.names().into_iter().filter(|n| n.starts_with("blobs/") || n.starts_with(".ocibundle")).take(4).collect();
    let h = |d: &str| format!("blobs/sha256/{}", hex_of(d));
    assert_eq!(
        layer_names,
        vec![pads[0].0.as_str(), h(&sha256(&t2)).as_str(), h(&sha256(&t1)).as_str(), h(&sha256(&t3)).as_str()],
        "layer order"
    );
    let o = env.run(&["export", "--docker-archive", "-", "--all"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout == bytes, "the pipe got other bytes than the file ({} vs {})", o.stdout.len(), bytes.len());
    let podman = Podman::new();
    podman.load(&x);
    assert_eq!(podman.images(), podman_expect(&want), "podman images");
    let ctd = Containerd::start();
    ctd.import(&x, &[]);
    let check = ctd.ctr_ok(&["images", "check"]);
    for (e, _) in &want {
        let line = check
            .lines()
            .find(|l| l.starts_with(&format!("{} ", e.reference)))
            .unwrap_or_else(|| panic!("{} not in ctr images check:\n{check}", e.reference));
        assert!(line.contains("complete"), "ctr images check: {line}");
    }
}

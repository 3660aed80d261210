//! Owns the export error tests: missing refs, existing outputs, stdout, layers not matching their diff_id, readers that go away, missing and corrupt blobs.
use super::*;

#[test]
fn missing_ref_existing_output_and_stdout() {
    let st = Setup::new();
    let nope = format!("{}/test/nope:v1", st.reg.host());
    let out = st.path("x.tar");
    let e = fails(
        &st.env,
        &[
            "export",
            "--docker-archive",
            s(&out),
            &st.fx.simple.reference,
            &nope,
        ],
    );
    assert!(
        e.contains(&nope),
        "the error does not name the missing reference: {e}"
    );
    for p in [&st.fx.simple, &st.fx.zstd, &st.fx.multi] {
        assert!(
            e.contains(&p.reference),
            "the error does not list {} (what the store holds): {e}",
            p.reference
        );
    }
    assert!(!out.exists(), "a failed export left {}", out.display());
    // From a bundle: lists the bundle's images.
    let b = st.path("b.obun");
    st.env.ok(&["bundle", "-o", s(&b), &st.fx.shared.reference]);
    let e = fails(
        &st.env,
        &[
            "export",
            "--oci-archive",
            s(&out),
            "--from",
            s(&b),
            &st.fx.simple.reference,
        ],
    );
    assert!(
        e.contains(&st.fx.simple.reference) && e.contains(&st.fx.shared.reference),
        "error names the ref and lists the bundle's: {e}"
    );
    assert!(!out.exists());

    // An existing output is refused and kept.
    for flag in ["--docker-archive", "--oci-archive"] {
        fs::write(&out, b"precious").unwrap();
        let e = fails(&st.env, &["export", flag, s(&out), &st.fx.simple.reference]);
        assert!(
            e.contains("x.tar"),
            "{flag}: the error does not name the existing file: {e}"
        );
        assert_eq!(
            fs::read(&out).unwrap(),
            b"precious",
            "{flag}: the existing output was changed"
        );
        st.env
            .ok(&["export", flag, s(&out), "--force", &st.fx.simple.reference]);
        assert_ne!(
            fs::read(&out).unwrap(),
            b"precious",
            "{flag} --force did not replace the output"
        );
        fs::remove_file(&out).unwrap();
    }
    let lay = st.path("lay");
    fs::create_dir(&lay).unwrap();
    fs::write(lay.join("keep"), b"precious").unwrap();
    let e = fails(
        &st.env,
        &["export", "--oci-layout", s(&lay), &st.fx.simple.reference],
    );
    assert!(
        e.contains("lay"),
        "the error does not name the existing directory: {e}"
    );
    assert_eq!(
        dir_names(&lay),
        vec!["keep"],
        "the existing directory was changed"
    );
    st.env.ok(&[
        "export",
        "--oci-layout",
        s(&lay),
        "--force",
        &st.fx.simple.reference,
    ]);
    assert!(
        lay.join("index.json").exists(),
        "--force did not write the layout"
    );
    let left: Vec<String> = dir_names(st.out.path())
        .into_iter()
        .filter(|n| n.contains("lay") && n != "lay")
        .collect();
    assert!(
        left.is_empty(),
        "temp or backup directories left beside the layout: {left:?}"
    );

    // `-` writes the same archive to stdout.
    let file = st.path("file.tar");
    let mut args = vec!["export", "--docker-archive", s(&file)];
    args.extend(st.four());
    st.env.ok(&args);
    let mut args = vec!["export", "--docker-archive", "-"];
    args.extend(st.four());
    let o = st.env.run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stdout == fs::read(&file).unwrap(),
        "--docker-archive - wrote {} bytes, the file has {}",
        o.stdout.len(),
        fs::metadata(&file).unwrap().len()
    );
    let oa = st.path("oa.tar");
    st.env
        .ok(&["export", "--oci-archive", s(&oa), &st.fx.multi.reference]);
    let o = st
        .env
        .run(&["export", "--oci-archive", "-", &st.fx.multi.reference]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stdout == fs::read(&oa).unwrap(),
        "--oci-archive - differs from the file"
    );
    // --images FILE picks the same images.
    let list = st.path("list.txt");
    fs::write(
        &list,
        format!(
            "# the four\n{}\n\n{}\n{}\n{}\n",
            st.four()[0],
            st.four()[1],
            st.four()[2],
            st.four()[3]
        ),
    )
    .unwrap();
    let viafile = st.path("viafile.tar");
    st.env.ok(&[
        "export",
        "--docker-archive",
        s(&viafile),
        "--images",
        s(&list),
    ]);
    check_docker_archive(&fs::read(&viafile).unwrap(), &with_tags(st.expect_four()));
}

/// A store written by hand: one real layer, and images whose configs do not fit it.
/// Returns (env, layer blob digest, its true diff_id, the wrong diff_id).
pub(super) fn crafted_store(reg_host: &str) -> (Env, String, String, String) {
    let env = Env::new();
    let mut w = LayoutWriter::new(&env.store());
    let tar = tar_bytes(&[
        Entry::Dir("etc/"),
        Entry::File("etc/real", b"the real layer\n".to_vec(), 0o644),
    ]);
    let (layer, diff_id) = w.layer_from_tar(&tar, Compression::Gzip);
    let wrong = sha256(b"not the layer");
    let desc =
        |b: &fixtures::Blob| json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size});
    let mut image = |diff_ids: Vec<&str>, layers: Vec<&fixtures::Blob>, tag: &str| {
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {"Labels": {"org.ocibundle.test": tag}},
        });
        let config = w.blob(&serde_json::to_vec(&config).unwrap(), MT_CONFIG);
        let m = json!({"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": desc(&config), "layers": layers.iter().map(|b| desc(b)).collect::<Vec<_>>()});
        let m = w.blob(&serde_json::to_vec(&m).unwrap(), MT_MANIFEST);
        (format!("{reg_host}/test/{tag}:v1"), m)
    };
    let good = image(vec![&diff_id], vec![&layer], "good");
    let bad = image(vec![&wrong], vec![&layer], "bad");
    let count = image(vec![&diff_id, &diff_id], vec![&layer], "count");
    let mut entries = [good, bad, count];
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let idx = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": entries.iter().map(|(r, m)| {
        let mut d = desc(m);
        d["annotations"] = json!({"org.opencontainers.image.ref.name": r});
        d
    }).collect::<Vec<_>>()});
    fs::write(
        env.store().join("index.json"),
        serde_json::to_vec(&idx).unwrap(),
    )
    .unwrap();
    (env, layer.digest, diff_id, wrong)
}

#[test]
fn layer_not_matching_its_diff_id_fails_and_leaves_nothing() {
    let host = "127.0.0.1:5";
    let (env, layer, diff_id, wrong) = crafted_store(host);
    // The store itself is sound: every blob hashes to its name, every reference is complete.
    let v = env.json(&["store", "fsck"]);
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(0),
        "hand-made store: {v}"
    );

    let out = tempfile::tempdir().unwrap();
    let good = out.path().join("good.tar");
    env.ok(&[
        "export",
        "--docker-archive",
        s(&good),
        &format!("{host}/test/good:v1"),
    ]);
    let t = Tar::read(&fs::read(&good).unwrap());
    assert_eq!(
        sha256(t.must(&format!("blobs/sha256/{}", hex_of(&diff_id)))),
        diff_id,
        "the control image exports"
    );
    fs::remove_file(&good).unwrap();

    let x = out.path().join("x.tar");
    let e = fails(
        &env,
        &[
            "export",
            "--docker-archive",
            s(&x),
            &format!("{host}/test/bad:v1"),
        ],
    );
    assert!(
        e.contains(&layer) || e.contains(&wrong),
        "the error names neither the layer {layer} nor the diff_id {wrong}: {e}"
    );
    assert!(
        e.contains("diff_id") || e.contains(&wrong),
        "the error does not say the diff_id does not match: {e}"
    );
    assert!(
        dir_names(out.path()).is_empty(),
        "a failed export left {:?}",
        dir_names(out.path())
    );
    // Good and bad together: still all or nothing.
    let e = fails(
        &env,
        &[
            "export",
            "--docker-archive",
            s(&x),
            &format!("{host}/test/good:v1"),
            &format!("{host}/test/bad:v1"),
        ],
    );
    assert!(e.contains(&layer) || e.contains(&wrong), "{e}");
    assert!(
        dir_names(out.path()).is_empty(),
        "a failed export left {:?}",
        dir_names(out.path())
    );
    // To stdout: exit 1, and the error line.
    let o = env.run(&[
        "export",
        "--docker-archive",
        "-",
        &format!("{host}/test/bad:v1"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // Config lists two diff_ids, manifest one layer.
    let e = fails(
        &env,
        &[
            "export",
            "--docker-archive",
            s(&x),
            &format!("{host}/test/count:v1"),
        ],
    );
    assert!(
        e.contains("count"),
        "the error does not name the image: {e}"
    );
    assert!(
        dir_names(out.path()).is_empty(),
        "a failed export left {:?}",
        dir_names(out.path())
    );
}

/// A store holding one image `127.0.0.1:5/test/big:v1` whose layer is `size` bytes of noise.
pub(super) fn big_store(size: usize) -> (Env, String) {
    let env = Env::new();
    fixtures::big_layout(&env.store(), size, 7);
    let reference = "127.0.0.1:5/test/big:v1".to_string();
    let p = env.store().join("index.json");
    let mut idx: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = json!(reference);
    fs::write(&p, serde_json::to_vec(&idx).unwrap()).unwrap();
    (env, reference)
}

#[test]
fn stdout_reader_gone_fails_and_leaves_no_spool() {
    use std::io::Read;
    use std::process::Stdio;
    // 8 MB cannot fit in a pipe buffer: the writer must meet the closed pipe.
    let (env, reference) = big_store(8 << 20);
    let mut problems = Vec::new();
    for flag in ["--docker-archive", "--oci-archive"] {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = env
            .cmd()
            .args(["export", flag, "-", &reference])
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut head = [0u8; 512];
        out.read_exact(&mut head).unwrap();
        drop(out);
        let o = child.wait_with_output().unwrap();
        if o.status.success() {
            problems.push(format!(
                "{flag} -: the reader went away after 512 bytes, yet exit 0"
            ));
        }
        // Everything under TMPDIR (the docker-archive spools decompressed layers there).
        let mut left = Vec::new();
        for e in fs::read_dir(tmp.path()).unwrap() {
            let e = e.unwrap();
            let mut n = e.file_name().to_string_lossy().to_string();
            if let Ok(rd) = fs::read_dir(e.path()) {
                for f in rd {
                    let f = f.unwrap();
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    n.push_str(&format!(
                        " {} ({len} bytes)",
                        f.file_name().to_string_lossy()
                    ));
                }
            }
            left.push(n);
        }
        if !left.is_empty() {
            problems.push(format!(
                "{flag} - into a closed pipe ({}) left in TMPDIR: {left:?}",
                o.status
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn missing_store_blob_is_named_and_leaves_nothing() {
    let host = "127.0.0.1:5";
    let (env, want) = layer_forms_store(host);
    let zst = &want
        .iter()
        .find(|(e, _)| e.reference.contains("/zst:"))
        .unwrap()
        .0;
    let gone = zst.layer_digests[1].clone();
    fs::remove_file(env.blob_path(&gone)).unwrap();
    let out = tempfile::tempdir().unwrap();
    for (flag, name) in [
        ("--docker-archive", "x.tar"),
        ("--oci-archive", "x.tar"),
        ("--oci-layout", "x"),
    ] {
        let x = out.path().join(name);
        let e = fails(&env, &["export", flag, s(&x), &zst.reference]);
        assert!(
            e.contains(&gone),
            "{flag}: the error does not name the missing blob {gone}: {e}"
        );
        assert!(
            dir_names(out.path()).is_empty(),
            "{flag}: a failed export left {:?}",
            dir_names(out.path())
        );
    }
    // An image that does not need it still exports.
    let gz = &want[0].0;
    env.ok(&[
        "export",
        "--docker-archive",
        s(&out.path().join("gz.tar")),
        &gz.reference,
    ]);
    // Full disk on stdout: exit 1, one error line.
    let full = fs::File::create("/dev/full").unwrap();
    let o = env
        .cmd()
        .args(["export", "--docker-archive", "-", &gz.reference])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "export into /dev/full: {}",
        text(&o)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    let errs: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errs.len(), 1, "export into /dev/full: {stderr}");
}

#[test]
fn corrupt_store_blob_is_caught_in_every_format() {
    let host = "127.0.0.1:5";
    let (env, want) = layer_forms_store(host);
    let gz = &want[0].0;
    let blob = gz.layer_digests[0].clone();
    let p = env.blob_path(&blob);
    let mut data = fs::read(&p).unwrap();
    let n = data.len();
    data[n / 2] ^= 0x01;
    fs::write(&p, &data).unwrap();
    // Every format is tried; the failures are reported together.
    let mut problems = Vec::new();
    for (flag, name) in [
        ("--docker-archive", "x.tar"),
        ("--oci-archive", "x.tar"),
        ("--oci-layout", "x"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let x = out.path().join(name);
        let args = ["export", flag, s(&x), &gz.reference];
        let o = env.run(&args);
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        let errs: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        if o.status.code() != Some(1) || errs.len() != 1 {
            problems.push(format!(
                "ocibundle {args:?} with a flipped bit in store blob {blob}: want exit 1 and one error line, got {}:\n{}",
                o.status,
                text(&o)
            ));
        } else if !(errs[0].contains(&blob) || errs[0].contains(&gz.diff_ids[0])) {
            problems.push(format!(
                "{flag}: the error names neither the bad blob {blob} nor its diff_id: {}",
                errs[0]
            ));
        }
        if !dir_names(out.path()).is_empty() {
            problems.push(format!(
                "{flag}: the failed export left {:?}",
                dir_names(out.path())
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

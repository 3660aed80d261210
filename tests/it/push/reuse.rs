//! Owns the push tests of what is not sent again: a second push sends no blob data, a shared layer is mounted across repositories.
use super::*;

/// The same images pushed twice: the second run reports nothing pushed and sends no blob
/// data (no POST/PATCH/PUT on `/blobs/uploads/`), only existence checks.
#[test]
fn push_twice_second_run_sends_no_blobs() {
    let src = FakeRegistry::start();
    let dst = FakeRegistry::start();
    let i1 = src.add_image("app/one", "v1", &[300_000, 20_000]);
    let i2 = src.add_image("app/two", "v2", &[50_000]);
    let env = Env::new();
    env.ok(&["fetch", &i1.reference, &i2.reference]);
    let to = format!("{}/m", dst.host());
    let want: BTreeMap<String, (u64, u64)> = [&i1, &i2]
        .iter()
        .map(|i| (i.reference.clone(), want_fake(i)))
        .collect();

    let v1 = env.json(&["push", "--all", "--to", &to]);
    assert_report(&v1, &want);
    assert_eq!(
        as_u64(&v1["pushed_bytes"]),
        want.values().map(|w| w.0).sum::<u64>(),
        "{v1}"
    );
    for i in [&i1, &i2] {
        let repo = format!("m/{}", i.repo);
        assert_eq!(
            dst.tags(&repo),
            vec![(i.tag.clone(), i.manifest_digest.clone())]
        );
        assert_eq!(
            dst.manifest(&repo, &i.tag).unwrap().1,
            i.manifest,
            "manifest bytes pushed as they are"
        );
        for b in i.blobs() {
            assert!(dst.has_blob(&repo, &b.digest), "{repo} lacks {}", b.digest);
        }
    }
    assert!(
        dst.open_uploads().is_empty(),
        "unfinished uploads left: {:?}",
        dst.open_uploads()
    );

    let mark = dst.log().len();
    let v2 = env.json(&["push", "--all", "--to", &to]);
    assert_report(&v2, &want);
    assert_eq!(as_u64(&v2["pushed_bytes"]), 0, "{v2}");
    assert_eq!(as_u64(&v2["pushed_blobs"]), 0, "{v2}");
    assert_eq!(as_u64(&v2["mounted_bytes"]), 0, "{v2}");
    assert_eq!(
        as_u64(&v2["present_bytes"]),
        as_u64(&v1["pushed_bytes"]),
        "{v2}"
    );
    let log = dst.log();
    let run2 = since(&log, mark);
    assert!(
        blob_writes(run2).is_empty(),
        "second push wrote blobs:\n{}",
        render(run2)
    );
    let received: u64 = run2
        .iter()
        .filter(|r| r.is_upload())
        .map(|r| r.body_received)
        .sum();
    assert_eq!(received, 0, "{}", render(run2));
    assert!(
        run2.iter()
            .any(|r| r.method == "HEAD" && r.path.contains("/blobs/sha256:")),
        "the second push never asked whether blobs exist:\n{}",
        render(run2)
    );
    // Manifests and tags are there too: nothing at all is written again.
    let writes: Vec<&Req> = run2.iter().filter(|r| r.is_write()).collect();
    assert!(
        writes.is_empty(),
        "second push wrote again:\n{}",
        render(run2)
    );
}

/// Two images sharing a layer, pushed into different repositories in one run: the layer is
/// uploaded once and mounted into the other repository (`POST ?mount=&from=` answered 201).
#[test]
fn push_shared_layer_is_mounted_across_repositories() {
    let src = FakeRegistry::start();
    let dst = FakeRegistry::start();
    let shared: Layer = layer("push-mount-shared", 400_000);
    let i1 = add_image_with(
        &src,
        "team/front",
        "v1",
        &[&shared, &layer("push-mount-1", 30_000)],
    );
    let i2 = add_image_with(
        &src,
        "team/back",
        "v1",
        &[&shared, &layer("push-mount-2", 40_000)],
    );
    let sd = i1.layers[0].digest.clone();
    assert_eq!(sd, i2.layers[0].digest);
    let env = Env::new();
    env.ok(&["fetch", &i1.reference, &i2.reference]);
    let v = env.json(&[
        "push",
        &i1.reference,
        &i2.reference,
        "--to",
        &format!("{}/mirror", dst.host()),
    ]);
    let want: BTreeMap<String, (u64, u64)> = [&i1, &i2]
        .iter()
        .map(|i| (i.reference.clone(), want_fake(i)))
        .collect();
    assert_report(&v, &want);
    assert!(as_u64(&v["mounted_bytes"]) > 0, "nothing mounted: {v}");
    assert_eq!(as_u64(&v["mounted_bytes"]), shared.1.len() as u64, "{v}");
    assert_eq!(as_u64(&v["mounted_blobs"]), 1, "{v}");

    let log = dst.log();
    let mounts: Vec<&Req> = log
        .iter()
        .filter(|r| {
            r.method == "POST" && r.query_value("mount") == Some(sd.as_str()) && r.status == 201
        })
        .collect();
    assert_eq!(
        mounts.len(),
        1,
        "want one POST ?mount={sd} answered 201:\n{}",
        render(&log)
    );
    let from = mounts[0].query_value("from").unwrap();
    assert!(
        from == "mirror/team/front" || from == "mirror/team/back",
        "mounted from {from}"
    );
    let uploads_of_shared = log
        .iter()
        .filter(|r| {
            r.method == "PUT" && r.query_value("digest") == Some(sd.as_str()) && r.status == 201
        })
        .count();
    assert_eq!(
        uploads_of_shared,
        1,
        "the shared layer is uploaded exactly once:\n{}",
        render(&log)
    );
    assert_eq!(
        dst.bytes_received_for(&sd),
        shared.1.len() as u64,
        "shared layer bytes received"
    );
    for i in [&i1, &i2] {
        let repo = format!("mirror/{}", i.repo);
        assert!(dst.has_blob(&repo, &sd));
        assert_eq!(
            dst.tags(&repo),
            vec![("v1".to_string(), i.manifest_digest.clone())]
        );
        // The image that got the mount reports it; the other pushed it.
        let im = image(&v, &i.reference);
        if repo
            == mounts[0]
                .path
                .trim_start_matches("/v2/")
                .trim_end_matches("/blobs/uploads/")
        {
            assert_eq!(as_u64(&im["mounted_bytes"]), shared.1.len() as u64, "{im}");
        } else {
            assert_eq!(as_u64(&im["mounted_bytes"]), 0, "{im}");
        }
    }
}

//! Owns the push --dry-run tests: the plan changes nothing and matches what the push then does.
use super::*;

/// `--dry-run` sends no write request and changes nothing (fake registry: log and state),
/// its plan (text and JSON) says what will be skipped, mounted and pushed, and the real
/// push then does exactly that.
#[test]
fn push_dry_run_changes_nothing_and_matches_the_push() {
    let src = FakeRegistry::start();
    let dst = FakeRegistry::start();
    let shared: Layer = layer("push-dry-shared", 200_000);
    let i1 = add_image_with(
        &src,
        "dry/one",
        "v1",
        &[&shared, &layer("push-dry-1", 10_000)],
    );
    let i2 = add_image_with(
        &src,
        "dry/two",
        "v1",
        &[&shared, &layer("push-dry-2", 20_000)],
    );
    let i3 = src.add_image("dry/three", "v1", &[5_000]);
    let env = Env::new();
    env.ok(&["fetch", &i1.reference, &i2.reference, &i3.reference]);
    let to = format!("{}/m", dst.host());
    // i1 is already there.
    env.ok(&["push", &i1.reference, "--to", &to]);
    let repos_before = dst.repos();
    let tags_before: Vec<_> = repos_before.iter().map(|r| dst.tags(r)).collect();
    let blobs_before: Vec<_> = repos_before.iter().map(|r| dst.blob_digests(r)).collect();

    let mark = dst.log().len();
    let plan = env.json(&["push", "--all", "--dry-run", "--to", &to]);
    let out = env.ok(&["push", "--all", "--dry-run", "--to", &to]);
    let log = dst.log();
    let run = since(&log, mark);
    let writes: Vec<&Req> = run
        .iter()
        .filter(|r| r.is_write() || r.is_upload())
        .collect();
    assert!(writes.is_empty(), "--dry-run sent writes:\n{}", render(run));
    assert_eq!(dst.repos(), repos_before, "--dry-run created repositories");
    assert_eq!(
        repos_before.iter().map(|r| dst.tags(r)).collect::<Vec<_>>(),
        tags_before
    );
    assert_eq!(
        repos_before
            .iter()
            .map(|r| dst.blob_digests(r))
            .collect::<Vec<_>>(),
        blobs_before
    );

    assert_eq!(plan["dry_run"], true, "{plan}");
    let want: BTreeMap<String, (u64, u64)> = [&i1, &i2, &i3]
        .iter()
        .map(|i| (i.reference.clone(), want_fake(i)))
        .collect();
    assert_report(&plan, &want);
    let p1 = image(&plan, &i1.reference);
    assert_eq!(
        as_u64(&p1["present_bytes"]),
        want_fake(&i1).0,
        "i1 is in the registry already: {p1}"
    );
    let p2 = image(&plan, &i2.reference);
    assert_eq!(
        as_u64(&p2["mounted_bytes"]),
        shared.1.len() as u64,
        "i2's shared layer would be mounted from i1's repository: {p2}"
    );
    assert_eq!(
        as_u64(&p2["pushed_bytes"]),
        want_fake(&i2).0 - shared.1.len() as u64,
        "{p2}"
    );
    let p3 = image(&plan, &i3.reference);
    assert_eq!(as_u64(&p3["pushed_bytes"]), want_fake(&i3).0, "{p3}");

    // Text plan: the same figures.
    let lines = parse_lines(&out, true);
    assert_eq!(lines.len(), 3, "{out}");
    for l in &lines {
        let j = image(&plan, &l.source);
        assert_eq!(j["target"], l.target.as_str());
        assert_eq!(j["digest"], l.digest.as_str());
        assert_eq!(
            l.bytes,
            [
                as_u64(&j["pushed_bytes"]),
                as_u64(&j["mounted_bytes"]),
                as_u64(&j["present_bytes"])
            ],
            "{out}\n{plan}"
        );
    }

    // The push does what the plan said.
    let done = env.json(&["push", "--all", "--to", &to]);
    assert_eq!(done["dry_run"], false);
    for i in [&i1, &i2, &i3] {
        assert_eq!(
            counts(image(&done, &i.reference)),
            counts(image(&plan, &i.reference)),
            "plan vs push for {}:\n{plan}\n{done}",
            i.reference
        );
        assert_eq!(
            dst.tags(&format!("m/{}", i.repo)),
            vec![("v1".to_string(), i.manifest_digest.clone())]
        );
    }
    assert_eq!(counts(&done), counts(&plan));
}

/// Against a real registry: `--dry-run` leaves catalog and tags as they were, and its
/// counts are those of the push that follows.
#[test]
fn push_dry_run_real_registry() {
    let a = Registry::start(Variant::Plain);
    let b = Registry::start(Variant::Plain);
    let fx: Vec<Pushed> = ["simple", "shared", "zstd"]
        .iter()
        .map(|n| push_one(&a, n))
        .collect();
    let env = Env::new();
    let mut args = vec!["fetch"];
    args.extend(fx.iter().map(|p| p.reference.as_str()));
    env.ok(&args);
    let to = format!("{}/dry", b.host());
    env.ok(&["push", &fx[2].reference, "--to", &to]);
    let before = catalog_and_tags(&b);
    assert_eq!(before.len(), 1, "{before:?}");
    let plan = env.json(&["push", "--all", "--dry-run", "--to", &to]);
    assert_eq!(
        catalog_and_tags(&b),
        before,
        "--dry-run changed the registry"
    );
    assert_eq!(plan["dry_run"], true);
    let want: BTreeMap<String, (u64, u64)> = fx
        .iter()
        .map(|p| (p.reference.clone(), want_of(&a, p)))
        .collect();
    assert_report(&plan, &want);
    assert_eq!(
        as_u64(&image(&plan, &fx[2].reference)["present_bytes"]),
        want_of(&a, &fx[2]).0,
        "{plan}"
    );
    assert_eq!(
        as_u64(&plan["mounted_blobs"]),
        1,
        "simple and shared share a layer: {plan}"
    );
    let done = env.json(&["push", "--all", "--to", &to]);
    for p in &fx {
        assert_eq!(
            counts(image(&done, &p.reference)),
            counts(image(&plan, &p.reference)),
            "{}:\n{plan}\n{done}",
            p.reference
        );
        assert_eq!(served_digest(&b, &format!("{to}/{}:v1", p.repo)), p.digest);
    }
    assert_eq!(catalog_and_tags(&b).len(), 3);
}

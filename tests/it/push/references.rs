//! Owns the push tests of what is named and how: invalid targets, --images files and digest references, moved tags, registries without mounts, platform picks, Docker Hub names.
use super::*;

/// A rewrite or `--to` that gives an invalid reference (uppercase repository), or an image
/// no rule maps without `--to`, fails with a clear error before any request.
#[test]
fn push_invalid_target_fails_before_any_request() {
    let src = FakeRegistry::start();
    let img = src.add_image("test/simple", "v1", &[1_000]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let dst = FakeRegistry::start();

    let rule = format!("{}/test/={}/UPPER/", src.host(), dst.host());
    let e = fails(&env, &["push", "--rewrite", &rule, &img.reference]);
    eprintln!("{e}");
    assert!(
        e.contains(&img.reference),
        "error does not name the image: {e}"
    );
    assert!(
        e.contains("UPPER"),
        "error does not show the bad target: {e}"
    );

    let rule = format!("{}/nomatch/={}/x/", src.host(), dst.host());
    let e = fails(&env, &["push", "--rewrite", &rule, &img.reference]);
    eprintln!("{e}");
    assert!(
        e.contains(&img.reference),
        "error does not name the unmapped image: {e}"
    );

    let to = format!("{}/Mirror", dst.host());
    let args = ["push", "--to", to.as_str(), img.reference.as_str()];
    let o = env.run(&args);
    assert!(
        matches!(o.status.code(), Some(1) | Some(2)),
        "--to with an uppercase prefix: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Mirror"),
        "error does not show the bad target: {}",
        text(&o)
    );

    let absent = format!("{}/test/absent:v1", src.host());
    let e = fails(
        &env,
        &["push", "--to", &format!("{}/m", dst.host()), &absent],
    );
    eprintln!("{e}");
    assert!(
        e.contains(&absent),
        "error does not name the reference missing from the store: {e}"
    );

    assert!(
        dst.log().is_empty(),
        "requests before the target was known to be valid:\n{}",
        dst.log_summary()
    );
    assert_eq!(
        dst.non_http_connections(),
        0,
        "connections before the target was known to be valid"
    );
}

/// `--images FILE` and a digest-pinned reference: pushed by digest, without a tag.
#[test]
fn push_images_file_and_digest_reference() {
    let src = FakeRegistry::start();
    let i1 = src.add_image("pin/one", "v1", &[4_000]);
    let i2 = src.add_image("pin/two", "v2", &[5_000]);
    let pinned = format!("{}/{}@{}", src.host(), i1.repo, i1.manifest_digest);
    let env = Env::new();
    env.ok(&["fetch", &pinned, &i2.reference]);
    let list = env.path().join("images.txt");
    fs::write(&list, format!("# to push\n{pinned}\n\n{}\n", i2.reference)).unwrap();
    let dst = FakeRegistry::start();
    let v = env.json(&[
        "push",
        "--images",
        s(&list),
        "--to",
        &format!("{}/m", dst.host()),
    ]);
    let want: BTreeMap<String, (u64, u64)> = [
        (pinned.clone(), want_fake(&i1)),
        (i2.reference.clone(), want_fake(&i2)),
    ]
    .into();
    assert_report(&v, &want);
    assert_eq!(
        image(&v, &pinned)["target"],
        format!("{}/m/pin/one@{}", dst.host(), i1.manifest_digest).as_str()
    );
    assert!(dst.manifest("m/pin/one", &i1.manifest_digest).is_some());
    assert!(
        dst.tags("m/pin/one").is_empty(),
        "a digest reference got a tag: {:?}",
        dst.tags("m/pin/one")
    );
    assert_eq!(
        dst.tags("m/pin/two"),
        vec![("v2".to_string(), i2.manifest_digest.clone())]
    );
}

/// An existing tag pointing at something else is moved to the pushed image.
#[test]
fn push_moves_an_existing_tag() {
    let src = FakeRegistry::start();
    let img = src.add_image("app", "v1", &[3_000]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let dst = FakeRegistry::start();
    let old = dst.add_image("m/app", "v1", &[2_000]);
    assert_ne!(old.manifest_digest, img.manifest_digest);
    let v = env.json(&["push", &img.reference, "--to", &format!("{}/m", dst.host())]);
    assert_eq!(
        image(&v, &img.reference)["digest"],
        img.manifest_digest.as_str()
    );
    assert_eq!(
        dst.tags("m/app"),
        vec![("v1".to_string(), img.manifest_digest.clone())],
        "{}",
        dst.log_summary()
    );
}

/// A registry that never mounts (`POST ?mount=` answered 202): the blob is uploaded to the
/// second repository instead, and reported as pushed, not mounted.
#[test]
fn push_without_mount_support_uploads_instead() {
    let src = FakeRegistry::start();
    let shared: Layer = layer("push-nomount-shared", 100_000);
    let i1 = add_image_with(&src, "nm/one", "v1", &[&shared]);
    let i2 = add_image_with(
        &src,
        "nm/two",
        "v1",
        &[&shared, &layer("push-nomount-2", 1_000)],
    );
    let env = Env::new();
    env.ok(&["fetch", &i1.reference, &i2.reference]);
    let dst = FakeRegistry::start();
    dst.set_mounts(false);
    let v = env.json(&["push", "--all", "--to", &format!("{}/m", dst.host())]);
    let want: BTreeMap<String, (u64, u64)> = [&i1, &i2]
        .iter()
        .map(|i| (i.reference.clone(), want_fake(i)))
        .collect();
    assert_report(&v, &want);
    assert_eq!(as_u64(&v["mounted_bytes"]), 0, "{v}");
    assert_eq!(
        as_u64(&v["pushed_bytes"]),
        want.values().map(|w| w.0).sum::<u64>(),
        "{v}"
    );
    let sd = &i1.layers[0].digest;
    for repo in ["m/nm/one", "m/nm/two"] {
        assert!(dst.has_blob(repo, sd), "{repo} lacks the shared layer");
    }
    let log = dst.log();
    let puts = log
        .iter()
        .filter(|r| {
            r.method == "PUT" && r.query_value("digest") == Some(sd.as_str()) && r.status == 201
        })
        .count();
    assert_eq!(puts, 2, "{}", render(&log));
    assert_eq!(
        dst.tags("m/nm/two"),
        vec![("v1".to_string(), i2.manifest_digest.clone())]
    );
}

/// An image fetched for one platform out of an index: its manifest (the one the store's
/// reference names) is what the tag points at in the target.
#[test]
fn push_single_platform_pick_of_an_index() {
    let a = Registry::start(Variant::Plain);
    let b = Registry::start(Variant::Plain);
    let multi = push_one(&a, "multi");
    let env = Env::new();
    let f = env.json(&["fetch", "--platform", "linux/arm64/v8", &multi.reference]);
    let picked = f["images"][0]["digest"].as_str().unwrap().to_string();
    assert_ne!(picked, multi.digest);
    let to = format!("{}/one", b.host());
    let v = env.json(&["push", &multi.reference, "--to", &to]);
    assert_eq!(
        image(&v, &multi.reference)["digest"],
        picked.as_str(),
        "{v}"
    );
    let target = format!("{to}/test/multi:v1");
    assert_eq!(served_digest(&b, &target), picked);
    let (n, _) = want_of(
        &a,
        &Pushed {
            digest: picked.clone(),
            ..multi.clone()
        },
    );
    assert_eq!(
        as_u64(&image(&v, &multi.reference)["pushed_bytes"]),
        n,
        "{v}"
    );
    assert_skopeo_copies(&b, &target);
}

/// Docker Hub and other registries' names in the store (the offline side's usual case):
/// `--to REG/PFX` drops the source registry and keeps the repository path
/// (`docker.io/library/redis:7` -> `REG/PFX/library/redis:7`), short names on the command
/// line are normalised, and a `docker.io/=REG/hub/` rewrite applies before `--to`.
#[test]
fn push_docker_hub_names_follow_the_naming_rule() {
    let src = FakeRegistry::start();
    let img = src.add_image("library/redis", "7", &[3_000]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    // Rename the store's reference as if it had been fetched from docker.io, and add one
    // from ghcr.io (index.json: one entry per reference, sorted by name).
    let index_path = env.store().join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let entry = index["manifests"][0].clone();
    let named = |n: &str| {
        let mut e = entry.clone();
        e["annotations"]["org.opencontainers.image.ref.name"] = Value::from(n);
        e
    };
    index["manifests"] = Value::Array(vec![
        named("docker.io/library/redis:7"),
        named("ghcr.io/org/tool:1.0"),
    ]);
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let ls = env.ok(&["store", "ls"]);
    assert!(
        ls.contains("docker.io/library/redis:7") && ls.contains("ghcr.io/org/tool:1.0"),
        "{ls}"
    );

    let dst = FakeRegistry::start();
    let hb = dst.host();
    let v = env.json(&["push", "--all", "--to", &format!("{hb}/mirror")]);
    assert_mapping_explains(&v);
    assert_eq!(
        image(&v, "docker.io/library/redis:7")["target"],
        format!("{hb}/mirror/library/redis:7").as_str(),
        "{v}"
    );
    assert_eq!(
        image(&v, "ghcr.io/org/tool:1.0")["target"],
        format!("{hb}/mirror/org/tool:1.0").as_str(),
        "{v}"
    );
    assert_eq!(
        dst.tags("mirror/library/redis"),
        vec![("7".to_string(), img.manifest_digest.clone())]
    );
    assert_eq!(
        dst.tags("mirror/org/tool"),
        vec![("1.0".to_string(), img.manifest_digest.clone())]
    );

    // Short name on the command line; a docker.io rewrite first, --to for the rest.
    let out = env.ok(&[
        "push",
        "redis:7",
        "ghcr.io/org/tool:1.0",
        "--rewrite",
        &format!("docker.io/={hb}/hub/"),
        "--to",
        &format!("{hb}/other"),
    ]);
    let lines = parse_lines(&out, false);
    let by_src: BTreeMap<&str, &str> = lines
        .iter()
        .map(|l| (l.source.as_str(), l.target.as_str()))
        .collect();
    let hub = format!("{hb}/hub/library/redis:7");
    let other = format!("{hb}/other/org/tool:1.0");
    assert_eq!(
        by_src.get("docker.io/library/redis:7"),
        Some(&hub.as_str()),
        "{out}"
    );
    assert_eq!(
        by_src.get("ghcr.io/org/tool:1.0"),
        Some(&other.as_str()),
        "{out}"
    );
    assert_eq!(
        dst.tags("hub/library/redis"),
        vec![("7".to_string(), img.manifest_digest.clone())]
    );
    assert_eq!(
        dst.tags("other/org/tool"),
        vec![("1.0".to_string(), img.manifest_digest.clone())]
    );
}

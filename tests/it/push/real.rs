//! Owns the push tests against real registries: the round trip of every fixture, naming and rewrites, bundles and deltas as sources, auth and TLS.
use super::*;

/// Fixtures (a multi-arch index with `--all-platforms`, Docker schema2, zstd, two images
/// sharing a layer) from registry A into a store, `push --all --to B/mirror`: B serves every
/// manifest byte for byte (same digest), skopeo copies everything back out, the shared
/// layer is mounted, and a second push finds everything present.
#[test]
fn push_real_round_trip_all_fixtures() {
    let a = Registry::start(Variant::Plain);
    let b = Registry::start(Variant::Plain);
    let fx: Vec<Pushed> = ["simple", "schema2", "zstd", "multi", "shared"]
        .iter()
        .map(|n| push_one(&a, n))
        .collect();
    let env = Env::new();
    let singles: Vec<&str> = fx
        .iter()
        .filter(|p| p.repo != "test/multi")
        .map(|p| p.reference.as_str())
        .collect();
    let mut args = vec!["fetch"];
    args.extend(&singles);
    env.ok(&args);
    let multi = fx.iter().find(|p| p.repo == "test/multi").unwrap();
    env.ok(&["fetch", "--all-platforms", &multi.reference]);

    let to = format!("{}/mirror", b.host());
    let v = env.json(&["push", "--all", "--to", &to]);
    assert_eq!(v["dry_run"], false, "{v}");
    let want: BTreeMap<String, (u64, u64)> = fx
        .iter()
        .map(|p| (p.reference.clone(), want_of(&a, p)))
        .collect();
    assert_report(&v, &want);
    assert_mapping_explains(&v);
    for p in &fx {
        let i = image(&v, &p.reference);
        let target = format!("{}/mirror/{}:v1", b.host(), p.repo);
        assert_eq!(
            i["target"],
            target.as_str(),
            "--to keeps the repository path, drops the source registry: {i}"
        );
        assert_eq!(i["digest"], p.digest.as_str(), "{i}");
        assert_eq!(
            served_digest(&b, &target),
            p.digest,
            "B serves {target} byte for byte"
        );
        assert_eq!(
            b.content_digest(&format!("mirror/{}", p.repo), "v1"),
            p.digest
        );
        assert_eq!(as_u64(&i["present_bytes"]), 0, "nothing was in B: {i}");
        assert_skopeo_copies(&b, &target);
    }
    // Every child of the index is in B by digest.
    let idx: Value =
        serde_json::from_slice(&b.raw_manifest(&format!("{to}/test/multi:v1"))).unwrap();
    let children = idx["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    for c in children {
        let d = c["digest"].as_str().unwrap();
        assert_eq!(served_digest(&b, &format!("{to}/test/multi@{d}")), d);
    }
    // simple and shared share their first layer: one of the two repositories mounts it.
    let simple = fx.iter().find(|p| p.repo == "test/simple").unwrap();
    let l1 = &simple.image.layers[0];
    assert_eq!(
        as_u64(&v["mounted_blobs"]),
        1,
        "the shared layer is mounted once: {v}"
    );
    assert_eq!(as_u64(&v["mounted_bytes"]), l1.size, "{v}");
    assert_eq!(as_u64(&v["present_bytes"]), 0, "{v}");

    // Again: nothing to send.
    let v2 = env.json(&["push", "--all", "--to", &to]);
    assert_report(&v2, &want);
    assert_eq!(
        as_u64(&v2["pushed_bytes"]),
        0,
        "second push uploads nothing: {v2}"
    );
    assert_eq!(
        as_u64(&v2["mounted_bytes"]),
        0,
        "second push mounts nothing: {v2}"
    );
    assert_eq!(
        as_u64(&v2["present_bytes"]),
        want.values().map(|w| w.0).sum::<u64>(),
        "{v2}"
    );
    for p in &fx {
        assert_eq!(image(&v2, &p.reference)["digest"], p.digest.as_str());
    }
}

/// `--to REG` without a prefix, `--rewrite FROM=TO` (text and JSON), rules tried in order
/// before `--to`, and `--to` for what no rule maps.
#[test]
fn push_real_naming_rule_and_rewrites() {
    let a = Registry::start(Variant::Plain);
    let b = Registry::start(Variant::Plain);
    let fx: Vec<Pushed> = ["simple", "zstd", "multi", "shared", "schema2"]
        .iter()
        .map(|n| push_one(&a, n))
        .collect();
    let p = |repo: &str| fx.iter().find(|p| p.repo == repo).unwrap();
    let env = Env::new();
    let mut args = vec!["fetch", "--all-platforms"];
    args.extend(fx.iter().map(|p| p.reference.as_str()));
    env.ok(&args);
    let (ha, hb) = (a.host(), b.host());

    // --to REGISTRY (no prefix), text output.
    let out = env.ok(&["push", "--to", &hb, &p("test/simple").reference]);
    let lines = parse_lines(&out, false);
    let want_target = format!("{hb}/test/simple:v1");
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0].source, p("test/simple").reference);
    assert_eq!(lines[0].target, want_target);
    assert_eq!(lines[0].digest, p("test/simple").digest);
    assert_eq!(
        lines[0].bytes.iter().sum::<u64>(),
        want_of(&a, p("test/simple")).0,
        "{out}"
    );
    assert_eq!(served_digest(&b, &want_target), p("test/simple").digest);

    // --rewrite, text: the mapping shows in each line.
    let rule = format!("{ha}/test/={hb}/other/");
    let out = env.ok(&[
        "push",
        "--rewrite",
        &rule,
        &p("test/zstd").reference,
        &p("test/multi").reference,
    ]);
    let lines = parse_lines(&out, false);
    assert_eq!(lines.len(), 2, "{out}");
    for name in ["zstd", "multi"] {
        let src = &p(&format!("test/{name}")).reference;
        let l = lines
            .iter()
            .find(|l| &l.source == src)
            .unwrap_or_else(|| panic!("no line for {src}: {out}"));
        assert_eq!(l.target, format!("{hb}/other/{name}:v1"), "{out}");
        assert_eq!(l.digest, p(&format!("test/{name}")).digest);
        assert_eq!(served_digest(&b, &l.target), l.digest);
    }

    // --rewrite, JSON: rules in order (the first match wins), --to for the rest.
    let r1 = format!("{ha}/test/schema2:={hb}/renamed/s2:");
    let r2 = format!("{ha}/test/s={hb}/second/s");
    let v = env.json(&[
        "push",
        "--rewrite",
        &r1,
        "--rewrite",
        &r2,
        "--to",
        &format!("{hb}/fallback"),
        &p("test/schema2").reference,
        &p("test/shared").reference,
        &p("test/zstd").reference,
    ]);
    let want: BTreeMap<String, (u64, u64)> = ["test/schema2", "test/shared", "test/zstd"]
        .iter()
        .map(|r| (p(r).reference.clone(), want_of(&a, p(r))))
        .collect();
    assert_report(&v, &want);
    assert_mapping_explains(&v);
    for (repo, target) in [
        ("test/schema2", format!("{hb}/renamed/s2:v1")),
        ("test/shared", format!("{hb}/second/shared:v1")),
        ("test/zstd", format!("{hb}/fallback/test/zstd:v1")),
    ] {
        let i = image(&v, &p(repo).reference);
        assert_eq!(i["target"], target.as_str(), "{v}");
        assert_eq!(i["digest"], p(repo).digest.as_str());
        assert_eq!(served_digest(&b, &target), p(repo).digest, "{target}");
    }
    let mapping = v["mapping"].to_string();
    for r in [&r1, &r2] {
        let (f, t) = r.split_once('=').unwrap();
        assert!(
            v["mapping"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["from"] == f && m["to"] == t),
            "--rewrite {r} is not in the JSON mapping: {mapping}"
        );
    }
}

/// `bundle` then `push --from BUNDLE` (an empty store, any volume of a split bundle) into
/// a fresh registry gives the registry's digests; a delta bundle without its base in the
/// store fails naming the missing blob, and works once the base is imported.
#[test]
fn push_from_bundle_volumes_and_delta() {
    let a = Registry::start(Variant::Plain);
    let b = Registry::start(Variant::Plain);
    let fx: Vec<Pushed> = ["simple", "shared", "multi", "zstd"]
        .iter()
        .map(|n| push_one(&a, n))
        .collect();
    let p = |repo: &str| fx.iter().find(|p| p.repo == repo).unwrap();
    let env = Env::new();
    let mut args = vec!["fetch", "--all-platforms"];
    args.extend(fx.iter().map(|p| p.reference.as_str()));
    env.ok(&args);
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.obun");
    env.ok(&["bundle", "-o", s(&full), "--all"]);

    let offline = Env::new();
    let v = offline.json(&[
        "push",
        "--from",
        s(&full),
        "--all",
        "--to",
        &format!("{}/site", b.host()),
    ]);
    let want: BTreeMap<String, (u64, u64)> = fx
        .iter()
        .map(|p| (p.reference.clone(), want_of(&a, p)))
        .collect();
    assert_report(&v, &want);
    for p in &fx {
        let target = format!("{}/site/{}:v1", b.host(), p.repo);
        assert_eq!(image(&v, &p.reference)["target"], target.as_str());
        assert_eq!(served_digest(&b, &target), p.digest, "{target}");
    }
    assert_skopeo_copies(&b, &format!("{}/site/test/multi:v1", b.host()));

    // A split bundle: push from its second volume.
    let split = dir.path().join("split.obun");
    env.ok(&[
        "bundle",
        "-o",
        s(&split),
        "--split-size",
        "4200",
        &p("test/simple").reference,
        &p("test/zstd").reference,
    ]);
    let vol2 = volume(&split, 2);
    assert!(vol2.exists(), "no second volume");
    let o = Env::new();
    o.ok(&[
        "push",
        "--from",
        s(&vol2),
        "--all",
        "--to",
        &format!("{}/vol", b.host()),
    ]);
    for r in ["test/simple", "test/zstd"] {
        assert_eq!(
            served_digest(&b, &format!("{}/vol/{r}:v1", b.host())),
            p(r).digest
        );
    }

    // Delta: shared's first layer is simple's, carried by the base only.
    let base = dir.path().join("base.obun");
    let delta = dir.path().join("delta.obun");
    env.ok(&["bundle", "-o", s(&base), &p("test/simple").reference]);
    env.ok(&[
        "bundle",
        "-o",
        s(&delta),
        "--since",
        s(&base),
        &p("test/shared").reference,
    ]);
    let l1 = p("test/simple").image.layers[0].digest.clone();
    assert_eq!(p("test/shared").image.layers[0].digest, l1);
    let lone = Env::new();
    let to = format!("{}/delta", b.host());
    let e = fails(&lone, &["push", "--from", s(&delta), "--all", "--to", &to]);
    eprintln!("{e}");
    assert!(
        e.contains(&l1),
        "push of a delta without its base does not name the missing blob {l1}: {e}"
    );
    lone.ok(&["import", s(&base)]);
    let v = lone.json(&["push", "--from", s(&delta), "--all", "--to", &to]);
    assert_eq!(
        image(&v, &p("test/shared").reference)["digest"],
        p("test/shared").digest.as_str()
    );
    assert_eq!(
        served_digest(&b, &format!("{to}/test/shared:v1")),
        p("test/shared").digest
    );
}

/// htpasswd registry: without credentials exit 1 naming the image (and no password in the
/// output); with `--creds` or `--authfile` it works. TLS registry: with `--cert-dir` it
/// works, without it fails. Bearer (fake): the token is asked for with a push scope.
#[test]
fn push_auth_and_tls() {
    let a = Registry::start(Variant::Plain);
    let simple = push_one(&a, "simple");
    let env = Env::new();
    env.ok(&["fetch", &simple.reference]);

    let auth = Registry::start(Variant::Auth);
    let to = format!("{}/sec", auth.host());
    let target = format!("{to}/test/simple:v1");
    let args = ["push", simple.reference.as_str(), "--to", to.as_str()];
    let o = env.run(&args);
    let e = error_line(&args, &o);
    eprintln!("{e}");
    assert!(
        e.contains(&target) || e.contains(&simple.reference),
        "error does not name the image: {e}"
    );
    assert!(!text(&o).contains(&auth.pass), "password in the output");
    assert!(catalog_and_tags(&auth).is_empty());

    let wrong = format!("{}:not-the-password", auth.user);
    let args = [
        "push",
        simple.reference.as_str(),
        "--to",
        to.as_str(),
        "--creds",
        wrong.as_str(),
    ];
    let o = env.run(&args);
    let e = error_line(&args, &o);
    eprintln!("{e}");
    assert!(
        e.contains(&target) || e.contains(&simple.reference),
        "error does not name the image: {e}"
    );
    assert!(
        !text(&o).contains("not-the-password"),
        "password in the output: {}",
        text(&o)
    );

    let creds = auth.creds();
    let o = env.run(&["push", &simple.reference, "--to", &to, "--creds", &creds]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(&auth.pass), "password in the output");
    assert_eq!(served_digest(&auth, &target), simple.digest);

    use base64::Engine as _;
    let authfile = env.path().join("auth.json");
    let token = base64::engine::general_purpose::STANDARD.encode(&creds);
    let mut auths = serde_json::Map::new();
    auths.insert(auth.host(), serde_json::json!({ "auth": token }));
    fs::write(&authfile, serde_json::json!({ "auths": auths }).to_string()).unwrap();
    let to2 = format!("{}/viafile", auth.host());
    env.ok(&[
        "push",
        &simple.reference,
        "--to",
        &to2,
        "--authfile",
        s(&authfile),
    ]);
    assert_eq!(
        served_digest(&auth, &format!("{to2}/test/simple:v1")),
        simple.digest
    );

    let tls = Registry::start(Variant::Tls);
    let to = format!("{}/tls", tls.host());
    let args = ["push", simple.reference.as_str(), "--to", to.as_str()];
    let o = env.run(&args);
    error_line(&args, &o);
    let certs = tls.cert_dir();
    env.ok(&[
        "push",
        &simple.reference,
        "--to",
        &to,
        "--cert-dir",
        s(&certs),
    ]);
    assert_eq!(
        served_digest(&tls, &format!("{to}/test/simple:v1")),
        simple.digest
    );

    let bearer = FakeRegistry::with_auth(Auth::bearer_with_creds("pusher", "bearer-pw-41c"));
    let to = format!("{}/tok", bearer.host());
    env.ok(&[
        "push",
        &simple.reference,
        "--to",
        &to,
        "--creds",
        "pusher:bearer-pw-41c",
    ]);
    assert_eq!(
        bearer.tags("tok/test/simple"),
        vec![("v1".to_string(), simple.digest.clone())]
    );
    let toks = bearer.token_requests();
    assert!(
        toks.iter().any(|t| t.status == 200
            && t.query_value("scope").is_some_and(
                |sc| sc.contains("repository:tok/test/simple:") && sc.contains("push")
            )),
        "no token asked for with a push scope:\n{}",
        bearer.log_summary()
    );
}

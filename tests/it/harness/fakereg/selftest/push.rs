//! Owns the fake registry's self-tests of the upload side (uploads, chunks, mounts, faults, skopeo pushing into it).
use super::*;

/// Sends one request with a body (Content-Length framing, or chunked when `chunked`).
/// `None`: the server closed the connection without an answer.
fn send(
    reg: &FakeRegistry,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    chunked: bool,
) -> Option<Answer> {
    let mut s = TcpStream::connect(reg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", reg.host());
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut wire = Vec::new();
    if chunked {
        req.push_str("Transfer-Encoding: chunked\r\n\r\n");
        wire.extend_from_slice(req.as_bytes());
        for c in body.chunks(7000) {
            wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
    } else {
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        wire.extend_from_slice(req.as_bytes());
        wire.extend_from_slice(body);
    }
    // A cut shows as a failed write (EPIPE/ECONNRESET) or as EOF with no answer.
    if s.write_all(&wire).is_err() {
        return None;
    }
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    parse_answer(&all)
}

/// `POST /v2/<repo>/blobs/uploads/` -> (location, uuid)
fn start_upload(reg: &FakeRegistry, repo: &str) -> (String, String) {
    let (st, hs, _) = send(
        reg,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
        false,
    )
    .unwrap();
    assert_eq!(st, 202);
    assert_eq!(h(&hs, "range"), Some("0-0"));
    let loc = h(&hs, "location").unwrap().to_string();
    let uuid = h(&hs, "docker-upload-uuid").unwrap().to_string();
    assert!(
        loc.starts_with(&format!("/v2/{repo}/blobs/uploads/{uuid}?_state=")),
        "{loc}"
    );
    (loc, uuid)
}

fn with_digest(loc: &str, d: &str) -> String {
    format!(
        "{loc}{}digest={}",
        if loc.contains('?') { '&' } else { '?' },
        d.replace(':', "%3A")
    )
}

#[test]
fn push_api_monolithic_chunked_mount_manifests() {
    let reg = FakeRegistry::start();
    let blob = noise(30_000, "push-api-blob");
    let d = sha256_digest(&blob);
    let head = |repo: &str, d: &str| raw(&reg, "HEAD", &format!("/v2/{repo}/blobs/{d}"), &[]).0;
    assert_eq!(head("m/one", &d), 404);

    // monolithic: POST + PUT with the whole body
    let (loc, uuid) = start_upload(&reg, "m/one");
    let (st, hs, _) = send(
        &reg,
        "PUT",
        &with_digest(&loc, &d),
        &[("Content-Type", "application/octet-stream")],
        &blob,
        false,
    )
    .unwrap();
    assert_eq!(st, 201, "{}", reg.log_summary());
    assert_eq!(h(&hs, "docker-content-digest"), Some(d.as_str()));
    assert_eq!(
        h(&hs, "location"),
        Some(format!("/v2/m/one/blobs/{d}").as_str())
    );
    assert_eq!(head("m/one", &d), 200);
    assert!(reg.has_blob("m/one", &d));
    assert_eq!(reg.upload_digest(&uuid).as_deref(), Some(d.as_str()));
    assert_eq!(reg.bytes_received_for(&d), 30_000);
    let (_, _, got) = raw(&reg, "GET", &format!("/v2/m/one/blobs/{d}"), &[]);
    assert_eq!(got, blob);

    // chunked: PATCHes with Content-Range, a wrong start, GET for the offset, PUT to finish
    let big = noise(50_000, "push-api-big");
    let bd = sha256_digest(&big);
    let (loc, uuid) = start_upload(&reg, "m/one");
    let (st, hs, _) = send(
        &reg,
        "PATCH",
        &loc,
        &[("Content-Range", "0-19999")],
        &big[..20_000],
        false,
    )
    .unwrap();
    assert_eq!(st, 202);
    assert_eq!(h(&hs, "range"), Some("0-19999"));
    assert_eq!(h(&hs, "docker-upload-uuid"), Some(uuid.as_str()));
    let loc2 = h(&hs, "location").unwrap().to_string();
    assert_ne!(loc2, loc, "each answer hands out a new _state");
    let (st, hs, body) = send(
        &reg,
        "PATCH",
        &loc2,
        &[("Content-Range", "0-19999")],
        &big[..20_000],
        false,
    )
    .unwrap();
    assert_eq!(st, 416);
    assert_eq!(
        h(&hs, "range"),
        None,
        "a 416 carries no Range (as distribution)"
    );
    assert!(String::from_utf8_lossy(&body).contains("RANGE_INVALID"));
    let (st, _, _) = send(
        &reg,
        "PATCH",
        &loc2,
        &[("Content-Range", "bytes 20000-29999/50000")],
        &big[20_000..30_000],
        false,
    )
    .unwrap();
    assert_eq!(st, 416, "only START-END is a valid Content-Range");
    let (st, _, _) = send(
        &reg,
        "PATCH",
        &loc2,
        &[("Content-Range", "20000-29998")],
        &big[20_000..30_000],
        false,
    )
    .unwrap();
    assert_eq!(st, 400, "Content-Range and Content-Length disagree");
    let (st, hs, _) = raw(&reg, "GET", &loc2, &[]);
    assert_eq!(st, 204);
    assert_eq!(h(&hs, "range"), Some("0-19999"));
    // Transfer-Encoding: chunked, no Content-Range (streamed PATCH)
    let (st, hs, _) = send(&reg, "PATCH", &loc2, &[], &big[20_000..45_000], true).unwrap();
    assert_eq!(st, 202);
    assert_eq!(h(&hs, "range"), Some("0-44999"));
    let loc3 = h(&hs, "location").unwrap().to_string();
    let (st, _, body) = send(
        &reg,
        "PUT",
        &with_digest(&loc3, &d),
        &[],
        &big[45_000..],
        false,
    )
    .unwrap();
    assert_eq!(st, 400, "wrong digest");
    assert!(String::from_utf8_lossy(&body).contains("DIGEST_INVALID"));
    assert_eq!(
        reg.open_uploads(),
        vec![(uuid.clone(), "m/one".to_string(), 50_000)]
    );
    let (st, _, _) = send(&reg, "PUT", &with_digest(&loc3, &bd), &[], b"", false).unwrap();
    assert_eq!(st, 201);
    assert!(reg.has_blob("m/one", &bd));
    assert!(reg.open_uploads().is_empty());
    // every body byte of the session, the refused ones included
    assert_eq!(
        reg.bytes_received_for(&bd),
        20_000 + 20_000 + 10_000 + 10_000 + 25_000 + 5_000
    );
    let (st, _, _) = send(&reg, "PATCH", &loc3, &[], b"x", false).unwrap();
    assert_eq!(st, 404, "finished session is gone");
    assert_eq!(
        send(
            &reg,
            "PATCH",
            "/v2/m/one/blobs/uploads/nope?_state=1",
            &[],
            b"",
            false
        )
        .unwrap()
        .0,
        404
    );
    let rs = reg.session_requests(&uuid);
    assert_eq!(rs[0].method, "POST");
    assert_eq!(rs[1].content_range.as_deref(), Some("0-19999"));
    assert_eq!(rs[1].content_range_start(), Some(0));
    assert_eq!(rs[1].body_received, 20_000);

    // single POST ?digest=
    let small = b"single post".to_vec();
    let sd = sha256_digest(&small);
    let (st, _, _) = send(
        &reg,
        "POST",
        &format!("/v2/m/one/blobs/uploads/?digest={sd}"),
        &[],
        &small,
        false,
    )
    .unwrap();
    assert_eq!(st, 201);
    assert!(reg.has_blob("m/one", &sd));

    // mount: from a repo that has it -> 201; from one that does not -> 202 + session
    let (st, hs, _) = send(
        &reg,
        "POST",
        &format!("/v2/m/two/blobs/uploads/?mount={d}&from=m/one"),
        &[],
        b"",
        false,
    )
    .unwrap();
    assert_eq!(st, 201);
    assert_eq!(h(&hs, "docker-content-digest"), Some(d.as_str()));
    assert!(reg.has_blob("m/two", &d));
    let (st, hs, _) = send(
        &reg,
        "POST",
        &format!("/v2/m/three/blobs/uploads/?mount={d}&from=nowhere"),
        &[],
        b"",
        false,
    )
    .unwrap();
    assert_eq!(st, 202);
    assert!(
        h(&hs, "location")
            .unwrap()
            .contains("/v2/m/three/blobs/uploads/")
    );
    assert!(!reg.has_blob("m/three", &d));
    // a registry without mounts: 202 even when the source repository has the blob
    reg.set_mounts(false);
    let mount_path = format!("/v2/m/four/blobs/uploads/?mount={d}&from=m/one");
    assert_eq!(
        send(&reg, "POST", &mount_path, &[], b"", false).unwrap().0,
        202
    );
    assert!(!reg.has_blob("m/four", &d));
    reg.set_mounts(true);
    assert_eq!(
        send(&reg, "POST", &mount_path, &[], b"", false).unwrap().0,
        201
    );

    // manifests: blobs must be there; digest must match; tag last
    let cfg = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}".to_vec();
    let cd = sha256_digest(&cfg);
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": cfg.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": d, "size": blob.len()}],
    }))
    .unwrap();
    let md = sha256_digest(&m);
    let ct = [("Content-Type", OCI_MANIFEST)];
    let (st, _, body) = send(
        &reg,
        "PUT",
        &format!("/v2/m/one/manifests/{md}"),
        &ct,
        &m,
        false,
    )
    .unwrap();
    assert_eq!(st, 400, "config not uploaded yet");
    assert!(String::from_utf8_lossy(&body).contains("MANIFEST_BLOB_UNKNOWN"));
    send(
        &reg,
        "POST",
        &format!("/v2/m/one/blobs/uploads/?digest={cd}"),
        &[],
        &cfg,
        false,
    )
    .unwrap();
    let (st, _, body) = send(
        &reg,
        "PUT",
        &format!("/v2/m/one/manifests/{bd}"),
        &ct,
        &m,
        false,
    )
    .unwrap();
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&body).contains("DIGEST_INVALID"));
    let (st, _, body) = send(
        &reg,
        "PUT",
        &format!("/v2/m/one/manifests/{md}"),
        &[("Content-Type", OCI_INDEX)],
        &m,
        false,
    )
    .unwrap();
    assert_eq!(st, 400, "Content-Type and mediaType disagree");
    assert!(String::from_utf8_lossy(&body).contains("MANIFEST_INVALID"));
    let (st, hs, _) = send(
        &reg,
        "PUT",
        &format!("/v2/m/one/manifests/{md}"),
        &ct,
        &m,
        false,
    )
    .unwrap();
    assert_eq!(st, 201);
    assert_eq!(h(&hs, "docker-content-digest"), Some(md.as_str()));
    assert!(reg.tags("m/one").is_empty());
    let (st, _, _) = send(&reg, "PUT", "/v2/m/one/manifests/v1", &ct, &m, false).unwrap();
    assert_eq!(st, 201);
    assert_eq!(reg.tags("m/one"), vec![("v1".to_string(), md.clone())]);
    let (st, hs, body) = raw(&reg, "GET", "/v2/m/one/manifests/v1", &[]);
    assert_eq!((st, body), (200, m.clone()));
    assert_eq!(h(&hs, "content-type"), Some(OCI_MANIFEST));
    assert_eq!(reg.manifest("m/one", "v1").unwrap().0, OCI_MANIFEST);
    // an index needs its children in the repository
    let idx = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": md, "size": m.len(),
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    }))
    .unwrap();
    let ict = [("Content-Type", OCI_INDEX)];
    assert_eq!(
        send(&reg, "PUT", "/v2/m/two/manifests/v1", &ict, &idx, false)
            .unwrap()
            .0,
        400
    );
    assert_eq!(
        send(&reg, "PUT", "/v2/m/one/manifests/multi", &ict, &idx, false)
            .unwrap()
            .0,
        201
    );
    assert_eq!(reg.repos(), vec!["m/four", "m/one", "m/three", "m/two"]);
    assert!(reg.write_requests().iter().all(|r| r.status != 0 && !r.cut));
    assert!(
        reg.log_summary()
            .contains("content-range=0-19999 received=20000 -> 202"),
        "{}",
        reg.log_summary()
    );
}

#[test]
fn push_api_faults_cut_status_refusal() {
    let reg = FakeRegistry::start();
    let data = noise(40_000, "push-api-faults");
    let d = sha256_digest(&data);

    // cut a PATCH after 5000 body bytes, once: the 5000 are kept, GET reports them
    reg.cut_upload("PATCH", 5000, 1);
    let (loc, uuid) = start_upload(&reg, "f/r");
    assert!(
        send(
            &reg,
            "PATCH",
            &loc,
            &[("Content-Range", "0-19999")],
            &data[..20_000],
            false
        )
        .is_none()
    );
    let (st, hs, _) = raw(&reg, "GET", &loc, &[]);
    assert_eq!(st, 204);
    assert_eq!(h(&hs, "range"), Some("0-4999"));
    let (st, hs, _) = send(
        &reg,
        "PATCH",
        &loc,
        &[("Content-Range", "5000-19999")],
        &data[5000..20_000],
        false,
    )
    .unwrap();
    assert_eq!((st, h(&hs, "range")), (202, Some("0-19999")));
    let rs = reg.session_requests(&uuid);
    let cut = rs.iter().find(|r| r.cut).expect("a cut request in the log");
    assert_eq!(
        (cut.status, cut.body_received, cut.method.as_str()),
        (0, 5000, "PATCH")
    );
    assert!(reg.log_summary().contains("cut: no answer"));

    // cut_upload_at: the session cannot grow past 30000; a chunked body is cut too
    reg.cut_upload_at(30_000, 2);
    assert!(send(&reg, "PATCH", &loc, &[], &data[20_000..], true).is_none());
    assert_eq!(h(&raw(&reg, "GET", &loc, &[]).1, "range"), Some("0-29999"));
    assert!(
        send(
            &reg,
            "PATCH",
            &loc,
            &[("Content-Range", "30000-39999")],
            &data[30_000..],
            false
        )
        .is_none()
    );
    assert_eq!(h(&raw(&reg, "GET", &loc, &[]).1, "range"), Some("0-29999"));
    let (st, _, _) = send(
        &reg,
        "PUT",
        &with_digest(&loc, &d),
        &[("Content-Range", "30000-39999")],
        &data[30_000..],
        false,
    )
    .unwrap();
    assert_eq!(st, 201, "{}", reg.log_summary());
    assert_eq!(
        reg.bytes_received_for(&d),
        5000 + 15_000 + 10_000 + 10_000 // the PATCH started at 30000 was cut before a byte
    );

    // status: POST 429 twice then 202; PUT ?digest=<d> 500 always; HEAD 503 once
    reg.upload_status("POST", "f/s", 429, 2);
    let p = "/v2/f/s/blobs/uploads/";
    assert_eq!(send(&reg, "POST", p, &[], b"", false).unwrap().0, 429);
    assert_eq!(send(&reg, "POST", p, &[], b"", false).unwrap().0, 429);
    let (loc, _) = start_upload(&reg, "f/s");
    reg.upload_status("PUT", &d, 500, u32::MAX);
    for _ in 0..3 {
        let (st, _, b) = send(&reg, "PUT", &with_digest(&loc, &d), &[], &data, false).unwrap();
        assert_eq!(st, 500);
        assert!(String::from_utf8_lossy(&b).contains("UNKNOWN"));
    }
    assert_eq!(
        reg.log().last().unwrap().body_received,
        40_000,
        "the body is read before the answer"
    );
    reg.upload_status("HEAD", &d, 503, 1);
    assert_eq!(raw(&reg, "HEAD", &format!("/v2/f/r/blobs/{d}"), &[]).0, 503);
    assert_eq!(raw(&reg, "HEAD", &format!("/v2/f/r/blobs/{d}"), &[]).0, 200);
    reg.clear_upload_faults();
    assert_eq!(
        send(&reg, "PUT", &with_digest(&loc, &d), &[], &data, false)
            .unwrap()
            .0,
        201
    );

    // refused manifests: chosen status, code and message, by repo:tag
    reg.refuse_manifests("f/s:v1", 403, "DENIED", "quota exceeded for f/s", 1);
    let m = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": d, "size": 40_000}, "layers": []}),
    )
    .unwrap();
    let ct = [("Content-Type", OCI_MANIFEST)];
    let (st, _, b) = send(&reg, "PUT", "/v2/f/s/manifests/v1", &ct, &m, false).unwrap();
    assert_eq!(st, 403);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["errors"][0]["code"], "DENIED");
    assert_eq!(v["errors"][0]["message"], "quota exceeded for f/s");
    assert_eq!(
        send(&reg, "PUT", "/v2/f/s/manifests/v1", &ct, &m, false)
            .unwrap()
            .0,
        201
    );
    reg.refuse_manifests("*", 400, "MANIFEST_INVALID", "manifest invalid", u32::MAX);
    assert_eq!(
        send(&reg, "PUT", "/v2/f/s/manifests/v2", &ct, &m, false)
            .unwrap()
            .0,
        400
    );
    assert_eq!(reg.tags("f/s"), vec![("v1".to_string(), sha256_digest(&m))]);

    // absolute Location URLs
    reg.set_absolute_locations(true);
    let (_, hs, _) = send(&reg, "POST", "/v2/f/t/blobs/uploads/", &[], b"", false).unwrap();
    assert!(
        h(&hs, "location")
            .unwrap()
            .starts_with(&format!("http://{}/v2/f/t/blobs/uploads/", reg.host()))
    );
}

#[test]
fn push_api_basic_auth_on_writes() {
    use base64::Engine as _;
    let reg = FakeRegistry::with_auth(Auth::basic("alice", "s3cret"));
    let (st, hs, _) = send(&reg, "POST", "/v2/a/b/blobs/uploads/", &[], b"", false).unwrap();
    assert_eq!(st, 401);
    assert_eq!(h(&hs, "www-authenticate"), Some("Basic realm=\"fake\""));
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    let (st, _, _) = send(
        &reg,
        "POST",
        "/v2/a/b/blobs/uploads/",
        &[("Authorization", &good)],
        b"",
        false,
    )
    .unwrap();
    assert_eq!(st, 202);
    assert!(
        reg.write_requests()
            .iter()
            .all(|r| r.auth.as_deref() != Some(good.as_str()))
    );
}

/// A real client (skopeo / containers-image) pushes the fixtures into the fake registry
/// and reads them back: the upload side speaks the protocol real clients speak.
#[test]
fn push_api_skopeo_pushes_into_it() {
    let reg = FakeRegistry::start();
    reg.set_absolute_locations(true);
    let l = crate::harness::fixtures::layout();
    for (tag, all) in [("simple", false), ("multi", true), ("shared", false)] {
        let mut args = vec![
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--preserve-digests",
        ];
        if all {
            args.push("--all");
        }
        let src = format!("oci:{}:{tag}", l.dir.display());
        let dst = format!("docker://{}/skopeo/{tag}:v1", reg.host());
        args.push(&src);
        args.push(&dst);
        let out = std::process::Command::new("skopeo")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            reg.log_summary()
        );
        let want = &l.image(tag).manifest.digest;
        assert_eq!(
            reg.tags(&format!("skopeo/{tag}")),
            vec![("v1".to_string(), want.clone())]
        );
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", &dst])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(&sha256_digest(&out.stdout), want);
    }
    assert!(
        reg.write_requests().iter().all(|r| r.status < 300),
        "{}",
        reg.log_summary()
    );
}

/// `stall_upload_at` holds a PATCH once the session has the bytes; a client that goes
/// away in the middle of its body leaves what arrived in the session.
#[test]
fn push_api_stall_and_client_disconnect_keep_bytes() {
    let reg = FakeRegistry::start();
    let data = noise(3_000_000, "push-api-stall");
    let (loc, uuid) = start_upload(&reg, "st/r");
    reg.stall_upload_at(1_000_000, 1);
    let path = loc.clone();
    let host = reg.host();
    let addr = reg.addr;
    let body = data.clone();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nContent-Range: 0-2999999\r\nContent-Length: 3000000\r\n\r\n"
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&body); // blocks once buffers fill; ends when the server closes
    });
    assert!(reg.wait_for(Duration::from_secs(20), |reg| {
        reg.open_uploads().iter().any(|u| u.2 == 1_000_000)
    }));
    assert!(
        reg.log().iter().all(|r| r.method != "PATCH"),
        "logged only when it ends"
    );
    reg.release_stalls();
    client.join().unwrap();
    assert!(reg.wait_until(Duration::from_secs(10), |l| {
        l.iter()
            .any(|r| r.method == "PATCH" && r.cut && r.status == 0)
    }));
    assert_eq!(h(&raw(&reg, "GET", &loc, &[]).1, "range"), Some("0-999999"));

    // A client that sends half its body and goes away: the half is kept.
    let mut s = TcpStream::connect(reg.addr).unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Range: 1000000-2999999\r\nContent-Length: 2000000\r\n\r\n",
        reg.host()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&data[1_000_000..1_500_000]).unwrap();
    drop(s);
    assert!(reg.wait_for(Duration::from_secs(10), |reg| {
        reg.open_uploads()
            .iter()
            .any(|u| u.0 == uuid && u.2 == 1_500_000)
    }));
    let (st, _, _) = send(
        &reg,
        "PUT",
        &with_digest(&loc, &sha256_digest(&data)),
        &[("Content-Range", "1500000-2999999")],
        &data[1_500_000..],
        false,
    )
    .unwrap();
    assert_eq!(st, 201);
}

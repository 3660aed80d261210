//! Owns the fake registry's self-tests: raw HTTP over TcpStream (no ocibundle involved); read side here.
use super::*;

mod push;

/// Sends one request without a body; returns the answer. Reads to EOF.
fn raw(
    reg: &FakeRegistry,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Answer {
    let mut s = TcpStream::connect(reg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", reg.host());
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    parse_answer(&all).expect("response head")
}

/// (status, headers lowercased, body) of a whole HTTP/1.1 response; `None` without a head.
fn parse_answer(all: &[u8]) -> Option<Answer> {
    let end = find(all, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())))
        .collect();
    Some((status, headers, all[end + 4..].to_vec()))
}

/// Header `k` (lowercase) of an answer.
fn h<'a>(hs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    hs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[test]
fn serves_manifest_blob_range_and_faults() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("test/simple", "v1", &[300_000, 1000]);
    let layer = &img.layers[0];
    let (st, hs, body) = raw(&reg, "GET", "/v2/", &[]);
    assert_eq!(st, 200);
    assert_eq!(body, b"{}");
    let _ = hs;

    let (st, hs, body) = raw(&reg, "GET", "/v2/test/simple/manifests/v1", &[]);
    assert_eq!(st, 200);
    assert_eq!(h(&hs, "content-type"), Some(OCI_MANIFEST));
    assert_eq!(
        h(&hs, "docker-content-digest"),
        Some(img.manifest_digest.as_str())
    );
    assert_eq!(sha256_digest(&body), img.manifest_digest);
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(m["layers"][0]["digest"], layer.digest.as_str());

    let (st, hs, body) = raw(
        &reg,
        "HEAD",
        &format!("/v2/test/simple/manifests/{}", img.manifest_digest),
        &[],
    );
    assert_eq!(st, 200);
    assert!(body.is_empty());
    assert_eq!(
        h(&hs, "content-length"),
        Some(img.manifest.len().to_string().as_str())
    );

    let path = format!("/v2/test/simple/blobs/{}", layer.digest);
    let (st, _, full) = raw(&reg, "GET", &path, &[]);
    assert_eq!(st, 200);
    assert_eq!(sha256_digest(&full), layer.digest);
    assert_eq!(full.len() as u64, layer.size);

    // config is valid JSON with the diff_id of the uncompressed layer
    let (_, _, cfg) = raw(
        &reg,
        "GET",
        &format!("/v2/test/simple/blobs/{}", img.config.digest),
        &[],
    );
    let cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&full[..])
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"][0], sha256_digest(&tar).as_str());
    assert_eq!(cfg["os"], "linux");

    let (st, hs, part) = raw(&reg, "GET", &path, &[("Range", "bytes=1000-")]);
    assert_eq!(st, 206);
    assert_eq!(part, &full[1000..]);
    assert_eq!(
        h(&hs, "content-range").unwrap(),
        format!("bytes 1000-{}/{}", full.len() - 1, full.len())
    );
    let (st, _, _) = raw(
        &reg,
        "GET",
        &path,
        &[("Range", &format!("bytes={}-", full.len()))],
    );
    assert_eq!(st, 416);

    // cut: full Content-Length, fewer bytes, twice, then whole
    reg.cut_after(&layer.digest, 5000, 2);
    for _ in 0..2 {
        let (st, hs, b) = raw(&reg, "GET", &path, &[]);
        assert_eq!(st, 200);
        assert_eq!(
            h(&hs, "content-length"),
            Some(full.len().to_string().as_str())
        );
        assert_eq!(b, &full[..5000]);
    }
    let (_, _, b) = raw(&reg, "GET", &path, &[]);
    assert_eq!(b, full);

    // wrong bytes: same length, different digest
    reg.wrong_bytes(&layer.digest);
    let (st, _, b) = raw(&reg, "GET", &path, &[]);
    assert_eq!(st, 200);
    assert_eq!(b.len(), full.len());
    assert_ne!(sha256_digest(&b), layer.digest);
    reg.clear_faults(&layer.digest);

    // status N times, then OK
    reg.status(&layer.digest, 429, 2);
    assert_eq!(raw(&reg, "GET", &path, &[]).0, 429);
    assert_eq!(raw(&reg, "HEAD", &path, &[]).0, 429);
    assert_eq!(raw(&reg, "GET", &path, &[]).0, 200);
    // manifest faults by repo:tag
    reg.status("test/simple:v1", 503, u32::MAX);
    for _ in 0..3 {
        assert_eq!(raw(&reg, "GET", "/v2/test/simple/manifests/v1", &[]).0, 503);
    }
    reg.clear_faults("test/simple:v1");
    assert_eq!(raw(&reg, "GET", "/v2/test/simple/manifests/v1", &[]).0, 200);

    // 404s
    assert_eq!(
        raw(&reg, "GET", "/v2/test/simple/manifests/nope", &[]).0,
        404
    );
    assert_eq!(raw(&reg, "GET", "/v2/nope/manifests/v1", &[]).0, 404);
    assert_eq!(
        raw(&reg, "GET", "/v2/test/simple/blobs/sha256:00", &[]).0,
        404
    );

    let log = reg.blob_requests("test/simple", &layer.digest);
    assert!(log.iter().any(|r| r.range_start() == Some(1000)
        && r.status == 206
        && r.body_sent == (full.len() - 1000) as u64));
    assert_eq!(log.iter().filter(|r| r.body_sent == 5000).count(), 2);
}

#[test]
fn tls_probe_is_closed_and_not_logged() {
    let reg = FakeRegistry::start();
    let mut s = TcpStream::connect(reg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x10, 1, 2, 3])
        .unwrap();
    let mut b = Vec::new();
    let _ = s.read_to_end(&mut b);
    assert!(b.is_empty());
    assert!(reg.wait_until(Duration::from_secs(5), |_| reg.non_http_connections() == 1));
    assert!(reg.log().is_empty());
}

#[test]
fn stall_then_drop_ends_the_response() {
    let reg = FakeRegistry::start();
    let img = reg.add_image("r", "t", &[200_000]);
    let d = img.layers[0].digest.clone();
    reg.stall_after(&d, 10_000);
    let mut s = TcpStream::connect(reg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET /v2/r/blobs/{d} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(reg.wait_until(Duration::from_secs(10), |l| l.iter().any(|r| r.stalled)));
    let mut got = vec![0u8; 1 << 20];
    let mut n = 0;
    // read what was sent (headers + 10_000 body bytes) ...
    while find(&got[..n], b"\r\n\r\n").is_none_or(|e| n - e - 4 < 10_000) {
        n += s.read(&mut got[n..]).unwrap();
    }
    // ... then dropping the server closes the stalled connection (EOF, not a read timeout)
    drop(reg);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("EOF after drop, not a timeout");
    assert!(rest.is_empty());
}

#[test]
fn basic_and_bearer_auth() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let reg = FakeRegistry::with_auth(Auth::basic("alice", "s3cret"));
    reg.add_image("priv/img", "v1", &[100]);
    let (st, hs, _) = raw(&reg, "GET", "/v2/", &[]);
    assert_eq!(st, 401);
    assert_eq!(h(&hs, "www-authenticate"), Some("Basic realm=\"fake\""));
    let good = format!("Basic {}", b64("alice:s3cret"));
    assert_eq!(
        raw(
            &reg,
            "GET",
            "/v2/priv/img/manifests/v1",
            &[("Authorization", &good)]
        )
        .0,
        200
    );
    let bad = format!("Basic {}", b64("alice:nope"));
    assert_eq!(
        raw(
            &reg,
            "GET",
            "/v2/priv/img/manifests/v1",
            &[("Authorization", &bad)]
        )
        .0,
        401
    );
    assert!(
        reg.log()
            .iter()
            .all(|r| r.auth.as_deref() != Some(good.as_str()))
    );

    let reg = FakeRegistry::with_auth(Auth::bearer_with_creds("bob", "pw"));
    reg.add_image("priv/img", "v1", &[100]);
    let (st, hs, _) = raw(&reg, "GET", "/v2/", &[]);
    assert_eq!(st, 401);
    assert_eq!(
        h(&hs, "www-authenticate").unwrap(),
        format!(
            "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"fake-registry\"",
            reg.port()
        )
    );
    let (_, hs, _) = raw(&reg, "GET", "/v2/priv/img/manifests/v1", &[]);
    assert!(
        h(&hs, "www-authenticate")
            .unwrap()
            .ends_with(",scope=\"repository:priv/img:pull\"")
    );
    let tok_path = "/token?service=fake-registry&scope=repository%3Apriv%2Fimg%3Apull";
    assert_eq!(raw(&reg, "GET", tok_path, &[]).0, 401);
    let (st, _, body) = raw(
        &reg,
        "GET",
        tok_path,
        &[("Authorization", &format!("Basic {}", b64("bob:pw")))],
    );
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let tok = v["token"].as_str().unwrap().to_string();
    assert_eq!(v["access_token"], tok.as_str());
    let bearer = format!("Bearer {tok}");
    assert_eq!(
        raw(
            &reg,
            "GET",
            "/v2/priv/img/manifests/v1",
            &[("Authorization", &bearer)]
        )
        .0,
        200
    );
    assert_eq!(
        raw(&reg, "GET", "/v2/", &[("Authorization", &bearer)]).0,
        200
    );
    // scoped: not valid for another repo
    reg.add_image("other", "v1", &[100]);
    assert_eq!(
        raw(
            &reg,
            "GET",
            "/v2/other/manifests/v1",
            &[("Authorization", &bearer)]
        )
        .0,
        401
    );
    let toks = reg.token_requests();
    assert_eq!(toks.len(), 2);
    assert_eq!(
        toks[1].query_value("scope"),
        Some("repository:priv/img:pull")
    );
    assert_eq!(toks[1].auth.as_deref(), Some("Basic"));
    assert!(reg.log_summary().lines().all(|l| !l.contains(&tok)));
}

/// (status, lowercased headers, body)
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

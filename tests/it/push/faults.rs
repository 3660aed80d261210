//! Owns the push tests of failures: cut and refused uploads, 429/5xx, restarts resumed from the registry's offset, corrupt or missing blobs, unreachable registries.
use super::*;

/// An image whose only layer is `size` bytes, fetched from its own fake registry into `env`.
pub(super) fn big_image(env: &Env, size: usize) -> (FakeRegistry, TestImage) {
    let src = FakeRegistry::start();
    let img = src.add_image("big/img", "v1", &[size]);
    env.ok(&["fetch", &img.reference]);
    (src, img)
}

/// A blob above 8 MiB goes up with PATCH; cut in the middle of its PATCH, the upload goes on
/// from the offset the registry reports (`GET` on the upload URL, then a PATCH starting
/// there), without sending the first part again.
#[test]
fn push_cut_patch_resumes_from_registry_offset() {
    let env = Env::new();
    let (_src, img) = big_image(&env, 20_000_000);
    let layer = img.layers[0].clone();
    assert!(layer.size > 8 << 20);
    let dst = FakeRegistry::start();
    dst.cut_upload("PATCH", 6_000_000, 1);
    let v = env.json(&["push", &img.reference, "--to", &format!("{}/m", dst.host())]);
    assert_eq!(
        image(&v, &img.reference)["digest"],
        img.manifest_digest.as_str()
    );
    assert_eq!(
        dst.tags("m/big/img"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    assert!(dst.has_blob("m/big/img", &layer.digest));

    let log = dst.log();
    let cut = log
        .iter()
        .find(|r| r.cut)
        .unwrap_or_else(|| panic!("no cut request:\n{}", render(&log)));
    assert_eq!(cut.method, "PATCH", "{}", render(&log));
    assert_eq!(cut.body_received, 6_000_000);
    let uuid = cut.upload.clone().unwrap();
    let after: Vec<&Req> = log
        .iter()
        .skip_while(|r| !r.cut)
        .skip(1)
        .filter(|r| r.upload.as_deref() == Some(uuid.as_str()))
        .collect();
    let get = after
        .iter()
        .position(|r| r.method == "GET" && r.status == 204);
    assert!(
        get.is_some(),
        "no GET on the upload URL after the cut:\n{}",
        render(&log)
    );
    let resumed = after
        .iter()
        .find(|r| r.method == "PATCH" && r.status == 202);
    let resumed = resumed.unwrap_or_else(|| {
        panic!(
            "no PATCH on the same upload after the cut:\n{}",
            render(&log)
        )
    });
    assert_eq!(
        resumed.content_range_start(),
        Some(6_000_000),
        "the PATCH after the cut starts where the registry stands:\n{}",
        render(&log)
    );
    assert_eq!(
        dst.upload_digest(&uuid).as_deref(),
        Some(layer.digest.as_str()),
        "the resumed session became the layer"
    );
    let got = dst.bytes_received_for(&layer.digest);
    assert!(
        got < layer.size + layer.size / 4,
        "{got} bytes received for a {} byte layer (resume re-sent data):\n{}",
        layer.size,
        render(&log)
    );
    assert!(dst.open_uploads().is_empty(), "{:?}", dst.open_uploads());

    // The same from a bundle (the blob is read from the bundle file at the resume offset).
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("big.obun");
    env.ok(&["bundle", "-o", s(&bundle), &img.reference]);
    let offline = Env::new();
    let dst = FakeRegistry::start();
    dst.cut_upload("PATCH", 9_000_000, 1);
    offline.ok(&[
        "push",
        "--from",
        s(&bundle),
        "--all",
        "--to",
        &format!("{}/b", dst.host()),
    ]);
    assert_eq!(dst.tags("m/big/img"), vec![]);
    assert_eq!(
        dst.tags("b/big/img"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    let log = dst.log();
    assert!(log.iter().any(|r| r.cut), "{}", render(&log));
    assert!(
        log.iter().any(|r| r.method == "PATCH"
            && r.status == 202
            && r.content_range_start() == Some(9_000_000)),
        "no PATCH resuming at 9000000 (from the bundle):\n{}",
        render(&log)
    );
    let got = dst.bytes_received_for(&layer.digest);
    assert!(
        got < layer.size + layer.size / 4,
        "{got} bytes received for {}:\n{}",
        layer.size,
        render(&log)
    );
}

/// Regression (issue 11): the answer to the PUT that completes a chunked upload is lost after
/// the registry stored the blob. The retried PUT finds the session gone (404); the push used to
/// fail there. Now the blob's HEAD settles it: no second upload, the push succeeds.
#[test]
fn push_lost_answer_to_the_final_put_is_settled_by_head() {
    let env = Env::new();
    let (_src, img) = big_image(&env, 9_000_000);
    let layer = img.layers[0].clone();
    assert!(layer.size > 8 << 20);
    let dst = FakeRegistry::start();
    dst.lose_put_answers(1);
    // One blob at a time, largest first: the lost answer is the layer's.
    env.ok(&["push", "--jobs", "1", &img.reference, "--to", &format!("{}/m", dst.host())]);
    assert_eq!(dst.tags("m/big/img"), vec![("v1".to_string(), img.manifest_digest.clone())]);
    let log = dst.log();
    let lost = log.iter().position(|r| r.cut && r.method == "PUT").unwrap_or_else(|| panic!("no lost PUT answer:\n{}", render(&log)));
    let uuid = log[lost].upload.clone();
    assert!(
        log[lost + 1..].iter().any(|r| r.method == "PUT" && r.upload == uuid && r.status == 404),
        "the PUT was not tried again on its session:\n{}",
        render(&log)
    );
    assert!(
        log[lost + 1..].iter().any(|r| r.method == "HEAD" && r.path.ends_with(&layer.digest) && r.status == 200),
        "no HEAD of the blob after the 404:\n{}",
        render(&log)
    );
    assert_eq!(dst.bytes_received_for(&layer.digest), layer.size, "the blob went up twice:\n{}", render(&log));
}

/// A monolithic PUT (blob below 8 MiB) cut mid-body is retried and the push succeeds.
#[test]
fn push_cut_monolithic_put_is_retried() {
    let env = Env::new();
    let (_src, img) = big_image(&env, 600_000);
    let dst = FakeRegistry::start();
    dst.cut_upload("PUT", 100_000, 2);
    env.ok(&["push", &img.reference, "--to", &format!("{}/m", dst.host())]);
    assert_eq!(
        dst.tags("m/big/img"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    let log = dst.log();
    assert_eq!(log.iter().filter(|r| r.cut).count(), 2, "{}", render(&log));
    let d = &img.layers[0].digest;
    let ok = log
        .iter()
        .filter(|r| {
            r.method == "PUT" && r.query_value("digest") == Some(d.as_str()) && r.status == 201
        })
        .count();
    assert_eq!(ok, 1, "{}", render(&log));
}

/// 429 and 503 a couple of times (blob existence check, upload start, final PUT): retried,
/// and the push succeeds.
#[test]
fn push_429_and_503_twice_then_ok() {
    let env = Env::new();
    let src = FakeRegistry::start();
    let img = src.add_image("busy/app", "v1", &[120_000, 3_000]);
    env.ok(&["fetch", &img.reference]);
    let dst = FakeRegistry::start();
    let l0 = img.layers[0].digest.clone();
    dst.upload_status("HEAD", &l0, 429, 2);
    dst.upload_status("POST", "*", 429, 2);
    dst.upload_status("PUT", &l0, 503, 2);
    let v = env.json(&["push", &img.reference, "--to", &format!("{}/m", dst.host())]);
    assert_eq!(
        image(&v, &img.reference)["digest"],
        img.manifest_digest.as_str()
    );
    assert_eq!(
        dst.tags("m/busy/app"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    let log = dst.log();
    let puts: Vec<u16> = log
        .iter()
        .filter(|r| r.method == "PUT" && r.query_value("digest") == Some(l0.as_str()))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        puts,
        vec![503, 503, 201],
        "PUT ?digest={l0} answers:\n{}",
        render(&log)
    );
    let heads: Vec<u16> = log
        .iter()
        .filter(|r| r.method == "HEAD" && r.path.ends_with(&l0))
        .map(|r| r.status)
        .collect();
    assert!(
        heads.starts_with(&[429, 429]) && heads.len() >= 3,
        "HEAD answers {heads:?}"
    );
    assert_eq!(
        log.iter()
            .filter(|r| r.method == "POST" && r.status == 429)
            .count(),
        2
    );
}

/// 500 forever on one blob's upload: the push fails after a bounded number of attempts
/// with one error line naming the blob and the image; a rerun (registry healthy again)
/// completes and does not send again any blob that arrived in the first run.
#[test]
fn push_500_forever_fails_bounded_then_rerun_sends_only_the_rest() {
    let env = Env::new();
    let src = FakeRegistry::start();
    let img = src.add_image("flaky/app", "v1", &[300_000, 100_000, 50_000]);
    env.ok(&["fetch", &img.reference]);
    let dst = FakeRegistry::start();
    let bad = img.layers[0].digest.clone();
    dst.upload_status("PUT", &bad, 500, u32::MAX);
    let to = format!("{}/m", dst.host());
    let target = format!("{to}/flaky/app:v1");
    let e = fails(&env, &["push", &img.reference, "--to", &to]);
    eprintln!("{e}");
    assert!(e.contains(&bad), "error does not name the blob {bad}: {e}");
    assert!(
        e.contains(&target) || e.contains(&img.reference),
        "error does not name the image: {e}"
    );
    let log = dst.log();
    let attempts = log
        .iter()
        .filter(|r| r.method == "PUT" && r.query_value("digest") == Some(bad.as_str()))
        .count();
    eprintln!("{attempts} attempts at PUT ?digest={bad}");
    assert!(
        (2..=12).contains(&attempts),
        "{attempts} attempts at PUT ?digest={bad} (want retries, bounded):\n{}",
        render(&log)
    );
    assert!(
        dst.tags("m/flaky/app").is_empty(),
        "a tag was pushed for an incomplete image"
    );

    let arrived: Vec<String> = img
        .blobs()
        .iter()
        .map(|b| b.digest.clone())
        .filter(|d| dst.has_blob("m/flaky/app", d))
        .collect();
    assert!(!arrived.contains(&bad));
    dst.clear_upload_faults();
    let mark = dst.log().len();
    let v = env.json(&["push", &img.reference, "--to", &to]);
    assert_eq!(
        image(&v, &img.reference)["digest"],
        img.manifest_digest.as_str()
    );
    assert_eq!(
        dst.tags("m/flaky/app"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    let log = dst.log();
    let run2 = since(&log, mark);
    for r in blob_writes(run2) {
        if let Some(d) = named_digest(r) {
            assert!(
                !arrived.iter().any(|a| a == d),
                "rerun sent {d} again although it had arrived:\n{}",
                render(run2)
            );
        }
    }
    let sent: u64 = run2
        .iter()
        .filter(|r| r.is_upload())
        .map(|r| r.body_received)
        .sum();
    let missing: u64 = img
        .blobs()
        .iter()
        .filter(|b| !arrived.contains(&b.digest))
        .map(|b| b.size)
        .sum();
    assert_eq!(
        sent,
        missing,
        "rerun sends exactly the blobs that had not arrived:\n{}",
        render(run2)
    );
    let present = as_u64(&image(&v, &img.reference)["present_bytes"]);
    let arrived_bytes: u64 = img
        .blobs()
        .iter()
        .filter(|b| arrived.contains(&b.digest))
        .map(|b| b.size)
        .sum();
    assert_eq!(present, arrived_bytes, "{v}");
}

/// A manifest the registry refuses: one error line with the registry's code and message,
/// naming the image; no tag. Also with a chosen status (403 DENIED) on the tag only.
#[test]
fn push_refused_manifest_shows_registry_error() {
    let env = Env::new();
    let src = FakeRegistry::start();
    let img = src.add_image("refused/app", "v1", &[10_000]);
    env.ok(&["fetch", &img.reference]);
    let dst = FakeRegistry::start();
    let to = format!("{}/m", dst.host());
    let target = format!("{to}/refused/app:v1");

    dst.refuse_manifests(
        "*",
        400,
        "MANIFEST_INVALID",
        "manifest invalid: fake registry says no",
        u32::MAX,
    );
    let e = fails(&env, &["push", &img.reference, "--to", &to]);
    eprintln!("{e}");
    assert!(
        e.contains("MANIFEST_INVALID"),
        "error does not show the registry's code: {e}"
    );
    assert!(
        e.contains("fake registry says no"),
        "error does not show the registry's message: {e}"
    );
    assert!(
        e.contains(&target) || e.contains(&img.reference),
        "error does not name the image: {e}"
    );
    assert!(dst.tags("m/refused/app").is_empty());
    let puts = dst
        .log()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .count();
    assert_eq!(
        puts,
        1,
        "a 400 is final, not retried:\n{}",
        dst.log_summary()
    );

    dst.clear_upload_faults();
    dst.refuse_manifests(
        "m/refused/app:v1",
        403,
        "DENIED",
        "requested access to the resource is denied: tag quota",
        u32::MAX,
    );
    let e = fails(&env, &["push", &img.reference, "--to", &to]);
    eprintln!("{e}");
    assert!(
        e.contains("DENIED") && e.contains("tag quota"),
        "error does not show the registry's code and message: {e}"
    );
    assert!(
        e.contains(&target) || e.contains(&img.reference),
        "error does not name the image: {e}"
    );
    assert!(dst.tags("m/refused/app").is_empty());
    // The manifest itself went in by digest before the tag was refused.
    assert!(
        dst.manifest("m/refused/app", &img.manifest_digest)
            .is_some(),
        "{}",
        dst.log_summary()
    );

    // Once the registry accepts it, a rerun only adds the tag: every blob is present.
    dst.clear_upload_faults();
    let mark = dst.log().len();
    let v = env.json(&["push", &img.reference, "--to", &to]);
    assert_eq!(as_u64(&v["pushed_bytes"]), 0, "{v}");
    assert_eq!(as_u64(&v["present_bytes"]), want_fake(&img).0, "{v}");
    assert_eq!(
        dst.tags("m/refused/app"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    let log = dst.log();
    let run = since(&log, mark);
    assert!(blob_writes(run).is_empty(), "{}", render(run));
}

/// A PATCH that can never get past 7 MB fails the run; the next run (registry healthy
/// again) picks up the same upload from the URL kept in the store: a GET on it, then a PATCH
/// from 7 MB, instead of starting again from byte 0.
#[test]
fn push_restart_resumes_the_kept_upload() {
    let env = Env::new();
    let (_src, img) = big_image(&env, 20_000_000);
    let layer = img.layers[0].clone();
    let dst = FakeRegistry::start();
    dst.cut_upload_at(7_000_000, u32::MAX);
    let to = format!("{}/m", dst.host());
    let e = fails(&env, &["push", &img.reference, "--to", &to]);
    eprintln!("{e}");
    assert!(
        e.contains(&layer.digest),
        "error does not name the blob: {e}"
    );
    let open = dst.open_uploads();
    assert_eq!(open.len(), 1, "{open:?}\n{}", dst.log_summary());
    let (uuid, _, held) = open[0].clone();
    assert_eq!(held, 7_000_000);
    let kept = env.store().join(".ocibundle/uploads");
    let kept_after_failure = fs::read_dir(&kept).map(|d| d.count()).unwrap_or(0);

    dst.clear_upload_faults();
    rerun_resumes(&env, &dst, &img, &to, &uuid, held);
    assert!(
        kept_after_failure > 0,
        "no upload URL was kept in {} after the failed run",
        kept.display()
    );
    assert_eq!(
        fs::read_dir(&kept).map(|d| d.count()).unwrap_or(0),
        0,
        "upload URL still kept after success"
    );
}

/// A TCP proxy on 127.0.0.1 in front of a local port that, once, closes the connection
/// `cut_after` bytes after the start of the first `PATCH` request the client sends.
pub(super) struct CutProxy {
    port: u16,
    cut_done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutProxy {
    fn start(upstream: u16, cut_after: u64) -> CutProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let cut_done = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (cd, st) = (cut_done.clone(), stop.clone());
        std::thread::spawn(move || {
            let born = std::time::Instant::now();
            while !st.load(Ordering::SeqCst) && born.elapsed() < std::time::Duration::from_secs(300)
            {
                match l.accept() {
                    Ok((c, _)) => {
                        let cd = cd.clone();
                        std::thread::spawn(move || {
                            let _ = proxy_conn(c, upstream, cut_after, &cd);
                        });
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        CutProxy {
            port,
            cut_done,
            stop,
        }
    }
    fn cut(&self) -> bool {
        self.cut_done.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

pub(super) fn proxy_conn(
    mut client: std::net::TcpStream,
    upstream: u16,
    cut_after: u64,
    cut_done: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::sync::atomic::Ordering;
    client.set_nonblocking(false)?;
    let timeout = Some(std::time::Duration::from_secs(60));
    client.set_read_timeout(timeout)?;
    let mut up = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
    up.set_read_timeout(timeout)?;
    let (mut c2, mut u2) = (client.try_clone()?, up.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut u2, &mut c2);
        let _ = c2.shutdown(Shutdown::Write);
    });
    let needle = b"PATCH /v2/";
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    let mut counted: Option<u64> = None;
    loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            let _ = up.shutdown(Shutdown::Write);
            return Ok(());
        }
        let chunk = &buf[..n];
        if counted.is_none() && !cut_done.load(Ordering::SeqCst) {
            let mut hay = tail.clone();
            hay.extend_from_slice(chunk);
            if hay.windows(needle.len()).any(|w| w == needle) {
                counted = Some(0);
            }
            tail = hay[hay.len().saturating_sub(needle.len())..].to_vec();
        }
        if let Some(c) = counted.as_mut() {
            let room = cut_after.saturating_sub(*c) as usize;
            if room <= chunk.len() && !cut_done.swap(true, Ordering::SeqCst) {
                up.write_all(&chunk[..room])?;
                let _ = client.shutdown(Shutdown::Both);
                let _ = up.shutdown(Shutdown::Both);
                return Ok(());
            }
            *c += chunk.len() as u64;
        }
        up.write_all(chunk)?;
    }
}

/// A blob above 8 MiB into a real registry (the PATCH path), directly and through a proxy
/// that cuts the connection in the middle of the PATCH: both pushes give the registry's
/// digest, whatever distribution answers about the cut upload.
#[test]
fn push_real_big_blob_patch_and_cut_through_proxy() {
    let a = Registry::start(Variant::Plain);
    let b = Registry::start(Variant::Plain);
    let dir = tempfile::tempdir().unwrap();
    let (layout, big) = fixtures::big_layout(&dir.path().join("layout"), 10_000_000, 77);
    assert!(big.layers[0].size > 8 << 20);
    let digest = fixtures::push(&a, &layout, "big", "test/big:v1", PushMode::Oci);
    let reference = format!("{}/test/big:v1", a.host());
    let env = Env::new();
    env.ok(&["fetch", &reference]);

    let to = format!("{}/direct", b.host());
    let v = env.json(&["push", &reference, "--to", &to]);
    assert_eq!(
        as_u64(&image(&v, &reference)["pushed_bytes"]),
        big.layers[0].size + big.config.as_ref().unwrap().size,
        "{v}"
    );
    assert_eq!(served_digest(&b, &format!("{to}/test/big:v1")), digest);
    assert_skopeo_copies(&b, &format!("{to}/test/big:v1"));

    let proxy = CutProxy::start(b.port(), 3_000_000);
    let via = format!("127.0.0.1:{}/cut", proxy.port);
    let o = env.run(&["push", &reference, "--to", &via]);
    assert!(
        o.status.success(),
        "push through the cutting proxy failed:\n{}\nregistry log:\n{}",
        text(&o),
        b.log()
    );
    assert!(proxy.cut(), "the proxy never saw a PATCH to cut");
    assert_eq!(
        served_digest(&b, &format!("{}/cut/test/big:v1", b.host())),
        digest
    );
}

/// A store blob whose bytes no longer match its digest: the push fails naming the blob,
/// and the image gets no tag in the registry.
#[test]
fn push_corrupt_store_blob_fails_naming_it() {
    let src = FakeRegistry::start();
    let img = src.add_image("rot/app", "v1", &[50_000]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    let d = img.layers[0].digest.clone();
    let path = env
        .store()
        .join("blobs/sha256")
        .join(d.strip_prefix("sha256:").unwrap());
    let mut data = fs::read(&path).unwrap();
    data[1000] ^= 0x55;
    fs::write(&path, &data).unwrap();
    let dst = FakeRegistry::start();
    let e = fails(
        &env,
        &["push", &img.reference, "--to", &format!("{}/m", dst.host())],
    );
    eprintln!("{e}");
    assert!(
        e.contains(&d),
        "error does not name the corrupt blob {d}: {e}"
    );
    assert!(
        !dst.has_blob("m/rot/app", &d),
        "the corrupt blob was accepted"
    );
    assert!(dst.tags("m/rot/app").is_empty(), "{}", dst.log_summary());
}

/// A registry nobody listens on: exit 1 naming the image, after bounded retries.
#[test]
fn push_unreachable_registry_fails_naming_the_image() {
    let src = FakeRegistry::start();
    let img = src.add_image("gone/app", "v1", &[2_000]);
    let env = Env::new();
    env.ok(&["fetch", &img.reference]);
    // A port that was free a moment ago and is closed now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let to = format!("127.0.0.1:{port}/m");
    let e = fails(&env, &["push", &img.reference, "--to", &to]);
    eprintln!("{e}");
    assert!(
        e.contains(&format!("{to}/gone/app:v1"))
            || e.contains(&img.reference)
            || e.contains(&format!("127.0.0.1:{port}")),
        "error names neither the image nor the registry: {e}"
    );
}

/// The process killed in the middle of a big PATCH (the registry holds 8 MB of it): the next
/// run asks that upload where it stands (`GET` on the URL kept in the store) and goes on
/// from there instead of sending everything again.
#[test]
fn push_killed_mid_upload_resumes_after_restart() {
    let env = Env::new();
    let (_src, img) = big_image(&env, 20_000_000);
    let dst = FakeRegistry::start();
    dst.stall_upload_at(8_000_000, 1);
    let to = format!("{}/m", dst.host());
    let mut child = env
        .cmd()
        .args(["push", &img.reference, "--to", &to])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ocibundle push");
    // Bounded wait for the registry to hold 8 MB of the layer (not a timing assertion).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let held = loop {
        let open = dst.open_uploads();
        if let Some(u) = open.iter().find(|u| u.2 == 8_000_000) {
            break Some(u.0.clone());
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    dst.release_stalls();
    dst.clear_upload_faults();
    // The held PATCH ends (logged as cut) before the second run starts.
    assert!(dst.wait_until(std::time::Duration::from_secs(20), |l| {
        l.iter().any(|r| r.cut)
    }));
    let uuid =
        held.unwrap_or_else(|| panic!("the upload never reached 8 MB:\n{}", dst.log_summary()));

    rerun_resumes(&env, &dst, &img, &to, &uuid, 8_000_000);
}

/// Pushes `img` again and checks the run resumed upload `uuid`, of which the registry holds
/// `held` bytes: a GET asked where the upload stands, its PATCH continued that upload from
/// `held`, only the missing bytes were sent, and the tag names the image.
pub(super) fn rerun_resumes(env: &Env, dst: &FakeRegistry, img: &TestImage, to: &str, uuid: &str, held: u64) {
    let layer = &img.layers[0];
    let mark = dst.log().len();
    env.ok(&["push", &img.reference, "--to", to]);
    assert_eq!(
        dst.tags("m/big/img"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    let log = dst.log();
    let run2 = since(&log, mark);
    assert!(
        run2.iter().any(|r| r.method == "GET"
            && r.upload.as_deref() == Some(uuid)
            && r.status == 204),
        "the rerun did not ask the kept upload {uuid} where it stands:\n{}",
        render(run2)
    );
    let patch = run2.iter().find(|r| r.method == "PATCH" && r.status == 202);
    let patch = patch.unwrap_or_else(|| panic!("no PATCH in the rerun:\n{}", render(run2)));
    assert_eq!(
        patch.upload.as_deref(),
        Some(uuid),
        "the rerun started a new upload:\n{}",
        render(run2)
    );
    assert_eq!(patch.content_range_start(), Some(held), "{}", render(run2));
    let got: u64 = run2
        .iter()
        .filter(|r| r.is_upload())
        .map(|r| r.body_received)
        .sum();
    assert_eq!(
        got,
        layer.size - held,
        "the rerun re-sent bytes the registry held:\n{}",
        render(run2)
    );
}

/// Runs `ocibundle ARGS` but kills it if it has not finished after `secs` seconds (a hang
/// is a failure; this is a liveness bound, not a timing assertion).
pub(super) fn run_bounded(env: &Env, args: &[&str], secs: u64) -> Output {
    use std::io::Read;
    let mut child = env
        .cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ocibundle");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ocibundle {args:?} still running after {secs} s (hung); killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// A PATCH cut before the registry got a single byte of it: the registry then reports
/// `Range: 0-0` (distribution's answer for an empty upload as for a one-byte one); the
/// push must still finish, in bounded time, with the layer intact.
#[test]
fn push_patch_cut_before_its_first_byte_recovers() {
    let env = Env::new();
    let (_src, img) = big_image(&env, 12_000_000);
    let dst = FakeRegistry::start();
    dst.cut_upload("PATCH", 0, 1);
    let to = format!("{}/m", dst.host());
    let args = ["push", img.reference.as_str(), "--to", to.as_str()];
    let o = run_bounded(&env, &args, 120);
    let log = dst.log();
    assert!(
        log.iter().any(|r| r.cut && r.body_received == 0),
        "{}",
        render(&log)
    );
    assert!(
        o.status.success(),
        "push after a PATCH cut before its first byte failed:\n{}\n{}",
        text(&o),
        render(&log)
    );
    assert_eq!(
        dst.tags("m/big/img"),
        vec![("v1".to_string(), img.manifest_digest.clone())]
    );
    assert!(dst.has_blob("m/big/img", &img.layers[0].digest));
}

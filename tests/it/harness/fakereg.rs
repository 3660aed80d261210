//! Owns the in-process fake OCI registry (plain HTTP on 127.0.0.1) with fault injection, auth modes and a request log.
//!
//! One `FakeRegistry` per test: it binds `127.0.0.1:0`, serves each connection on its own
//! thread (`Connection: close` on every response) and stops when dropped. Every wait in it
//! is bounded: sockets have read/write timeouts, a stalled response hangs at most
//! `STALL_LIMIT`, and the accept loop gives up after `LIFETIME` even if never dropped.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// How long a `stall_after` response holds the socket before closing it.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// The accept loop stops by itself after this, dropped or not.
const LIFETIME: Duration = Duration::from_secs(600);
/// Socket read/write timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Who may pull.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    /// Anonymous access.
    #[default]
    None,
    /// HTTP Basic on every `/v2/` request.
    Basic { user: String, pass: String },
    /// Docker Hub style: `/v2/` answers 401 with a Bearer challenge whose realm is this
    /// server's `/token`; tokens are scoped to `repository:NAME:pull`. With `creds`, the
    /// token endpoint itself requires those Basic credentials.
    Bearer { creds: Option<(String, String)> },
}

impl Auth {
    pub fn basic(user: &str, pass: &str) -> Auth {
        Auth::Basic {
            user: user.into(),
            pass: pass.into(),
        }
    }
    pub fn bearer() -> Auth {
        Auth::Bearer { creds: None }
    }
    pub fn bearer_with_creds(user: &str, pass: &str) -> Auth {
        Auth::Bearer {
            creds: Some((user.into(), pass.into())),
        }
    }
}

/// One request as the server saw it. Holds no secrets: only the Authorization *scheme*.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The `Range` header, verbatim.
    pub range: Option<String>,
    /// `Basic`, `Bearer`, ... or `None` when no Authorization header was sent.
    pub auth: Option<String>,
    /// Status code answered.
    pub status: u16,
    /// Body bytes actually written (after any cut/stall).
    pub body_sent: u64,
    /// Set once a `stall_after` response has written its bytes and started hanging.
    pub stalled: bool,
}

impl Req {
    /// The start offset of a `Range: bytes=N-...` header, if any.
    pub fn range_start(&self) -> Option<u64> {
        parse_range(self.range.as_deref()?).map(|(s, _)| s)
    }
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, Default)]
struct Fault {
    /// (bytes, remaining times)
    cut: Option<(u64, u32)>,
    wrong: bool,
    /// (code, remaining times)
    status: Option<(u16, u32)>,
    stall: Option<u64>,
}

#[derive(Default)]
struct Repo {
    /// digest -> (media type, bytes)
    manifests: HashMap<String, (String, Vec<u8>)>,
    /// tag -> digest
    tags: HashMap<String, String>,
    /// digest -> bytes
    blobs: HashMap<String, Arc<Vec<u8>>>,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    /// keyed by blob digest, manifest digest or `repo:tag`
    faults: HashMap<String, Fault>,
    auth: Auth,
    /// token -> scopes it grants (repository names)
    tokens: HashMap<String, Vec<String>>,
    log: Vec<Req>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    /// Ends the stalls in progress (then stays armed for new ones only if set again).
    unstall: AtomicBool,
    token_seq: AtomicU64,
    /// Connections closed without an HTTP request (e.g. a TLS ClientHello).
    non_http: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A blob the fake registry serves.
#[derive(Clone, Debug)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

impl BlobRef {
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap()
    }
}

/// A small OCI image added by `add_image`.
#[derive(Clone, Debug)]
pub struct TestImage {
    pub repo: String,
    pub tag: String,
    /// `127.0.0.1:PORT/REPO:TAG`
    pub reference: String,
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config: BlobRef,
    pub layers: Vec<BlobRef>,
}

impl TestImage {
    /// Config and layers.
    pub fn blobs(&self) -> Vec<BlobRef> {
        let mut v = vec![self.config.clone()];
        v.extend(self.layers.iter().cloned());
        v
    }
    /// Bytes of every blob the image reaches, manifest included.
    pub fn total_size(&self) -> u64 {
        self.manifest.len() as u64 + self.blobs().iter().map(|b| b.size).sum::<u64>()
    }
}

pub struct FakeRegistry {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeRegistry {
    /// Anonymous registry.
    pub fn start() -> FakeRegistry {
        FakeRegistry::with_auth(Auth::None)
    }

    pub fn with_auth(auth: Auth) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                auth,
                ..Default::default()
            }),
            stop: AtomicBool::new(false),
            unstall: AtomicBool::new(false),
            token_seq: AtomicU64::new(1),
            non_http: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("fakereg-{}", addr.port()))
            .spawn(move || accept_loop(listener, sh))
            .unwrap();
        FakeRegistry {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }
    /// `127.0.0.1:PORT/REPO:TAG`
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{}:{}", self.host(), repo, tag)
    }

    pub fn add_blob(&self, repo: &str, data: Vec<u8>) -> String {
        let digest = sha256_digest(&data);
        self.shared
            .lock()
            .repos
            .entry(repo.into())
            .or_default()
            .blobs
            .insert(digest.clone(), Arc::new(data));
        digest
    }

    /// Adds a manifest (any bytes, any media type), optionally tagged. Returns its digest.
    pub fn add_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> String {
        let digest = sha256_digest(&bytes);
        let mut st = self.shared.lock();
        let r = st.repos.entry(repo.into()).or_default();
        r.manifests
            .insert(digest.clone(), (media_type.into(), bytes));
        if let Some(t) = tag {
            r.tags.insert(t.into(), digest.clone());
        }
        digest
    }

    /// Builds a valid single-platform (linux/amd64) OCI image whose layers are gzip'd tars
    /// each holding one file of `layer_sizes[i]` pseudo-random (incompressible) bytes, so
    /// each layer blob is a little bigger than that. Different repo/tag give different bytes.
    pub fn add_image(&self, repo: &str, tag: &str, layer_sizes: &[usize]) -> TestImage {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (i, &size) in layer_sizes.iter().enumerate() {
            let seed = format!("{repo}:{tag}:{i}");
            let (tar, gz) = make_layer(&format!("data/layer{i}.bin"), size, &seed);
            diff_ids.push(sha256_digest(&tar));
            let size = gz.len() as u64;
            let digest = self.add_blob(repo, gz);
            layers.push(BlobRef {
                digest,
                size,
                media_type: OCI_LAYER_GZIP.into(),
            });
        }
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"test.image": format!("{repo}:{tag}")}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": layer_sizes.iter().map(|_| serde_json::json!({"created_by": "fakereg"})).collect::<Vec<_>>(),
        });
        let config = serde_json::to_vec(&config).unwrap();
        let config_size = config.len() as u64;
        let config_digest = self.add_blob(repo, config);
        let config = BlobRef {
            digest: config_digest,
            size: config_size,
            media_type: OCI_CONFIG.into(),
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
            "layers": layers.iter().map(|l| serde_json::json!(
                {"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let manifest_digest = self.add_manifest(repo, Some(tag), OCI_MANIFEST, manifest.clone());
        TestImage {
            repo: repo.into(),
            tag: tag.into(),
            reference: self.reference(repo, tag),
            manifest_digest,
            manifest,
            config,
            layers,
        }
    }

    fn with_fault(&self, key: &str, f: impl FnOnce(&mut Fault)) {
        f(self.shared.lock().faults.entry(key.into()).or_default())
    }
    /// The first `times` GETs of `key` send the headers (full Content-Length), then only
    /// `bytes` body bytes, then close the connection.
    pub fn cut_after(&self, key: &str, bytes: u64, times: u32) {
        self.with_fault(key, |f| f.cut = Some((bytes, times)))
    }
    /// Serve bytes that do not match the digest (same length: one byte flipped).
    pub fn wrong_bytes(&self, key: &str) {
        self.with_fault(key, |f| f.wrong = true)
    }
    /// Answer `code` (429/500/503/...) to the first `times` requests (`u32::MAX`: always).
    pub fn status(&self, key: &str, code: u16, times: u32) {
        self.with_fault(key, |f| f.status = Some((code, times)))
    }
    /// Send `bytes` body bytes, then hold the socket silently (until drop or `STALL_LIMIT`).
    pub fn stall_after(&self, key: &str, bytes: u64) {
        self.with_fault(key, |f| f.stall = Some(bytes))
    }
    /// Ends every stalled response now (the client sees the connection close) and clears
    /// all stall faults.
    pub fn release_stalls(&self) {
        self.shared.unstall.store(true, Ordering::SeqCst);
    }

    pub fn clear_faults(&self, key: &str) {
        self.shared.lock().faults.remove(key);
    }

    /// Changes the auth mode of a running server.
    pub fn set_auth(&self, auth: Auth) {
        self.shared.lock().auth = auth;
    }

    /// A copy of every request logged so far.
    pub fn log(&self) -> Vec<Req> {
        self.shared.lock().log.clone()
    }
    /// Requests (any method) for `/v2/<repo>/blobs/<digest>`.
    pub fn blob_requests(&self, repo: &str, digest: &str) -> Vec<Req> {
        let p = format!("/v2/{repo}/blobs/{digest}");
        self.log().into_iter().filter(|r| r.path == p).collect()
    }
    /// Requests (any method) for `/v2/<repo>/manifests/<reference>`.
    pub fn manifest_requests(&self, repo: &str, reference: &str) -> Vec<Req> {
        let p = format!("/v2/{repo}/manifests/{reference}");
        self.log().into_iter().filter(|r| r.path == p).collect()
    }
    /// Requests for `/token`.
    pub fn token_requests(&self) -> Vec<Req> {
        self.log()
            .into_iter()
            .filter(|r| r.path == "/token")
            .collect()
    }
    /// Connections that closed without sending HTTP (TLS probes and the like).
    pub fn non_http_connections(&self) -> u64 {
        self.shared.non_http.load(Ordering::SeqCst)
    }
    /// Short one-line-per-request rendering of the log, for assertion messages.
    pub fn log_summary(&self) -> String {
        self.log()
            .iter()
            .map(|r| {
                let q: Vec<String> = r.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!(
                    "{} {}{}{} range={:?} auth={:?} -> {} ({} bytes{})\n",
                    r.method,
                    r.path,
                    if q.is_empty() { "" } else { "?" },
                    q.join("&"),
                    r.range,
                    r.auth,
                    r.status,
                    r.body_sent,
                    if r.stalled { ", stalled" } else { "" }
                )
            })
            .collect()
    }
    /// Polls the log until `pred` holds or `timeout` passes; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Req]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if pred(&self.shared.lock().log) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        // FAKEREG_LOG=1 cargo test ... -- --nocapture: print what the server saw.
        if std::env::var_os("FAKEREG_LOG").is_some() {
            eprintln!(
                "fakereg {} log ({} non-HTTP connections):\n{}",
                self.host(),
                self.non_http_connections(),
                self.log_summary()
            );
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let born = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) && born.elapsed() < LIFETIME {
        match listener.accept() {
            Ok((stream, peer)) => {
                if !peer.ip().is_loopback() {
                    continue;
                }
                let sh = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("fakereg-conn".into())
                    .spawn(move || {
                        let _ = handle_conn(stream, &sh);
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request head. `Ok(None)`: the peer did not speak HTTP (or closed).
fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(1024);
    let mut byte = [0u8; 1024];
    loop {
        let n = stream.read(&mut byte)?;
        if n == 0 {
            return Ok(None);
        }
        // A TLS ClientHello (0x16) or other binary: not for us; close at once so the
        // client can fall back to plain HTTP.
        if buf.is_empty() && !byte[0].is_ascii_uppercase() {
            return Ok(None);
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.truncate(end);
            break;
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Some(Request {
        method: method.into(),
        path: path.into(),
        query,
        headers,
    }))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `bytes=N-` or `bytes=N-M` -> (N, Some(M)).
fn parse_range(h: &str) -> Option<(u64, Option<u64>)> {
    let r = h.trim().strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = if b.trim().is_empty() {
        None
    } else {
        Some(b.trim().parse().ok()?)
    };
    Some((start, end))
}

/// What to send back.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Arc<Vec<u8>>,
    /// body[range.0..range.1] is the payload
    range: (usize, usize),
    /// Omit the body (HEAD).
    head: bool,
    cut: Option<u64>,
    stall: Option<u64>,
}

impl Resp {
    fn new(status: u16, content_type: &str, body: Vec<u8>) -> Resp {
        let len = body.len();
        Resp {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Arc::new(body),
            range: (0, len),
            head: false,
            cut: None,
            stall: None,
        }
    }
    fn error(status: u16, code: &str, msg: &str) -> Resp {
        let body = serde_json::json!({"errors": [{"code": code, "message": msg, "detail": null}]});
        Resp::new(
            status,
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        )
    }
    fn header(mut self, k: &str, v: &str) -> Resp {
        self.headers.push((k.into(), v.into()));
        self
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn handle_conn(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let req = match read_request(&mut stream) {
        Ok(Some(r)) => r,
        _ => {
            shared.non_http.fetch_add(1, Ordering::SeqCst);
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
    };
    let auth_scheme = req
        .header("Authorization")
        .map(|a| a.split(' ').next().unwrap_or("").to_string());
    let resp = route(&req, shared);
    let idx = {
        let mut st = shared.lock();
        st.log.push(Req {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            range: req.header("Range").map(str::to_string),
            auth: auth_scheme,
            status: resp.status,
            body_sent: 0,
            stalled: false,
        });
        st.log.len() - 1
    };
    let payload_len = resp.range.1 - resp.range.0;
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {payload_len}\r\nConnection: close\r\n\r\n"
    ));
    stream.write_all(head.as_bytes())?;
    if resp.head {
        stream.flush()?;
        let _ = stream.shutdown(Shutdown::Write);
        return Ok(());
    }
    let payload = &resp.body[resp.range.0..resp.range.1];
    let limit = match (resp.cut, resp.stall) {
        (Some(c), _) => (c as usize).min(payload.len()),
        (None, Some(s)) => (s as usize).min(payload.len()),
        _ => payload.len(),
    };
    // Write in chunks so the log's byte count follows along.
    let mut sent = 0;
    let result = (|| -> std::io::Result<()> {
        for chunk in payload[..limit].chunks(64 * 1024) {
            if shared.stop.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("server stopping"));
            }
            stream.write_all(chunk)?;
            sent += chunk.len();
        }
        stream.flush()
    })();
    shared.lock().log[idx].body_sent = sent as u64;
    result?;
    if resp.cut.is_some() {
        let _ = stream.shutdown(Shutdown::Both);
        return Ok(());
    }
    if resp.stall.is_some() {
        shared.lock().log[idx].stalled = true;
        let start = Instant::now();
        while !shared.stop.load(Ordering::SeqCst) && !shared.unstall.load(Ordering::SeqCst) && start.elapsed() < STALL_LIMIT {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = stream.shutdown(Shutdown::Both);
        return Ok(());
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Let the client read everything before the socket goes away.
    let mut sink = [0u8; 256];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.read(&mut sink);
    Ok(())
}

enum AuthResult {
    Ok,
    Challenge(Resp),
}

fn check_auth(req: &Request, st: &State, port: u16, repo: Option<&str>) -> AuthResult {
    let given = req.header("Authorization");
    match &st.auth {
        Auth::None => AuthResult::Ok,
        Auth::Basic { user, pass } => {
            if basic_matches(given, user, pass) {
                AuthResult::Ok
            } else {
                AuthResult::Challenge(
                    Resp::error(401, "UNAUTHORIZED", "authentication required")
                        .header("WWW-Authenticate", "Basic realm=\"fake\""),
                )
            }
        }
        Auth::Bearer { .. } => {
            let token = given.and_then(|g| g.strip_prefix("Bearer ")).map(str::trim);
            let granted = token.and_then(|t| st.tokens.get(t));
            let ok = match (granted, repo) {
                (Some(_), None) => true,
                (Some(scopes), Some(r)) => scopes.iter().any(|s| s == r),
                (None, _) => false,
            };
            if ok {
                return AuthResult::Ok;
            }
            let mut challenge =
                format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake-registry\"");
            if let Some(r) = repo {
                challenge.push_str(&format!(",scope=\"repository:{r}:pull\""));
            }
            AuthResult::Challenge(
                Resp::error(401, "UNAUTHORIZED", "authentication required")
                    .header("WWW-Authenticate", &challenge),
            )
        }
    }
}

fn basic_matches(given: Option<&str>, user: &str, pass: &str) -> bool {
    use base64::Engine as _;
    let Some(b64) = given.and_then(|g| g.strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    raw == format!("{user}:{pass}").as_bytes()
}

fn route(req: &Request, shared: &Shared) -> Resp {
    let is_head = req.method == "HEAD";
    if req.method != "GET" && !is_head {
        return Resp::error(405, "UNSUPPORTED", "method not allowed");
    }
    let mut st = shared.lock();
    let port = {
        // The realm must name this server; take the port from the Host header the client used.
        req.header("Host")
            .and_then(|h| h.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0)
    };
    if req.path == "/token" {
        return token(req, &mut st, shared);
    }
    let mut resp = if req.path == "/v2/" || req.path == "/v2" {
        match check_auth(req, &st, port, None) {
            AuthResult::Challenge(r) => r,
            AuthResult::Ok => Resp::new(200, "application/json", b"{}".to_vec()),
        }
    } else if let Some(rest) = req.path.strip_prefix("/v2/") {
        let (repo, kind, reference) = if let Some(i) = rest.rfind("/manifests/") {
            (&rest[..i], "manifests", &rest[i + "/manifests/".len()..])
        } else if let Some(i) = rest.rfind("/blobs/") {
            (&rest[..i], "blobs", &rest[i + "/blobs/".len()..])
        } else {
            return Resp::error(404, "NOT_FOUND", "no such endpoint");
        };
        match check_auth(req, &st, port, Some(repo)) {
            AuthResult::Challenge(r) => r,
            AuthResult::Ok => serve(req, &mut st, repo, kind, reference),
        }
    } else {
        Resp::error(404, "NOT_FOUND", "no such endpoint")
    };
    resp.head = is_head;
    resp.headers.push((
        "Docker-Distribution-Api-Version".into(),
        "registry/2.0".into(),
    ));
    resp
}

fn token(req: &Request, st: &mut State, shared: &Shared) -> Resp {
    let Auth::Bearer { creds } = &st.auth else {
        return Resp::error(404, "NOT_FOUND", "no token endpoint");
    };
    if let Some((u, p)) = creds
        && !basic_matches(req.header("Authorization"), u, p)
    {
        return Resp::error(401, "UNAUTHORIZED", "bad credentials")
            .header("WWW-Authenticate", "Basic realm=\"fake-token\"");
    }
    let mut scopes = Vec::new();
    for (k, v) in &req.query {
        if k == "scope" {
            for s in v.split(' ') {
                // repository:NAME:pull[,push]
                let mut parts = s.splitn(2, ':');
                if parts.next() == Some("repository")
                    && let Some((name, actions)) = parts.next().and_then(|r| r.rsplit_once(':'))
                    && actions.split(',').any(|a| a == "pull" || a == "*")
                {
                    scopes.push(name.to_string());
                }
            }
        }
    }
    let n = shared.token_seq.fetch_add(1, Ordering::SeqCst);
    let tok = format!("faketoken-{n}-{:x}", rand_u64(n));
    st.tokens.insert(tok.clone(), scopes);
    let body = serde_json::json!({"token": tok, "access_token": tok, "expires_in": 300, "issued_at": "2024-01-01T00:00:00Z"});
    Resp::new(200, "application/json", serde_json::to_vec(&body).unwrap())
}

fn serve(req: &Request, st: &mut State, repo: &str, kind: &str, reference: &str) -> Resp {
    let Some(r) = st.repos.get(repo) else {
        return Resp::error(404, "NAME_UNKNOWN", "repository name not known to registry");
    };
    if kind == "manifests" {
        let digest = if reference.starts_with("sha256:") {
            reference.to_string()
        } else {
            match r.tags.get(reference) {
                Some(d) => d.clone(),
                None => return Resp::error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
            }
        };
        let Some((mt, bytes)) = r.manifests.get(&digest).cloned() else {
            return Resp::error(404, "MANIFEST_UNKNOWN", "manifest unknown");
        };
        let tag_key = format!("{repo}:{reference}");
        let key = [tag_key.as_str(), digest.as_str()]
            .into_iter()
            .find(|k| st.faults.contains_key(*k));
        let body = Arc::new(bytes);
        let resp = Resp {
            status: 200,
            headers: vec![
                ("Content-Type".into(), mt),
                ("Docker-Content-Digest".into(), digest.clone()),
            ],
            range: (0, body.len()),
            body,
            head: false,
            cut: None,
            stall: None,
        };
        apply_faults(req, st, key.map(str::to_string), resp)
    } else {
        let Some(data) = r.blobs.get(reference).cloned() else {
            return Resp::error(404, "BLOB_UNKNOWN", "blob unknown to registry");
        };
        let len = data.len();
        let mut resp = Resp {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/octet-stream".into()),
                ("Docker-Content-Digest".into(), reference.to_string()),
                ("Accept-Ranges".into(), "bytes".into()),
            ],
            range: (0, len),
            body: data,
            head: false,
            cut: None,
            stall: None,
        };
        if let Some((start, end)) = req.header("Range").and_then(parse_range) {
            let end = end.map(|e| e.min(len as u64 - 1)).unwrap_or(len as u64 - 1);
            if len == 0 || start as usize >= len || start > end {
                return Resp::error(416, "RANGE_INVALID", "range not satisfiable")
                    .header("Content-Range", &format!("bytes */{len}"));
            }
            resp.status = 206;
            resp.range = (start as usize, end as usize + 1);
            resp.headers
                .push(("Content-Range".into(), format!("bytes {start}-{end}/{len}")));
        }
        let key = st
            .faults
            .contains_key(reference)
            .then(|| reference.to_string());
        apply_faults(req, st, key, resp)
    }
}

fn apply_faults(req: &Request, st: &mut State, key: Option<String>, mut resp: Resp) -> Resp {
    let Some(key) = key else { return resp };
    let Some(f) = st.faults.get_mut(&key) else {
        return resp;
    };
    if let Some((code, n)) = f.status
        && n > 0
    {
        if n != u32::MAX {
            f.status = Some((code, n - 1));
        }
        return Resp::error(code, "FAULT", "injected failure");
    }
    if req.method == "HEAD" {
        return resp;
    }
    if f.wrong {
        let mut b = (*resp.body).clone();
        if !b.is_empty() {
            let mid = b.len() / 2;
            b[mid] ^= 0xff;
        }
        resp.body = Arc::new(b);
    }
    if let Some((bytes, n)) = f.cut
        && n > 0
    {
        f.cut = Some((bytes, n - 1));
        resp.cut = Some(bytes);
    }
    if resp.cut.is_none() {
        resp.stall = f.stall;
    }
    resp
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

fn rand_u64(seed: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    splitmix(seed ^ t)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E3779B97F4A7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// Pseudo-random bytes determined by `seed`.
pub fn noise(size: usize, seed: &str) -> Vec<u8> {
    let mut state = u64::from_le_bytes(
        sha2::Sha256::digest(seed.as_bytes())[..8]
            .try_into()
            .unwrap(),
    );
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state = splitmix(state);
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// A tar holding one file `name` of `size` noise bytes, and its gzip. Returns (tar, tar.gz).
pub fn make_layer(name: &str, size: usize, seed: &str) -> (Vec<u8>, Vec<u8>) {
    let data = noise(size, seed);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, &data[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (tar, gz.finish().unwrap())
}

#[cfg(test)]
mod selftest {
    //! Drives the fake registry with raw HTTP over TcpStream (no ocibundle involved).
    use super::*;

    /// Sends one request, returns (status, headers, body, closed_early). Reads to EOF.
    fn raw(
        reg: &FakeRegistry,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
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
        let end = find(&all, b"\r\n\r\n").expect("response head");
        let head = String::from_utf8_lossy(&all[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            })
            .collect();
        (status, headers, all[end + 4..].to_vec())
    }
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
}

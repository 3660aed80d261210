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
    /// The `Content-Range` header of an upload request, verbatim.
    pub content_range: Option<String>,
    /// The `Content-Type` header of a request with a body (manifest and blob uploads).
    pub content_type: Option<String>,
    /// Request body bytes the server read (for a cut upload: the bytes before the cut).
    pub body_received: u64,
    /// The upload session (`<uuid>` of `/v2/<name>/blobs/uploads/<uuid>`) the request
    /// belongs to, for upload requests; for a `POST` that opened a session, the new one.
    pub upload: Option<String>,
    /// The server closed the connection in the middle of the request body (`cut_upload`)
    /// and sent no answer; `status` is then 0.
    pub cut: bool,
}

impl Req {
    /// The start offset of a `Range: bytes=N-...` header, if any.
    pub fn range_start(&self) -> Option<u64> {
        parse_range(self.range.as_deref()?).map(|(s, _)| s)
    }
    /// The start offset of a `Content-Range: START-END` header, if any.
    pub fn content_range_start(&self) -> Option<u64> {
        parse_content_range(self.content_range.as_deref()?).map(|(s, _)| s)
    }
    /// A write: `POST`, `PATCH`, `PUT` or `DELETE`.
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PATCH" | "PUT" | "DELETE")
    }
    /// A request on `/v2/<name>/blobs/uploads/...`.
    pub fn is_upload(&self) -> bool {
        self.path.contains("/blobs/uploads/")
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

/// `upload_status`: answer `code` to matching upload-side requests.
#[derive(Clone, Debug)]
struct UploadStatus {
    /// `HEAD`, `POST`, `PATCH`, `PUT`, `GET`, `DELETE` or `*` (any of them).
    method: String,
    /// `*`, a repository name or a digest (see `upload_status`).
    key: String,
    code: u16,
    /// remaining times (`u32::MAX`: always)
    times: u32,
}

/// `cut_upload` / `cut_upload_at`: close the connection in the middle of an upload body.
#[derive(Clone, Debug)]
struct UploadCut {
    /// `PATCH`, `PUT`, `POST` or `*`.
    method: String,
    /// Body bytes to read before cutting (request-relative), or with `at_offset` the upload
    /// session size at which to cut.
    after: u64,
    at_offset: bool,
    /// Instead of closing at once, hold the connection without reading (like a stalled
    /// network) until `release_stalls`, drop or `STALL_LIMIT`, then close it.
    stall: bool,
    times: u32,
}

/// `refuse_manifests`: answer manifest `PUT`s with an error.
#[derive(Clone, Debug)]
struct Refusal {
    /// `*`, `REPO`, `REPO:REF` or a digest.
    key: String,
    status: u16,
    code: String,
    message: String,
    times: u32,
}

/// An upload session (`POST /v2/<name>/blobs/uploads/`).
#[derive(Clone, Debug)]
struct Upload {
    repo: String,
    data: Vec<u8>,
    /// Bumped on every answer: the `_state` query value of the Location handed out.
    state: u64,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    /// open upload sessions by uuid
    uploads: HashMap<String, Upload>,
    /// finished upload sessions: uuid -> digest
    finished: HashMap<String, String>,
    upload_seq: u64,
    upload_status: Vec<UploadStatus>,
    cuts: Vec<UploadCut>,
    refusals: Vec<Refusal>,
    /// Location headers are absolute URLs (`http://127.0.0.1:PORT/v2/…`) instead of paths.
    absolute_locations: bool,
    /// `POST ?mount=` always opens a plain upload (202), as registries without mounts do.
    no_mounts: bool,
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

    // ---- upload side (push): faults and inspection ------------------------------------

    /// Answer `code` (429/500/503/...) to the first `times` (`u32::MAX`: always) upload-side
    /// requests with this `method` (`HEAD` of a blob, `POST`, `PATCH`, `PUT`, `GET` or
    /// `DELETE` of an upload, `PUT` of a manifest; `*`: any of those) whose `key` matches:
    /// `*`, the repository name, or the digest the request names (`HEAD /blobs/<d>`,
    /// `POST ?mount=<d>` or `?digest=<d>`, `PUT <upload>?digest=<d>`, `PUT /manifests/<d>`).
    /// A request with a body has it read in full before the answer.
    pub fn upload_status(&self, method: &str, key: &str, code: u16, times: u32) {
        self.shared.lock().upload_status.push(UploadStatus {
            method: method.into(),
            key: key.into(),
            code,
            times,
        });
    }
    /// The first `times` upload requests (`PATCH`, `PUT`, `POST` with a body, or `*`) whose
    /// body is longer than `after` bytes: read `after` bytes of the body (they are kept in
    /// the upload session, as a registry streaming to storage would), then close the
    /// connection without an answer.
    pub fn cut_upload(&self, method: &str, after: u64, times: u32) {
        self.shared.lock().cuts.push(UploadCut {
            method: method.into(),
            after,
            at_offset: false,
            stall: false,
            times,
        });
    }
    /// The first `times` `PATCH`/`PUT` upload requests that would take their session past
    /// `offset` bytes: read up to that offset (kept), then close the connection without an
    /// answer. A request that starts at or past `offset` is cut before its first byte.
    pub fn cut_upload_at(&self, offset: u64, times: u32) {
        self.shared.lock().cuts.push(UploadCut {
            method: "*".into(),
            after: offset,
            at_offset: true,
            stall: false,
            times,
        });
    }
    /// Like `cut_upload_at`, but the server then stops reading and holds the connection
    /// (the bytes up to `offset` are already in the session, see `open_uploads`) until
    /// `release_stalls`, drop or `STALL_LIMIT`; then it closes it without an answer. For
    /// killing a client in the middle of an upload.
    pub fn stall_upload_at(&self, offset: u64, times: u32) {
        self.shared.lock().cuts.push(UploadCut {
            method: "*".into(),
            after: offset,
            at_offset: true,
            stall: true,
            times,
        });
    }
    /// Answer the first `times` manifest `PUT`s matching `key` (`*`, `REPO`, `REPO:REF` or
    /// the manifest digest) with `status` and a registry error body `{"errors":[{code,
    /// message}]}`.
    pub fn refuse_manifests(&self, key: &str, status: u16, code: &str, message: &str, times: u32) {
        self.shared.lock().refusals.push(Refusal {
            key: key.into(),
            status,
            code: code.into(),
            message: message.into(),
            times,
        });
    }
    /// Removes every upload-side fault (`upload_status`, `cut_upload*`, `refuse_manifests`).
    pub fn clear_upload_faults(&self) {
        let mut st = self.shared.lock();
        st.upload_status.clear();
        st.cuts.clear();
        st.refusals.clear();
    }
    /// `Location` answers become absolute URLs (as distribution sends) instead of paths.
    pub fn set_absolute_locations(&self, on: bool) {
        self.shared.lock().absolute_locations = on;
    }

    /// With `false`, `POST ?mount=&from=` never mounts: it answers 202 with a fresh upload.
    pub fn set_mounts(&self, on: bool) {
        self.shared.lock().no_mounts = !on;
    }

    /// Repository names, sorted (including ones that only received blobs).
    pub fn repos(&self) -> Vec<String> {
        let mut v: Vec<String> = self.shared.lock().repos.keys().cloned().collect();
        v.sort();
        v
    }
    /// Tags of `repo` with the digests they point at, sorted by tag.
    pub fn tags(&self, repo: &str) -> Vec<(String, String)> {
        let st = self.shared.lock();
        let mut v: Vec<(String, String)> = st
            .repos
            .get(repo)
            .map(|r| r.tags.iter().map(|(t, d)| (t.clone(), d.clone())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
    /// Blob digests `repo` holds, sorted.
    pub fn blob_digests(&self, repo: &str) -> Vec<String> {
        let st = self.shared.lock();
        let mut v: Vec<String> = st
            .repos
            .get(repo)
            .map(|r| r.blobs.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }
    pub fn has_blob(&self, repo: &str, digest: &str) -> bool {
        let st = self.shared.lock();
        st.repos
            .get(repo)
            .is_some_and(|r| r.blobs.contains_key(digest))
    }
    /// (Content-Type it was pushed with, bytes) of a manifest by tag or digest.
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<(String, Vec<u8>)> {
        let st = self.shared.lock();
        let r = st.repos.get(repo)?;
        let d = if reference.starts_with("sha256:") {
            reference.to_string()
        } else {
            r.tags.get(reference)?.clone()
        };
        r.manifests.get(&d).cloned()
    }
    /// Every (repo, digest) manifest the registry holds, sorted.
    pub fn manifest_digests(&self) -> Vec<(String, String)> {
        let st = self.shared.lock();
        let mut v: Vec<(String, String)> = st
            .repos
            .iter()
            .flat_map(|(n, r)| r.manifests.keys().map(move |d| (n.clone(), d.clone())))
            .collect();
        v.sort();
        v
    }
    /// Open upload sessions: (uuid, repo, bytes held).
    pub fn open_uploads(&self) -> Vec<(String, String, u64)> {
        let st = self.shared.lock();
        let mut v: Vec<(String, String, u64)> = st
            .uploads
            .iter()
            .map(|(u, up)| (u.clone(), up.repo.clone(), up.data.len() as u64))
            .collect();
        v.sort();
        v
    }
    /// The digest a finished upload session was committed as.
    pub fn upload_digest(&self, uuid: &str) -> Option<String> {
        self.shared.lock().finished.get(uuid).cloned()
    }
    /// Logged writes (`POST`, `PATCH`, `PUT`, `DELETE`).
    pub fn write_requests(&self) -> Vec<Req> {
        self.log().into_iter().filter(Req::is_write).collect()
    }
    /// Logged writes that carry blob data or mount blobs (anything on `/blobs/uploads/`).
    pub fn blob_writes(&self) -> Vec<Req> {
        self.log()
            .into_iter()
            .filter(|r| r.is_write() && r.is_upload())
            .collect()
    }
    /// Logged requests of one upload session (including the `POST` that opened it).
    pub fn session_requests(&self, uuid: &str) -> Vec<Req> {
        self.log()
            .into_iter()
            .filter(|r| r.upload.as_deref() == Some(uuid))
            .collect()
    }
    /// Body bytes received by the requests of upload sessions that were committed as
    /// `digest` (plus any `POST ?digest=` of it).
    pub fn bytes_received_for(&self, digest: &str) -> u64 {
        let st = self.shared.lock();
        st.log
            .iter()
            .filter(|r| {
                r.upload
                    .as_ref()
                    .and_then(|u| st.finished.get(u))
                    .is_some_and(|d| d == digest)
                    || (r.method == "POST" && r.query_value("digest") == Some(digest))
            })
            .map(|r| r.body_received)
            .sum()
    }
    /// Body bytes received over the whole log.
    pub fn bytes_received(&self) -> u64 {
        self.shared.lock().log.iter().map(|r| r.body_received).sum()
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
                let mut up = String::new();
                if let Some(cr) = &r.content_range {
                    up.push_str(&format!(" content-range={cr}"));
                }
                if r.body_received > 0 || r.is_write() {
                    up.push_str(&format!(" received={}", r.body_received));
                }
                format!(
                    "{} {}{}{} range={:?} auth={:?}{} -> {} ({} bytes{})\n",
                    r.method,
                    r.path,
                    if q.is_empty() { "" } else { "?" },
                    q.join("&"),
                    r.range,
                    r.auth,
                    up,
                    r.status,
                    r.body_sent,
                    if r.stalled {
                        ", stalled"
                    } else if r.cut {
                        ", cut: no answer"
                    } else {
                        ""
                    }
                )
            })
            .collect()
    }
    /// Polls `pred` (which may call any method of the registry: no lock is held while it
    /// runs) until it holds or `timeout` passes; returns whether it held.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&FakeRegistry) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    /// Polls the log until `pred` holds or `timeout` passes; returns whether it held.
    /// `pred` runs under the registry's lock: it must not call the registry's methods.
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
    /// Bytes read past the head (the start of the body).
    rest: Vec<u8>,
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
    let rest;
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
            rest = buf.split_off(end + 4);
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
        rest,
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
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
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
    let mut info = WriteInfo::default();
    let resp = if req.method == "GET" && req.path.contains("/blobs/uploads/")
        || !matches!(req.method.as_str(), "GET" | "HEAD")
    {
        handle_write(&req, &mut stream, shared, &mut info)
    } else {
        Some(route(&req, shared))
    };
    let idx = {
        let mut st = shared.lock();
        st.log.push(Req {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            range: req.header("Range").map(str::to_string),
            auth: auth_scheme,
            status: resp.as_ref().map_or(0, |r| r.status),
            body_sent: 0,
            stalled: false,
            content_range: req.header("Content-Range").map(str::to_string),
            content_type: (req.method != "GET" && req.method != "HEAD")
                .then(|| req.header("Content-Type").map(str::to_string))
                .flatten(),
            body_received: info.body_received,
            upload: info.upload.clone(),
            cut: info.cut,
        });
        st.log.len() - 1
    };
    let Some(resp) = resp else {
        // Cut in the middle of the request body: no answer, the connection just ends.
        let _ = stream.shutdown(Shutdown::Both);
        return Ok(());
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
        while !shared.stop.load(Ordering::SeqCst)
            && !shared.unstall.load(Ordering::SeqCst)
            && start.elapsed() < STALL_LIMIT
        {
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
            AuthResult::Ok => {
                // upload_status faults on the `HEAD /blobs/<d>` a pusher starts with.
                let fault = (is_head && kind == "blobs")
                    .then(|| take_upload_status(&mut st, "HEAD", repo, Some(reference)))
                    .flatten();
                match fault {
                    Some(code) => fault_resp(code),
                    None => serve(req, &mut st, repo, kind, reference),
                }
            }
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

// ---------------------------------------------------------------------------------------------
// Upload side of the distribution API (what a pusher talks to).

/// Largest request body accepted (blob chunk or monolithic upload).
const MAX_BODY: u64 = 256 * 1024 * 1024;
/// Largest manifest accepted by `PUT /manifests/` (as distribution: 4 MiB).
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// What a write request did, for its log entry.
#[derive(Default)]
struct WriteInfo {
    body_received: u64,
    upload: Option<String>,
    cut: bool,
}

/// `START-END` (inclusive, the distribution spec's form) -> (START, END).
fn parse_content_range(h: &str) -> Option<(u64, u64)> {
    let (a, b) = h.trim().split_once('-')?;
    if a.is_empty() || b.is_empty() || !a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// How the request body is framed.
#[derive(Clone, Copy, Debug)]
enum Framing {
    Length(u64),
    Chunked,
    Empty,
}

fn framing(req: &Request) -> Framing {
    if req
        .header("Transfer-Encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
    {
        return Framing::Chunked;
    }
    match req
        .header("Content-Length")
        .and_then(|l| l.trim().parse().ok())
    {
        Some(0) | None => Framing::Empty,
        Some(n) => Framing::Length(n),
    }
}

/// The body stream: the bytes read past the head, then the socket.
struct BodyIn<'a> {
    stream: &'a mut TcpStream,
    rest: &'a [u8],
    pos: usize,
}

impl Read for BodyIn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos < self.rest.len() {
            let n = buf.len().min(self.rest.len() - self.pos);
            buf[..n].copy_from_slice(&self.rest[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.stream.read(buf)
    }
}

impl BodyIn<'_> {
    fn line(&mut self) -> std::io::Result<String> {
        let mut l = Vec::new();
        let mut b = [0u8; 1];
        loop {
            if self.read(&mut b)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if b[0] == b'\n' {
                break;
            }
            l.push(b[0]);
            if l.len() > 4096 {
                return Err(std::io::Error::other("chunk line too long"));
            }
        }
        Ok(String::from_utf8_lossy(&l).trim().to_string())
    }
}

/// Reads the body, at most `stop` bytes of it (and `MAX_BODY`). Returns the bytes and
/// whether the body went on past `stop` (the caller then cuts the connection).
fn read_body(
    stream: &mut TcpStream,
    req: &Request,
    stop: Option<u64>,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let more = read_body_into(stream, req, stop, &mut out)?;
    Ok((out, more))
}

/// `read_body` into `out`, which keeps the bytes received before an error (a client that
/// went away in the middle of its body).
fn read_body_into(
    stream: &mut TcpStream,
    req: &Request,
    stop: Option<u64>,
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let stop = stop.unwrap_or(u64::MAX);
    let mut src = BodyIn {
        stream,
        rest: &req.rest,
        pos: 0,
    };
    match framing(req) {
        Framing::Empty => Ok(false),
        Framing::Length(n) => {
            if n > MAX_BODY {
                return Err(std::io::Error::other("body too large"));
            }
            let want = n.min(stop);
            out.reserve(want as usize);
            (&mut src).take(want).read_to_end(out)?;
            if (out.len() as u64) < want {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(n > stop)
        }
        Framing::Chunked => loop {
            let line = src.line()?;
            let size = u64::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // trailers, up to the empty line
                while !src.line()?.is_empty() {}
                return Ok(false);
            }
            if out.len() as u64 + size > MAX_BODY {
                return Err(std::io::Error::other("body too large"));
            }
            let room = stop - out.len() as u64;
            let take = size.min(room);
            let before = out.len();
            (&mut src).take(take).read_to_end(out)?;
            if ((out.len() - before) as u64) < take {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if size > room {
                return Ok(true);
            }
            src.line()?; // CRLF after the chunk data
        },
    }
}

fn fault_resp(code: u16) -> Resp {
    let name = match code {
        429 => "TOOMANYREQUESTS",
        500 => "UNKNOWN",
        503 => "UNAVAILABLE",
        _ => "FAULT",
    };
    Resp::error(code, name, "injected failure")
}

/// Takes one use of the first `upload_status` fault matching the request; returns its code.
fn take_upload_status(st: &mut State, method: &str, repo: &str, key: Option<&str>) -> Option<u16> {
    let f = st.upload_status.iter_mut().find(|f| {
        f.times > 0
            && (f.method == "*" || f.method == method)
            && (f.key == "*" || f.key == repo || Some(f.key.as_str()) == key)
    })?;
    if f.times != u32::MAX {
        f.times -= 1;
    }
    Some(f.code)
}

/// The cut to apply to an upload body of `len` bytes (None: unknown, chunked) starting at
/// session offset `start`: the number of body bytes to read before cutting. Takes one use
/// of the fault when the length is known (else the caller does via `take_cut`).
fn plan_cut(
    st: &mut State,
    method: &str,
    start: u64,
    len: Option<u64>,
) -> Option<(usize, u64, bool)> {
    for (i, c) in st.cuts.iter_mut().enumerate() {
        if c.times == 0 || !(c.method == "*" || c.method == method) {
            continue;
        }
        let after = if c.at_offset {
            c.after.saturating_sub(start)
        } else {
            c.after
        };
        match len {
            Some(n) if n > after => {
                if c.times != u32::MAX {
                    c.times -= 1;
                }
                return Some((i, after, c.stall));
            }
            Some(_) => continue,
            None => return Some((i, after, c.stall)),
        }
    }
    None
}

fn take_cut(st: &mut State, i: usize) {
    if let Some(c) = st.cuts.get_mut(i)
        && c.times != u32::MAX
        && c.times > 0
    {
        c.times -= 1;
    }
}

impl Resp {
    /// No body, no Content-Type.
    fn empty(status: u16) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Arc::new(Vec::new()),
            range: (0, 0),
            head: false,
            cut: None,
            stall: None,
        }
    }
}

/// `0-<end>` as distribution reports it (`0-0` for an empty session too).
fn upload_range(size: usize) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// Answers POST/PATCH/PUT/DELETE (and GET of an upload session). `None`: the connection is
/// to be cut without an answer.
fn handle_write(
    req: &Request,
    stream: &mut TcpStream,
    shared: &Shared,
    info: &mut WriteInfo,
) -> Option<Resp> {
    let port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    if req
        .header("Expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut resp = write_inner(req, stream, shared, info, port)?;
    resp.headers.push((
        "Docker-Distribution-Api-Version".into(),
        "registry/2.0".into(),
    ));
    Some(resp)
}

fn write_inner(
    req: &Request,
    stream: &mut TcpStream,
    shared: &Shared,
    info: &mut WriteInfo,
    port: u16,
) -> Option<Resp> {
    // An answer that does not need the body: read (and drop) the body first, so the
    // client gets to read the answer instead of a broken pipe.
    let drain = |stream: &mut TcpStream, info: &mut WriteInfo, r: Resp| -> Option<Resp> {
        match read_body(stream, req, None) {
            Ok((b, _)) => info.body_received = b.len() as u64,
            Err(_) => {
                return Some(Resp::error(
                    400,
                    "BAD_BODY",
                    "could not read the request body",
                ));
            }
        }
        Some(r)
    };
    let Some(rest) = req.path.strip_prefix("/v2/") else {
        return drain(
            stream,
            info,
            Resp::error(404, "NOT_FOUND", "no such endpoint"),
        );
    };
    let method = req.method.as_str();
    enum Target<'a> {
        Start,
        Session(&'a str),
        Manifest(&'a str),
    }
    let (repo, target) = if let Some(i) = rest.find("/blobs/uploads") {
        let after = rest[i + "/blobs/uploads".len()..].trim_start_matches('/');
        let t = if after.is_empty() {
            Target::Start
        } else {
            Target::Session(after)
        };
        (&rest[..i], t)
    } else if let Some(i) = rest.rfind("/manifests/") {
        (
            &rest[..i],
            Target::Manifest(&rest[i + "/manifests/".len()..]),
        )
    } else {
        return drain(
            stream,
            info,
            Resp::error(405, "UNSUPPORTED", "method not allowed"),
        );
    };
    let allowed = match target {
        Target::Start => method == "POST",
        Target::Session(_) => matches!(method, "GET" | "PATCH" | "PUT" | "DELETE"),
        Target::Manifest(_) => method == "PUT",
    };
    if !allowed {
        return drain(
            stream,
            info,
            Resp::error(405, "UNSUPPORTED", "method not allowed"),
        );
    }
    if let Target::Session(u) = target {
        info.upload = Some(u.to_string());
    }
    let location = |st: &State, path: String| -> String {
        if st.absolute_locations {
            format!("http://127.0.0.1:{port}{path}")
        } else {
            path
        }
    };
    // The digest this request names, for upload_status keys.
    let key: Option<String> = match target {
        Target::Start => req
            .query
            .iter()
            .find(|(k, _)| k == "mount" || k == "digest")
            .map(|(_, v)| v.clone()),
        Target::Session(_) => req
            .query
            .iter()
            .find(|(k, _)| k == "digest")
            .map(|(_, v)| v.clone()),
        Target::Manifest(r) => Some(r.to_string()),
    };
    {
        let mut st = shared.lock();
        if let AuthResult::Challenge(r) = check_auth(req, &st, port, Some(repo)) {
            drop(st);
            return drain(stream, info, r);
        }
        if let Some(code) = take_upload_status(&mut st, method, repo, key.as_deref()) {
            drop(st);
            return drain(stream, info, fault_resp(code));
        }
    }

    match target {
        Target::Start => {
            let q = |k: &str| {
                req.query
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
            };
            if let Some(d) = q("mount") {
                let from = q("from").unwrap_or_default();
                let mut st = shared.lock();
                let data = st
                    .repos
                    .get(&from)
                    .and_then(|r| r.blobs.get(&d))
                    .cloned()
                    .filter(|_| !st.no_mounts);
                if let Some(data) = data {
                    st.repos
                        .entry(repo.into())
                        .or_default()
                        .blobs
                        .insert(d.clone(), data);
                    let loc = location(&st, format!("/v2/{repo}/blobs/{d}"));
                    drop(st);
                    let r = Resp::empty(201)
                        .header("Location", &loc)
                        .header("Docker-Content-Digest", &d);
                    return drain(stream, info, r);
                }
                // not mountable: a fresh upload (below)
            }
            if let Some(d) = q("digest") {
                // Monolithic single POST.
                let len = match framing(req) {
                    Framing::Length(n) => Some(n),
                    Framing::Empty => Some(0),
                    Framing::Chunked => None,
                };
                let cut = plan_cut(&mut shared.lock(), "POST", 0, len);
                let (body, cut_now) = match read_body(stream, req, cut.map(|c| c.1)) {
                    Ok(b) => b,
                    Err(_) => return None,
                };
                info.body_received = body.len() as u64;
                if cut_now {
                    if len.is_none() {
                        take_cut(&mut shared.lock(), cut.unwrap().0);
                    }
                    info.cut = true;
                    return None;
                }
                if sha256_digest(&body) != d {
                    return Some(Resp::error(
                        400,
                        "DIGEST_INVALID",
                        "provided digest did not match uploaded content",
                    ));
                }
                let mut st = shared.lock();
                st.repos
                    .entry(repo.into())
                    .or_default()
                    .blobs
                    .insert(d.clone(), Arc::new(body));
                let loc = location(&st, format!("/v2/{repo}/blobs/{d}"));
                return Some(
                    Resp::empty(201)
                        .header("Location", &loc)
                        .header("Docker-Content-Digest", &d),
                );
            }
            let mut st = shared.lock();
            st.upload_seq += 1;
            let uuid = format!(
                "{:08x}-fake-{:04}",
                rand_u64(st.upload_seq) as u32,
                st.upload_seq
            );
            st.repos.entry(repo.into()).or_default();
            st.uploads.insert(
                uuid.clone(),
                Upload {
                    repo: repo.into(),
                    data: Vec::new(),
                    state: 1,
                },
            );
            let loc = location(&st, format!("/v2/{repo}/blobs/uploads/{uuid}?_state=1"));
            drop(st);
            info.upload = Some(uuid.clone());
            drain(
                stream,
                info,
                Resp::empty(202)
                    .header("Location", &loc)
                    .header("Docker-Upload-UUID", &uuid)
                    .header("Range", "0-0"),
            )
        }
        Target::Session(uuid) => {
            let session_resp = |st: &mut State, status: u16| -> Resp {
                let up = st.uploads.get_mut(uuid).unwrap();
                up.state += 1;
                let (n, size) = (up.state, up.data.len());
                let loc = location(st, format!("/v2/{repo}/blobs/uploads/{uuid}?_state={n}"));
                Resp::empty(status)
                    .header("Location", &loc)
                    .header("Docker-Upload-UUID", uuid)
                    .header("Range", &upload_range(size))
            };
            let start = {
                let mut st = shared.lock();
                let Some(up) = st.uploads.get(uuid) else {
                    drop(st);
                    return drain(
                        stream,
                        info,
                        Resp::error(
                            404,
                            "BLOB_UPLOAD_UNKNOWN",
                            "blob upload unknown to registry",
                        ),
                    );
                };
                if up.repo != repo || !req.query.iter().any(|(k, _)| k == "_state") {
                    drop(st);
                    return drain(
                        stream,
                        info,
                        Resp::error(
                            400,
                            "BLOB_UPLOAD_INVALID",
                            "blob upload invalid (wrong repository or no _state)",
                        ),
                    );
                }
                let size = up.data.len() as u64;
                match method {
                    "GET" => return Some(session_resp(&mut st, 204)),
                    "DELETE" => {
                        st.uploads.remove(uuid);
                        drop(st);
                        return drain(stream, info, Resp::empty(204));
                    }
                    _ => {}
                }
                if let Some(cr) = req.header("Content-Range") {
                    let Some((s, e)) = parse_content_range(cr) else {
                        drop(st);
                        return drain(
                            stream,
                            info,
                            Resp::error(
                                416,
                                "RANGE_INVALID",
                                "invalid content range (want START-END)",
                            ),
                        );
                    };
                    if s != size || s > e {
                        // As distribution: the error only, no Range or Location (the
                        // client is to ask with a GET where the upload stands).
                        drop(st);
                        let body = serde_json::json!({"errors": [{"code": "RANGE_INVALID", "message": "invalid content range", "detail": format!("start {s} != upload size {size}")}]});
                        let r =
                            Resp::new(416, "application/json", serde_json::to_vec(&body).unwrap());
                        return drain(stream, info, r);
                    }
                    if let Framing::Length(n) = framing(req)
                        && n != e - s + 1
                    {
                        drop(st);
                        return drain(
                            stream,
                            info,
                            Resp::error(
                                400,
                                "SIZE_INVALID",
                                "Content-Range does not match Content-Length",
                            ),
                        );
                    }
                }
                size
            };
            if method == "PUT" && !req.query.iter().any(|(k, _)| k == "digest") {
                return drain(
                    stream,
                    info,
                    Resp::error(400, "DIGEST_INVALID", "no digest given"),
                );
            }
            let len = match framing(req) {
                Framing::Length(n) => Some(n),
                Framing::Empty => Some(0),
                Framing::Chunked => None,
            };
            let cut = plan_cut(&mut shared.lock(), method, start, len);
            let mut body = Vec::new();
            let read = read_body_into(stream, req, cut.map(|c| c.1), &mut body);
            info.body_received = body.len() as u64;
            let mut st = shared.lock();
            let Some(up) = st.uploads.get_mut(uuid) else {
                return Some(Resp::error(
                    404,
                    "BLOB_UPLOAD_UNKNOWN",
                    "blob upload unknown to registry",
                ));
            };
            // What arrived stays in the session, as with a registry streaming to storage,
            // also when the client went away in the middle of its body (no answer then).
            up.data.extend_from_slice(&body);
            let Ok(cut_now) = read else {
                return None;
            };
            if cut_now {
                let (i, _, stall) = cut.unwrap();
                if len.is_none() {
                    take_cut(&mut st, i);
                }
                drop(st);
                info.cut = true;
                if stall {
                    let begin = Instant::now();
                    while !shared.stop.load(Ordering::SeqCst)
                        && !shared.unstall.load(Ordering::SeqCst)
                        && begin.elapsed() < STALL_LIMIT
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                return None;
            }
            if method == "PATCH" {
                return Some(session_resp(&mut st, 202));
            }
            // PUT ?digest=
            let d = key.unwrap_or_default();
            if sha256_digest(&up.data) != d {
                return Some(Resp::error(
                    400,
                    "DIGEST_INVALID",
                    "provided digest did not match uploaded content",
                ));
            }
            let data = st.uploads.remove(uuid).unwrap().data;
            st.finished.insert(uuid.to_string(), d.clone());
            st.repos
                .entry(repo.into())
                .or_default()
                .blobs
                .insert(d.clone(), Arc::new(data));
            let loc = location(&st, format!("/v2/{repo}/blobs/{d}"));
            Some(
                Resp::empty(201)
                    .header("Location", &loc)
                    .header("Docker-Content-Digest", &d),
            )
        }
        Target::Manifest(reference) => {
            let (body, _) = match framing(req) {
                Framing::Length(n) if n > MAX_MANIFEST => {
                    return drain(
                        stream,
                        info,
                        Resp::error(413, "SIZE_INVALID", "manifest too large"),
                    );
                }
                _ => match read_body(stream, req, Some(MAX_MANIFEST + 1)) {
                    Ok(b) => b,
                    Err(_) => return None,
                },
            };
            info.body_received = body.len() as u64;
            if body.len() as u64 > MAX_MANIFEST {
                return Some(Resp::error(413, "SIZE_INVALID", "manifest too large"));
            }
            let digest = sha256_digest(&body);
            let mut st = shared.lock();
            let keys = [
                "*".to_string(),
                repo.to_string(),
                format!("{repo}:{reference}"),
                digest.clone(),
            ];
            if let Some(f) = st
                .refusals
                .iter_mut()
                .find(|f| f.times > 0 && keys.contains(&f.key))
            {
                if f.times != u32::MAX {
                    f.times -= 1;
                }
                return Some(Resp::error(f.status, &f.code.clone(), &f.message.clone()));
            }
            let invalid = |m: &str| Some(Resp::error(400, "MANIFEST_INVALID", m));
            if reference.starts_with("sha256:") && reference != digest {
                return Some(Resp::error(
                    400,
                    "DIGEST_INVALID",
                    "provided digest did not match uploaded content",
                ));
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return invalid("manifest invalid: not JSON");
            };
            let body_mt = v["mediaType"].as_str().map(str::to_string);
            let ct = req
                .header("Content-Type")
                .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
                .filter(|c| !c.is_empty());
            let Some(mt) = ct.clone().or(body_mt.clone()) else {
                return invalid("manifest invalid: no Content-Type and no mediaType");
            };
            if let (Some(c), Some(b)) = (&ct, &body_mt)
                && c != b
            {
                return invalid(&format!(
                    "manifest invalid: Content-Type {c} but mediaType {b}"
                ));
            }
            let r = st.repos.entry(repo.into()).or_default();
            let mut missing = Vec::new();
            if let Some(children) = v["manifests"].as_array() {
                for c in children {
                    let d = c["digest"].as_str().unwrap_or("");
                    if !r.manifests.contains_key(d) {
                        missing.push(d.to_string());
                    }
                }
            } else {
                let mut blobs: Vec<&serde_json::Value> = vec![&v["config"]];
                blobs.extend(v["layers"].as_array().into_iter().flatten());
                for b in blobs {
                    let d = b["digest"].as_str().unwrap_or("");
                    if !r.blobs.contains_key(d) {
                        missing.push(d.to_string());
                    }
                }
            }
            if let Some(m) = missing.first() {
                return Some(Resp::error(
                    400,
                    "MANIFEST_BLOB_UNKNOWN",
                    &format!("blob unknown to registry: {m}"),
                ));
            }
            r.manifests.insert(digest.clone(), (mt, body));
            if !reference.starts_with("sha256:") {
                r.tags.insert(reference.to_string(), digest.clone());
            }
            let loc = location(&st, format!("/v2/{repo}/manifests/{digest}"));
            Some(
                Resp::empty(201)
                    .header("Location", &loc)
                    .header("Docker-Content-Digest", &digest),
            )
        }
    }
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

    /// (status, lowercased headers, body)
    type Answer = (u16, Vec<(String, String)>, Vec<u8>);

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
        let end = find(&all, b"\r\n\r\n")?;
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
        Some((status, headers, all[end + 4..].to_vec()))
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
        let l = super::super::fixtures::layout();
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
}

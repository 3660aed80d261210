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

mod data;
mod http;
mod pull;
mod write;
#[cfg(test)]
mod selftest;

pub use data::{make_layer, noise, sha256_digest};
use data::rand_u64;
use http::*;
use pull::*;
use write::*;

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
    /// Serve the OCI 1.1 referrers API and answer `OCI-Subject` to manifests with `subject`.
    referrers_api: bool,
    /// Referrers per page of the API's answer (0: all in one), the rest behind `Link`.
    referrers_page: usize,
    /// Upload `PUT`s that store their blob and then close without an answer (`lose_put_answers`).
    lost_put_answers: u32,
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
    /// The next `times` upload `PUT`s that complete a blob store it and end the session, then
    /// close the connection without an answer (the answer lost on the way back).
    pub fn lose_put_answers(&self, times: u32) {
        self.shared.lock().lost_put_answers = times;
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

    /// Offer the OCI 1.1 referrers API (`GET /v2/<name>/referrers/<digest>`, `artifactType`
    /// filter, `OCI-Subject` on manifest puts), as distribution 2.8 does not.
    pub fn set_referrers_api(&self, on: bool) {
        self.shared.lock().referrers_api = on;
    }

    /// Pages of `n` referrers in the API's answers, each pointing at the next with
    /// `Link: </v2/<name>/referrers/<digest>?last=<digest>>; rel="next"`.
    pub fn set_referrers_page(&self, n: usize) {
        self.shared.lock().referrers_page = n;
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

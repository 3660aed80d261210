//! The registry source: OCI distribution API v2 over HTTP(S) with basic/bearer auth, retries,
//! size-capped manifests and resumable, verified blob downloads.
pub mod auth;
mod push;
pub mod retry;
pub mod sink;
pub mod source;
mod tls;

pub use push::{BlobOutcome, UploadState, CHUNKED_FROM};

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ureq::http::{Response, StatusCode};
use ureq::Body;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{media, Descriptor, Manifest};
use crate::limits;
use crate::reference::Reference;
use crate::store::PartialBlob;
use auth::{parse_challenge, Challenge, CredentialSource, Credentials};
use retry::RetryPolicy;

/// How to reach registries: credentials, trust, retry policy.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    pub creds: CredentialSource,
    pub cert_dir: Option<PathBuf>,
    pub tls_verify: bool,
    /// Attempts after a retryable failure (429, 5xx, dropped connections) that followed no
    /// progress; see `retry::RetryPolicy`.
    pub retries: u32,
    pub retry_base: Duration,
    /// `--retry-timeout`: how long one call or blob transfer may keep failing, progress or not.
    pub retry_timeout: Option<Duration>,
    /// A connection silent this long (no byte read or written) counts as cut.
    pub silence: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            creds: CredentialSource::default(),
            cert_dir: None,
            tls_verify: true,
            retries: 5,
            retry_base: Duration::from_millis(250),
            retry_timeout: None,
            silence: DEFAULT_SILENCE,
        }
    }
}

/// Long enough for a registry that is slow to acknowledge a big upload, short enough that a
/// connection a middlebox silently dropped is noticed and resumed within a minute.
pub const DEFAULT_SILENCE: Duration = Duration::from_secs(30);

/// What the retry policy did in a run, for the report.
#[derive(Debug, Default)]
struct Stats {
    retries: AtomicU64,
    /// Bytes not transferred again because a download or upload resumed where it stood.
    resumed: AtomicU64,
}

/// One registry endpoint after its `/v2/` ping: scheme, agent and auth state.
struct Host {
    name: String,
    base: String,
    agent: ureq::Agent,
    challenge: Option<Challenge>,
    tokens: Mutex<HashMap<String, String>>,
}

/// A client for any number of registries; safe to share across download threads.
pub struct Registry {
    opts: RegistryOptions,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    stats: Stats,
}

const USER_AGENT: &str = concat!("ocibundle/", env!("CARGO_PKG_VERSION"));
const BUF: usize = 256 << 10;

fn registry_err(what: &str, message: impl Into<String>, retryable: bool) -> Error {
    Error::Registry { what: what.to_string(), message: message.into(), retryable }
}

/// The target of a `Link: <URL>; rel="next"` header (pagination), if it has one.
fn next_link(v: &str) -> Option<String> {
    v.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params.split(';').any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next");
        is_next.then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

/// Turns a transport error into ours, deciding whether a retry may help.
fn transport_err(what: &str, e: ureq::Error) -> Error {
    const TLS_HINT: &str = "(for a private CA use --cert-dir DIR; --tls-verify=false to skip verification)";
    // rustls reports handshake failures as InvalidData io errors: retrying cannot help.
    let tls_io = matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData);
    let retryable = !tls_io && matches!(e, ureq::Error::Io(_) | ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::Protocol(_));
    let msg = match &e {
        ureq::Error::Rustls(t) => format!("TLS error: {t} {TLS_HINT}"),
        ureq::Error::Io(io) if tls_io => format!("TLS error: {io} {TLS_HINT}"),
        ureq::Error::HostNotFound => "host not found".to_string(),
        other => other.to_string(),
    };
    registry_err(what, msg, retryable)
}

/// The registry's own explanation of an error status, from its JSON error body if any.
fn status_message(resp: &mut Response<Body>) -> String {
    let status = resp.status();
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let body = resp.body_mut().with_config().limit(64 << 10).read_to_vec().unwrap_or_default();
    let detail = serde_json::from_slice::<Errs>(&body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .map(|e| format!(": {} ({})", e.message, e.code))
        .unwrap_or_default();
    format!("HTTP {}{}", status.as_u16(), detail)
}

fn retry_after(resp: &Response<Body>) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(|s| Duration::from_secs(s.min(10)))
}

fn is_retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

impl Registry {
    pub fn new(opts: RegistryOptions) -> Registry {
        Registry { opts, hosts: Mutex::new(HashMap::new()), stats: Stats::default() }
    }

    fn policy(&self) -> RetryPolicy<'_> {
        RetryPolicy { retries: self.opts.retries, base: self.opts.retry_base, give_up_after: self.opts.retry_timeout, tally: Some(&self.stats.retries) }
    }

    /// Attempts retried so far, over every call of this client.
    pub fn retries(&self) -> u64 {
        self.stats.retries.load(Ordering::Relaxed)
    }

    /// Bytes so far not transferred again because a transfer resumed where it stood.
    pub fn bytes_resumed(&self) -> u64 {
        self.stats.resumed.load(Ordering::Relaxed)
    }

    fn count_resumed(&self, n: u64) {
        self.stats.resumed.fetch_add(n, Ordering::Relaxed);
    }

    /// Runs `op` under the retry policy, for a call that has no progress of its own.
    fn retry<T>(&self, op: impl FnMut() -> Result<T, retry::Failure>) -> Result<T> {
        self.policy().run(op, || 0)
    }

    fn agent(&self, host: &str, verify: bool) -> Result<ureq::Agent> {
        use ureq::unversioned::transport::{ConnectProxyConnector, Connector as _, TcpConnector};
        let tls = tls::client_config(host, self.opts.cert_dir.as_deref(), verify)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(USER_AGENT)
            .timeout_connect(Some(Duration::from_secs(30)))
            // Silence, not slowness, is what marks a dead connection: the clock restarts with
            // every byte, so a slow link is never cut while a stalled one is within `silence`.
            .timeout_per_read(Some(self.opts.silence))
            .timeout_per_write(Some(self.opts.silence))
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .max_idle_connections_per_host(16)
            .build();
        let connector = ().chain(ConnectProxyConnector::default()).chain(TcpConnector::default()).chain(tls::TlsConnector { config: tls });
        Ok(ureq::Agent::with_parts(config, connector, ureq::unversioned::resolver::DefaultResolver::default()))
    }

    /// The endpoint for a reference's registry, pinged once per run. HTTPS, verified; loopback
    /// registries and `--tls-verify=false` may fall back to plain HTTP, as docker does.
    fn host(&self, r: &Reference) -> Result<Arc<Host>> {
        let name = r.api_host().to_string();
        if let Some(h) = self.hosts.lock().unwrap().get(&name) {
            return Ok(h.clone());
        }
        let what = format!("{r}: registry {}", r.registry);
        let allow_http = r.is_loopback() || !self.opts.tls_verify;
        let agent = self.agent(&name, self.opts.tls_verify)?;
        let host = self.retry(|| {
            let mut first_err = None;
            for scheme in if allow_http { &["https", "http"][..] } else { &["https"][..] } {
                let base = format!("{scheme}://{name}");
                match agent.get(format!("{base}/v2/")).call() {
                    Ok(mut resp) => {
                        let status = resp.status();
                        if status == StatusCode::OK || status == StatusCode::UNAUTHORIZED {
                            let challenge = resp.headers().get_all("www-authenticate").iter().filter_map(|v| v.to_str().ok()).find_map(parse_challenge);
                            return Ok(Host { name: name.clone(), base, agent: agent.clone(), challenge, tokens: Mutex::new(HashMap::new()) });
                        }
                        let e = registry_err(&what, format!("{base}/v2/ answered {}", status_message(&mut resp)), is_retryable_status(status));
                        first_err.get_or_insert((e, retry_after(&resp)));
                    }
                    Err(e) => {
                        first_err.get_or_insert((transport_err(&what, e), None));
                    }
                }
            }
            Err(first_err.expect("one scheme tried"))
        })?;
        let host = Arc::new(host);
        self.hosts.lock().unwrap().insert(name, host.clone());
        Ok(host)
    }

    fn credentials(&self, r: &Reference) -> Result<Option<Credentials>> {
        self.opts.creds.lookup(&r.registry, &r.repository)
    }

    /// A bearer token for `scope` (space-separated scopes, e.g. `repository:a:pull,push
    /// repository:b:pull`), from the cache unless `refresh`. `r` names the image in errors and
    /// picks the credentials.
    fn token(&self, host: &Host, r: &Reference, realm: &str, service: Option<&str>, scope: &str, refresh: bool) -> Result<String> {
        if !refresh
            && let Some(t) = host.tokens.lock().unwrap().get(scope) {
            return Ok(t.clone());
        }
        let what = format!("{r}: token from {realm}");
        let creds = self.credentials(r)?;
        let token = self.retry(|| {
            let mut req = host.agent.get(realm);
            for sc in scope.split(' ') {
                req = req.query("scope", sc);
            }
            if let Some(s) = service {
                req = req.query("service", s);
            }
            if let Some(c) = &creds {
                req = req.header("Authorization", c.basic_header());
            }
            let mut resp = req.call().map_err(|e| (transport_err(&what, e), None))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let why = if creds.is_some() { "credentials rejected by the token service" } else { "authentication required: pass --creds or --authfile" };
                return Err((registry_err(&r.to_string(), format!("{why} ({})", status_message(&mut resp)), false), None));
            }
            if !status.is_success() {
                let wait = retry_after(&resp);
                return Err((registry_err(&what, status_message(&mut resp), is_retryable_status(status)), wait));
            }
            #[derive(serde::Deserialize)]
            struct Tok {
                #[serde(default)]
                token: Option<String>,
                #[serde(default)]
                access_token: Option<String>,
            }
            let body = resp.body_mut().with_config().limit(1 << 20).read_to_vec().map_err(|e| (transport_err(&what, e), None))?;
            let t: Tok = serde_json::from_slice(&body).map_err(|e| (registry_err(&what, format!("unreadable token answer: {e}"), false), None))?;
            t.token.or(t.access_token).filter(|t| !t.is_empty()).ok_or_else(|| (registry_err(&what, "no token in answer", false), None))
        })?;
        host.tokens.lock().unwrap().insert(scope.to_string(), token.clone());
        Ok(token)
    }

    fn auth_header(&self, host: &Host, r: &Reference, scope: &str, refresh: bool) -> Result<Option<String>> {
        match &host.challenge {
            Some(Challenge::Bearer { realm, service, .. }) => Ok(Some(format!("Bearer {}", self.token(host, r, realm, service.as_deref(), scope, refresh)?))),
            Some(Challenge::Basic) | None => Ok(self.credentials(r)?.map(|c| c.basic_header())),
        }
    }

    fn get(&self, host: &Host, r: &Reference, url: &str, what: &str, headers: &[(&str, String)]) -> Result<Response<Body>, (Error, Option<Duration>)> {
        let scope = format!("repository:{}:pull", r.repository);
        self.request(host, r, "GET", url, what, headers, &scope, None)
    }

    /// One request with auth (re-authenticating once on a 401 when there is no body to resend).
    /// Transport errors and retryable statuses come back as retryable errors, other error
    /// statuses as final ones carrying the registry's own error code and message.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        host: &Host,
        r: &Reference,
        method: &str,
        url: &str,
        what: &str,
        headers: &[(&str, String)],
        scope: &str,
        mut body: Option<(&mut dyn Read, u64)>,
    ) -> Result<Response<Body>, (Error, Option<Duration>)> {
        let mut refreshed = false;
        loop {
            let mut req = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(a) = self.auth_header(host, r, scope, refreshed).map_err(|e| (e, None))? {
                req = req.header("Authorization", a);
            }
            let sent = match body.as_mut() {
                Some((reader, len)) => {
                    let mut req = req.header("Content-Length", len.to_string());
                    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                        req = req.header("Content-Type", "application/octet-stream");
                    }
                    let req = req.body(ureq::SendBody::from_reader(&mut **reader)).map_err(|e| (Error::Other(format!("{what}: {e}")), None))?;
                    host.agent.run(req)
                }
                None => {
                    let req = req.body(()).map_err(|e| (Error::Other(format!("{what}: {e}")), None))?;
                    host.agent.run(req)
                }
            };
            let mut resp = sent.map_err(|e| (transport_err(what, e), None))?;
            let status = resp.status();
            if status.is_success() || status == StatusCode::PARTIAL_CONTENT || status == StatusCode::RANGE_NOT_SATISFIABLE {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed && matches!(host.challenge, Some(Challenge::Bearer { .. })) {
                refreshed = true;
                if body.is_none() {
                    continue;
                }
                // The body is spent: let the caller's retry start over with a fresh token.
                let _ = self.auth_header(host, r, scope, true);
                return Err((registry_err(what, "token expired; retrying", true), None));
            }
            let msg = status_message(&mut resp);
            let msg = match status.as_u16() {
                401 | 403 => {
                    let has = self.credentials(r).map_err(|e| (e, None))?.is_some();
                    let why = match (status.as_u16(), has) {
                        (401, false) => format!("{} requires authentication: pass --creds or --authfile", host.name),
                        (401, true) => format!("credentials rejected by {}", host.name),
                        _ => format!("denied by {}", host.name),
                    };
                    format!("{why} ({msg})")
                }
                404 => format!("not found ({msg})"),
                _ => msg,
            };
            let wait = retry_after(&resp);
            return Err((registry_err(what, msg, is_retryable_status(status)), wait));
        }
    }

    /// Fetches a manifest or index by tag or digest, byte-exact and size-capped. A digest-pinned
    /// request, and any `Docker-Content-Digest` header, must match the bytes.
    pub fn manifest(&self, r: &Reference, reference: &str) -> Result<Manifest> {
        let host = self.host(r)?;
        let what = if reference.starts_with("sha256:") && r.digest.as_ref().is_none_or(|d| d.to_string() != reference) {
            format!("{r}: manifest {reference}")
        } else {
            r.to_string()
        };
        let url = format!("{}/v2/{}/manifests/{}", host.base, r.repository, reference);
        let (bytes, content_type, header_digest) = self.retry(|| {
            let mut resp = self.get(&host, r, &url, &what, &[("Accept", media::ACCEPT.to_string())])?;
            if resp.body().content_length().is_some_and(|n| n > limits::MANIFEST) {
                return Err((Error::TooLarge { what: format!("{what}: manifest"), limit: limits::MANIFEST }, None));
            }
            let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
            let hd = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
            let bytes = limits::read_capped(resp.body_mut().as_reader(), limits::MANIFEST, &format!("{what}: manifest"), |e| registry_err(&what, format!("reading manifest: {e}"), true))
                .map_err(|e| (e, None))?;
            Ok((bytes, ct, hd))
        })?;
        let m = Manifest::parse(bytes, content_type.as_deref(), &what)?;
        if let Ok(want) = reference.parse::<Digest>()
            && m.digest != want {
            return Err(Error::DigestMismatch { what: format!("{what}: manifest"), expected: want, found: m.digest });
        }
        if let Some(Ok(hd)) = header_digest.as_deref().filter(|h| h.starts_with("sha256:")).map(str::parse::<Digest>)
            && hd != m.digest {
            return Err(Error::DigestMismatch { what: format!("{what}: manifest (Docker-Content-Digest)"), expected: hd, found: m.digest });
        }
        Ok(m)
    }

    /// A manifest by tag or digest, or `None` when the registry has none under that name: for
    /// names that most often do not exist, such as cosign's `sha256-<hex>.sig` tags. Asked with
    /// `HEAD` first (a `GET` of a manifest counts against some registries' pull limits), then
    /// fetched by the digest the registry named, so the bytes are checked against it.
    pub fn manifest_if_any(&self, r: &Reference, reference: &str) -> Result<Option<Manifest>> {
        let host = self.host(r)?;
        let what = format!("{r}: manifest {reference}");
        let url = format!("{}/v2/{}/manifests/{reference}", host.base, r.repository);
        let scope = format!("repository:{}:pull", r.repository);
        let found = self.retry(|| match self.request(&host, r, "HEAD", &url, &what, &[("Accept", media::ACCEPT.to_string())], &scope, None) {
            Ok(resp) => Ok(Some(resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|d| d.parse::<Digest>().ok()))),
            Err((Error::Registry { message, .. }, _)) if message.starts_with("not found") => Ok(None),
            Err(e) => Err(e),
        })?;
        match found {
            None => Ok(None),
            // A registry that names no digest on HEAD: the tag itself, checked as it comes.
            Some(None) => self.manifest(r, reference).map(Some),
            Some(Some(d)) => self.manifest(r, &d.to_string()).map(Some),
        }
    }

    /// The OCI 1.1 referrers API: the descriptors of the manifests whose `subject` is
    /// `subject` (`GET /v2/<name>/referrers/<digest>`, filtered by `artifact_type` where the
    /// registry honours it; pages followed through `Link: <…>; rel="next"` on the same host, at
    /// most `REFERRER_PAGES`), or `None` when the registry does not offer the API (404).
    pub fn referrers(&self, r: &Reference, subject: &Digest, artifact_type: Option<&str>) -> Result<Option<Vec<Descriptor>>> {
        const REFERRER_PAGES: usize = 64;
        let host = self.host(r)?;
        let what = format!("{r}: referrers of {subject}");
        let mut url = format!("{}/v2/{}/referrers/{subject}", host.base, r.repository);
        if let Some(t) = artifact_type {
            url.push_str(&format!("?artifactType={}", t.replace('+', "%2B").replace('/', "%2F")));
        }
        let mut out: Vec<Descriptor> = Vec::new();
        for page in 0.. {
            if page == REFERRER_PAGES {
                return Err(Error::Other(format!("{what}: more than {REFERRER_PAGES} pages of referrers")));
            }
            let got = self.retry(|| {
                let mut resp = match self.get(&host, r, &url, &what, &[("Accept", media::OCI_INDEX.to_string())]) {
                    Ok(resp) => resp,
                    Err((Error::Registry { message, .. }, _)) if message.starts_with("not found") => return Ok(None),
                    Err(e) => return Err(e),
                };
                let next = resp.headers().get("link").and_then(|v| v.to_str().ok()).and_then(next_link);
                let bytes = limits::read_capped(resp.body_mut().as_reader(), limits::MANIFEST, &what, |e| registry_err(&what, format!("reading the referrers index: {e}"), true))
                    .map_err(|e| (e, None))?;
                Ok(Some((bytes, next)))
            })?;
            let Some((bytes, next)) = got else {
                // A 404 on a later page is a broken listing, not a registry without the API.
                return if page == 0 { Ok(None) } else { Err(Error::Other(format!("{what}: page {} of the listing is gone", page + 1))) };
            };
            let m = Manifest::parse(bytes, Some(media::OCI_INDEX), &what)?;
            let crate::image::ManifestKind::Index(children) = m.kind else {
                return Err(Error::Other(format!("{what}: the registry answered a {}, not an index", m.media_type)));
            };
            out.extend(children);
            match next {
                None => return Ok(Some(out)),
                Some(n) if n.starts_with('/') => url = format!("{}{n}", host.base),
                Some(n) if n.starts_with(&format!("{}/", host.base)) => url = n,
                Some(n) => return Err(Error::Other(format!("{what}: the next page is on another host ({}); not followed", crate::error::one_line(&n, 200)))),
            }
        }
        unreachable!("the loop returns")
    }

    /// Downloads a blob into its partial file, resuming from what the partial already holds
    /// (HTTP Range) after a dropped connection or an earlier run. The caller commits, which
    /// verifies digest and size. `progress` gets the count of each chunk written.
    pub fn download_blob(&self, r: &Reference, desc: &Descriptor, part: &mut PartialBlob, progress: &(dyn Fn(u64) + Sync), abort: &AtomicBool) -> Result<()> {
        let host = self.host(r)?;
        let what = format!("{r}: blob {}", desc.digest);
        let url = format!("{}/v2/{}/blobs/{}", host.base, r.repository, desc.digest);
        let mut buf = vec![0u8; BUF];
        // Every byte received counts as progress, also the bytes of an attempt that was cut.
        let received = std::sync::atomic::AtomicU64::new(0);
        self.policy().run(|| {
            let off = part.offset();
            if off == desc.size {
                return Ok(());
            }
            let headers: Vec<(&str, String)> = if off > 0 { vec![("Range", format!("bytes={off}-"))] } else { vec![] };
            let mut resp = self.get(&host, r, &url, &what, &headers)?;
            let status = resp.status();
            let resumed = match status {
                StatusCode::PARTIAL_CONTENT => {
                    let cr = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or("");
                    if !cr.starts_with(&format!("bytes {off}-")) {
                        part.restart().map_err(|e| (e, None))?;
                        return Err((registry_err(&what, format!("range answer {cr:?} does not start at {off}"), true), None));
                    }
                    self.count_resumed(off);
                    true
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    part.restart().map_err(|e| (e, None))?;
                    return Err((registry_err(&what, "range not satisfiable; restarting", true), None));
                }
                _ => false,
            };
            if !resumed && off > 0 {
                part.restart().map_err(|e| (e, None))?;
                progress(0);
            }
            let mut body = resp.body_mut().as_reader();
            loop {
                if crate::cancel::requested() {
                    part.flush().map_err(|e| (e, None))?;
                    return Err((Error::Interrupted, None));
                }
                if abort.load(Ordering::Relaxed) {
                    let _ = part.flush();
                    return Err((Error::Other(format!("{what}: cancelled")), None));
                }
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        part.flush().map_err(|e| (e, None))?;
                        let got = part.offset();
                        return Err((registry_err(&what, format!("connection lost after {got} of {} bytes: {e}", desc.size), true), None));
                    }
                };
                if part.offset() + n as u64 > desc.size {
                    return Err((registry_err(&what, format!("registry sent more than the {} bytes the manifest declares", desc.size), false), None));
                }
                part.writer().write_all(&buf[..n]).map_err(|e| (Error::Other(format!("{what}: writing to the store: {e}")), None))?;
                received.fetch_add(n as u64, Ordering::Relaxed);
                progress(n as u64);
            }
            if part.offset() != desc.size {
                part.flush().map_err(|e| (e, None))?;
                return Err((registry_err(&what, format!("connection closed after {} of {} bytes", part.offset(), desc.size), true), None));
            }
            Ok(())
        }, || received.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn link_headers_give_the_next_page() {
        assert_eq!(super::next_link(r#"</v2/a/referrers/sha256:1?last=x>; rel="next""#).as_deref(), Some("/v2/a/referrers/sha256:1?last=x"));
        assert_eq!(super::next_link(r#"<https://h/v2/p?n=1>; rel="prev", <https://h/v2/q?n=2>; rel="next""#).as_deref(), Some("https://h/v2/q?n=2"));
        assert_eq!(super::next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(super::next_link("garbage"), None);
    }
}

//! The registry as a sink: blob existence, cross-repository mounts, monolithic and chunked
//! uploads (resumed from the offset the registry reports, also after a restart), and
//! manifests put byte for byte.
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use ureq::http::StatusCode;

use super::{registry_err, Registry};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::reference::Reference;

/// Blobs at least this big go up with PATCH (resumable); smaller ones in one PUT.
pub const CHUNKED_FROM: u64 = 8 << 20;
/// The most one PATCH carries. Small chunks cost a request each and make the registry
/// re-read its upload file; one streamed PATCH per attempt is as fast as a PUT, and a cut
/// only means the next PATCH starts where the registry says it stands.
const CHUNK: u64 = 1 << 40;

/// What happened to one blob in one repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    Present,
    Mounted,
    Uploaded,
}

/// Where the URLs of unfinished chunked uploads are kept, so a restart resumes them.
#[derive(Debug, Clone)]
pub struct UploadState {
    pub dir: PathBuf,
}

impl UploadState {
    fn path(&self, r: &Reference, d: &Digest) -> PathBuf {
        let key = Digest::of(format!("{}/{}", r.registry, r.repository).as_bytes());
        self.dir.join(format!("{}-{}", &key.hex()[..16], d.hex()))
    }
    fn load(&self, r: &Reference, d: &Digest) -> Option<String> {
        std::fs::read_to_string(self.path(r, d)).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }
    fn save(&self, r: &Reference, d: &Digest, url: &str) {
        let _ = std::fs::create_dir_all(&self.dir);
        let p = self.path(r, d);
        let tmp = p.with_extension("tmp");
        if std::fs::write(&tmp, url).is_ok() {
            let _ = std::fs::rename(tmp, p);
        }
    }
    fn clear(&self, r: &Reference, d: &Digest) {
        let _ = std::fs::remove_file(self.path(r, d));
    }
}

type Attempt<T> = std::result::Result<T, (Error, Option<Duration>)>;

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// How many bytes an upload holds, from a `Range: 0-N` answer (N is the last byte held).
/// The distribution registry also answers `0-0` for an empty upload, so `0-0` counts as
/// nothing held: resending one byte is harmless, skipping one is not.
fn range_end(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let r = header(resp, "range")?;
    let end = r.trim().trim_start_matches("bytes=").split('-').nth(1)?.trim().parse::<u64>().ok()?;
    Some(if end == 0 { 0 } else { end + 1 })
}

impl Registry {
    fn push_scope(r: &Reference, from: Option<&str>) -> String {
        match from {
            Some(f) if f != r.repository => format!("repository:{}:pull,push repository:{f}:pull", r.repository),
            _ => format!("repository:{}:pull,push", r.repository),
        }
    }

    /// Resolves an upload `Location` (relative or absolute) against the registry.
    fn upload_url(base: &str, loc: &str, what: &str) -> Attempt<String> {
        if loc.starts_with('/') {
            Ok(format!("{base}{loc}"))
        } else if loc.starts_with(base) {
            Ok(loc.to_string())
        } else if loc.starts_with("http://") || loc.starts_with("https://") {
            Err((registry_err(what, format!("upload location {loc:?} is on another host; refusing to send data there"), false), None))
        } else {
            Err((registry_err(what, format!("unusable upload location {loc:?}"), false), None))
        }
    }

    fn with_digest(url: &str, d: &Digest) -> String {
        format!("{url}{}digest={d}", if url.contains('?') { '&' } else { '?' })
    }

    /// True if the repository already has the blob.
    pub fn blob_exists(&self, r: &Reference, d: &Digest) -> Result<bool> {
        let host = self.host(r)?;
        let what = format!("{r}: blob {d}");
        let scope = Self::push_scope(r, None);
        self.retry(|| self.has_blob(&host, r, d, &what, &scope))
    }

    /// One `HEAD` of a blob, for use inside a retried call.
    fn has_blob(&self, host: &super::Host, r: &Reference, d: &Digest, what: &str, scope: &str) -> Attempt<bool> {
        let url = format!("{}/v2/{}/blobs/{d}", host.base, r.repository);
        match self.request(host, r, "HEAD", &url, what, &[], scope, None) {
            Ok(_) => Ok(true),
            Err((Error::Registry { message, .. }, _)) if message.starts_with("not found") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Asks the registry to mount the blob from another repository of it; true if it did.
    pub fn mount_blob(&self, r: &Reference, d: &Digest, from: &str) -> Result<bool> {
        let host = self.host(r)?;
        let what = format!("{r}: blob {d} (mount from {from})");
        let url = format!("{}/v2/{}/blobs/uploads/?mount={d}&from={from}", host.base, r.repository);
        let scope = Self::push_scope(r, Some(from));
        let status = self.retry(|| {
            let resp = self.request(&host, r, "POST", &url, &what, &[("Content-Length", "0".into())], &scope, None)?;
            Ok(resp.status())
        })?;
        // 202 means the registry started a plain upload instead; it expires unused.
        Ok(status == StatusCode::CREATED)
    }

    fn start_upload(&self, host: &super::Host, r: &Reference, what: &str, scope: &str) -> Attempt<String> {
        let url = format!("{}/v2/{}/blobs/uploads/", host.base, r.repository);
        let resp = self.request(host, r, "POST", &url, what, &[("Content-Length", "0".into())], scope, None)?;
        let loc = header(&resp, "location").ok_or_else(|| (registry_err(what, "upload started without a Location", false), None))?;
        Self::upload_url(&host.base, &loc, what)
    }

    /// Uploads a blob. `open(offset)` gives its bytes from `offset` on. Small blobs go in one
    /// PUT; big ones in chunks, resumed after a cut from the offset the registry reports, and
    /// after a restart from the upload remembered in `state`. `progress` gets bytes sent.
    pub fn upload_blob<'s>(
        &self,
        r: &Reference,
        desc: &Descriptor,
        open: &(dyn Fn(u64) -> Result<Box<dyn Read + Send + 's>> + Sync),
        state: Option<&UploadState>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        let host = self.host(r)?;
        let what = format!("{r}: blob {}", desc.digest);
        let scope = Self::push_scope(r, None);
        if desc.size < CHUNKED_FROM {
            return self.retry(|| {
                let loc = self.start_upload(&host, r, &what, &scope)?;
                let mut body = open(0).map_err(|e| (e, None))?;
                let url = Self::with_digest(&loc, &desc.digest);
                self.request(&host, r, "PUT", &url, &what, &[], &scope, Some((&mut body, desc.size)))?;
                progress(desc.size);
                Ok(())
            });
        }
        // Chunked: (upload URL, bytes the registry holds).
        let mut session: Option<(String, u64)> = None;
        if let Some(url) = state.and_then(|s| s.load(r, &desc.digest))
            && let Ok(off) = self.upload_offset(&host, r, &url, &what, &scope) {
            session = Some((url, off));
        }
        // Bytes the registry acknowledged: progress, which keeps the retry budget full.
        let sent = std::sync::atomic::AtomicU64::new(0);
        // One request of the upload: Ok(true) when the blob is complete, Ok(false) after a chunk.
        let mut step = || -> Attempt<bool> {
            let (url, off) = match session.take() {
                Some(s) => s,
                None => {
                    let url = self.start_upload(&host, r, &what, &scope)?;
                    // Remembered at once: a restart resumes this upload, whatever happens.
                    if let Some(s) = state {
                        s.save(r, &desc.digest, &url);
                    }
                    (url, 0)
                }
            };
            session = Some((url.clone(), off));
            if off >= desc.size {
                let put = Self::with_digest(&url, &desc.digest);
                return match self.request(&host, r, "PUT", &put, &what, &[("Content-Length", "0".into())], &scope, None) {
                    Ok(_) => Ok(true),
                    // The session is gone: an earlier PUT most likely went through and only its
                    // answer was lost. Done if the registry has the blob; else start over.
                    Err((Error::Registry { message, .. }, _)) if message.starts_with("not found") => {
                        session = None;
                        if self.has_blob(&host, r, &desc.digest, &what, &scope)? {
                            Ok(true)
                        } else {
                            Err((registry_err(&what, "the upload session vanished before the blob was stored; starting over", true), None))
                        }
                    }
                    Err(e) => Err(e),
                };
            }
            if off > 0 {
                self.count_resumed(off);
            }
            let len = CHUNK.min(desc.size - off);
            let mut body = open(off).map_err(|e| (e, None))?;
            let mut chunk = (&mut body).take(len);
            let range = format!("{}-{}", off, off + len - 1);
            match self.request(&host, r, "PATCH", &url, &what, &[("Content-Range", range)], &scope, Some((&mut chunk, len))) {
                Ok(resp) if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                    // The registry holds something else than we thought: start a new upload.
                    session = None;
                    Err((registry_err(&what, format!("the registry refused the upload from byte {off} (HTTP 416); starting over"), true), None))
                }
                Ok(resp) => {
                    let next = match header(&resp, "location") {
                        Some(l) => Self::upload_url(&host.base, &l, &what)?,
                        None => url,
                    };
                    let end = range_end(&resp).unwrap_or(off + len);
                    if let Some(s) = state {
                        s.save(r, &desc.digest, &next);
                    }
                    progress(end.saturating_sub(off));
                    sent.fetch_add(end.saturating_sub(off), std::sync::atomic::Ordering::Relaxed);
                    session = Some((next, end));
                    if end <= off {
                        return Err((registry_err(&what, format!("the registry kept nothing of the bytes from {off}"), true), None));
                    }
                    Ok(false)
                }
                Err(e) => {
                    // Ask where the registry stands before trying again.
                    session = match self.upload_offset(&host, r, &url, &what, &scope) {
                        Ok(o) => Some((url, o)),
                        Err(_) => None,
                    };
                    Err(e)
                }
            }
        };
        self.policy().run(
            || loop {
                if step()? {
                    return Ok(());
                }
            },
            || sent.load(std::sync::atomic::Ordering::Relaxed),
        )?;
        if let Some(s) = state {
            s.clear(r, &desc.digest);
        }
        Ok(())
    }

    /// How many bytes an upload session holds (`GET` on its URL: 204 + `Range: 0-N`).
    fn upload_offset(&self, host: &super::Host, r: &Reference, url: &str, what: &str, scope: &str) -> Result<u64> {
        let resp = self.request(host, r, "GET", url, what, &[], scope, None).map_err(|(e, _)| e)?;
        Ok(range_end(&resp).unwrap_or(0))
    }

    /// Puts a manifest byte for byte under `reference` (its digest or a tag); returns the
    /// digest the registry reports.
    pub fn put_manifest(&self, r: &Reference, reference: &str, media_type: &str, bytes: &[u8]) -> Result<Option<Digest>> {
        Ok(self.put_manifest_answered(r, reference, media_type, bytes)?.0)
    }

    /// Puts a manifest by its digest as `put_manifest` does; true when the registry answered
    /// with `OCI-Subject`, which says it indexes manifests by their `subject` (the referrers
    /// API of OCI distribution 1.1).
    pub fn put_manifest_subject(&self, r: &Reference, media_type: &str, digest: &Digest, bytes: &[u8]) -> Result<bool> {
        Ok(self.put_manifest_answered(r, &digest.to_string(), media_type, bytes)?.1)
    }

    /// The one manifest `PUT`: the digest the registry reports, and whether it sent `OCI-Subject`.
    fn put_manifest_answered(&self, r: &Reference, reference: &str, media_type: &str, bytes: &[u8]) -> Result<(Option<Digest>, bool)> {
        let host = self.host(r)?;
        let what = format!("{r}: manifest {reference}");
        let url = format!("{}/v2/{}/manifests/{reference}", host.base, r.repository);
        let scope = Self::push_scope(r, None);
        self.retry(|| {
            let mut body: &[u8] = bytes;
            let resp = self.request(&host, r, "PUT", &url, &what, &[("Content-Type", media_type.to_string())], &scope, Some((&mut body, bytes.len() as u64)))?;
            Ok((header(&resp, "docker-content-digest").and_then(|d| d.parse().ok()), header(&resp, "oci-subject").is_some()))
        })
    }

    /// The digest the registry serves for `reference` (HEAD), if it has it.
    pub fn head_manifest(&self, r: &Reference, reference: &str) -> Result<Option<Digest>> {
        let host = self.host(r)?;
        let what = format!("{r}: manifest {reference}");
        let url = format!("{}/v2/{}/manifests/{reference}", host.base, r.repository);
        let scope = Self::push_scope(r, None);
        self.retry(|| match self.request(&host, r, "HEAD", &url, &what, &[("Accept", crate::image::media::ACCEPT.to_string())], &scope, None) {
            Ok(resp) => Ok(header(&resp, "docker-content-digest").and_then(|d| d.parse().ok())),
            Err((Error::Registry { message, .. }, _)) if message.starts_with("not found") => Ok(None),
            Err(e) => Err(e),
        })
    }
}

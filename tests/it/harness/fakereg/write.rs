//! Owns the fake registry's upload side (what a pusher talks to): uploads, chunks, mounts, manifest PUTs, their faults.
#![allow(dead_code)]
use super::*;

/// Largest request body accepted (blob chunk or monolithic upload).
pub(super) const MAX_BODY: u64 = 256 * 1024 * 1024;
/// Largest manifest accepted by `PUT /manifests/` (as distribution: 4 MiB).
pub(super) const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// What a write request did, for its log entry.
#[derive(Default)]
pub(super) struct WriteInfo {
    pub(super) body_received: u64,
    pub(super) upload: Option<String>,
    pub(super) cut: bool,
}

/// `START-END` (inclusive, the distribution spec's form) -> (START, END).
pub(super) fn parse_content_range(h: &str) -> Option<(u64, u64)> {
    let (a, b) = h.trim().split_once('-')?;
    if a.is_empty() || b.is_empty() || !a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// How the request body is framed.
#[derive(Clone, Copy, Debug)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
    Empty,
}

pub(super) fn framing(req: &Request) -> Framing {
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
pub(super) struct BodyIn<'a> {
    pub(super) stream: &'a mut TcpStream,
    pub(super) rest: &'a [u8],
    pub(super) pos: usize,
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
    pub(super) fn line(&mut self) -> std::io::Result<String> {
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
pub(super) fn read_body(
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
pub(super) fn read_body_into(
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

pub(super) fn fault_resp(code: u16) -> Resp {
    let name = match code {
        429 => "TOOMANYREQUESTS",
        500 => "UNKNOWN",
        503 => "UNAVAILABLE",
        _ => "FAULT",
    };
    Resp::error(code, name, "injected failure")
}

/// Takes one use of the first `upload_status` fault matching the request; returns its code.
pub(super) fn take_upload_status(st: &mut State, method: &str, repo: &str, key: Option<&str>) -> Option<u16> {
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
pub(super) fn plan_cut(
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

pub(super) fn take_cut(st: &mut State, i: usize) {
    if let Some(c) = st.cuts.get_mut(i)
        && c.times != u32::MAX
        && c.times > 0
    {
        c.times -= 1;
    }
}

impl Resp {
    /// No body, no Content-Type.
    pub(super) fn empty(status: u16) -> Resp {
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
pub(super) fn upload_range(size: usize) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// Answers POST/PATCH/PUT/DELETE (and GET of an upload session). `None`: the connection is
/// to be cut without an answer.
pub(super) fn handle_write(
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

pub(super) fn write_inner(
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
            if st.lost_put_answers > 0 {
                st.lost_put_answers -= 1;
                info.cut = true;
                return None;
            }
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
            let resp = Resp::empty(201)
                .header("Location", &loc)
                .header("Docker-Content-Digest", &digest);
            Some(match v["subject"]["digest"].as_str().filter(|_| st.referrers_api) {
                Some(s) => resp.header("OCI-Subject", s),
                None => resp,
            })
        }
    }
}

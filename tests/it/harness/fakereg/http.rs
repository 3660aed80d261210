//! Owns the fake registry's HTTP plumbing: the accept loop, request parsing, responses, one connection's life.
#![allow(dead_code)]
use super::*;

pub(super) fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
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

pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: Vec<(String, String)>,
    /// Bytes read past the head (the start of the body).
    pub(super) rest: Vec<u8>,
}

impl Request {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request head. `Ok(None)`: the peer did not speak HTTP (or closed).
pub(super) fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
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

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(super) fn percent_decode(s: &str) -> String {
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
pub(super) fn parse_range(h: &str) -> Option<(u64, Option<u64>)> {
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
pub(super) struct Resp {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Arc<Vec<u8>>,
    /// body[range.0..range.1] is the payload
    pub(super) range: (usize, usize),
    /// Omit the body (HEAD).
    pub(super) head: bool,
    pub(super) cut: Option<u64>,
    pub(super) stall: Option<u64>,
}

impl Resp {
    pub(super) fn new(status: u16, content_type: &str, body: Vec<u8>) -> Resp {
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
    pub(super) fn error(status: u16, code: &str, msg: &str) -> Resp {
        let body = serde_json::json!({"errors": [{"code": code, "message": msg, "detail": null}]});
        Resp::new(
            status,
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        )
    }
    pub(super) fn header(mut self, k: &str, v: &str) -> Resp {
        self.headers.push((k.into(), v.into()));
        self
    }
}

pub(super) fn reason(code: u16) -> &'static str {
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

pub(super) fn handle_conn(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
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

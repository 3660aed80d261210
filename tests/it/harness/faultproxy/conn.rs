//! Owns one proxied connection: read the request, forward it (or not), and hand the answer
//! back whole, cut, stalled or replaced, as the schedule decided.
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::{Fault, Kind, Shared, Strike};

/// Longest request or response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// Socket timeouts, so a vanished peer never holds a thread for long.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A parsed head: its first line, its headers, and the bytes read past it.
struct Head {
    first: String,
    headers: Vec<(String, String)>,
    rest: Vec<u8>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.trim().parse().ok())
    }
    /// The head again, with `Connection: close` instead of any connection header.
    fn bytes_closing(&self) -> Vec<u8> {
        let mut s = format!("{}\r\n", self.first);
        for (k, v) in &self.headers {
            if !k.eq_ignore_ascii_case("connection") && !k.eq_ignore_ascii_case("keep-alive") {
                s.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        s.push_str("Connection: close\r\n\r\n");
        s.into_bytes()
    }
}

/// Reads up to the blank line ending a head. `None` on EOF, error or something else than HTTP.
fn read_head(s: &mut TcpStream) -> Option<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let text = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let first = lines.next()?.to_string();
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Some(Head { first, headers, rest: buf[end + 4..].to_vec() })
}

/// Copies up to `limit` bytes (all, if `None`) from `from` to `to`; returns the count.
fn pump(from: &mut impl Read, to: &mut impl Write, limit: Option<u64>) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut done = 0u64;
    loop {
        let want = limit.map_or(buf.len() as u64, |l| (l - done).min(buf.len() as u64)) as usize;
        if want == 0 {
            return Ok(done);
        }
        let n = from.read(&mut buf[..want])?;
        if n == 0 {
            return Ok(done);
        }
        to.write_all(&buf[..n])?;
        done += n as u64;
    }
}

/// Closes with RST instead of FIN: `SO_LINGER` on, 0 seconds, then close.
fn reset(s: TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket fd and a properly sized linger struct.
    unsafe {
        libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, (&l as *const libc::linger).cast(), std::mem::size_of::<libc::linger>() as libc::socklen_t);
    }
    drop(s);
}

/// A registry-style error answer made up by the proxy.
fn refusal(status: u16, reason: &str, code: &str) -> Vec<u8> {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"fault proxy: {reason}"}}]}}"#);
    format!(
        "HTTP/1.1 {status} {reason}\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The request being served, as the schedule and the log name it.
struct Target {
    method: String,
    group: String,
    what: String,
    kind: Kind,
}

/// The request's key for the schedule (upload session ids blanked: the registry makes them
/// up anew each run) and the group its faults in a row are counted in.
fn names(method: &str, target: &str, path: &str, kind: Kind) -> (String, String) {
    let stable = match path.find("/blobs/uploads/") {
        Some(i) => format!("{}/blobs/uploads/<session>", &path[..i]),
        None => path.to_string(),
    };
    let digest = target.split(['?', '&']).find(|p| p.starts_with("digest=")).unwrap_or("");
    let key = format!("{method} {stable} {digest}");
    let group = match kind {
        Kind::BlobGet => key.clone(),
        _ => ["/blobs/", "/manifests/"].iter().find_map(|m| path.find(m).map(|i| path[..i].to_string())).unwrap_or_else(|| path.to_string()),
    };
    (key, group)
}

/// Whether a passed answer ends what the client was doing, or moved it on (see the module
/// comment): in an upload only the final `PUT`, a mount and a `PATCH` the registry took.
fn completes(method: &str, what: &str, status: &str) -> bool {
    !what.contains("/blobs/uploads/") || matches!((method, status), ("PUT", "201") | ("POST", "201") | ("PATCH", "202"))
}

/// Serves one client connection: one request, one answer (or fault), then close.
pub(super) fn serve(mut client: TcpStream, sh: &Shared) {
    let _ = client.set_read_timeout(Some(IO_TIMEOUT));
    let _ = client.set_write_timeout(Some(IO_TIMEOUT));
    let Some(req) = read_head(&mut client) else {
        sh.count(|c| c.non_http += 1);
        return;
    };
    let mut words = req.first.split(' ');
    let (method, target) = (words.next().unwrap_or("").to_string(), words.next().unwrap_or("").to_string());
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        sh.count(|c| c.non_http += 1);
        return;
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    let range = req.header("range").is_some();
    sh.count(|c| {
        c.requests += 1;
        c.range_requests += range as u64;
    });
    if req.header("transfer-encoding").is_some() {
        sh.count(|c| c.unsupported += 1);
        sh.note(format!("{method} {path}: chunked request body, refused"));
        let _ = client.write_all(&refusal(501, "Not Implemented", "UNSUPPORTED"));
        return;
    }
    let body_len = req.content_length().unwrap_or(0);
    let kind = match method.as_str() {
        "GET" if path.contains("/blobs/sha256:") => Kind::BlobGet,
        "GET" => Kind::Get,
        _ if body_len > 0 => Kind::WithBody,
        _ => Kind::Other,
    };
    let (key, group) = names(&method, &target, &path, kind);
    let strike = sh.decide(&key, &group, kind);
    let what = format!("{method} {path}{}", req.header("range").map(|r| format!(" [{r}]")).unwrap_or_default());
    let done = match strike {
        Some(Strike { fault: f @ (Fault::TooMany | Fault::Unavailable), .. }) => refuse(client, &req, body_len, f, sh, &what),
        Some(Strike { fault: Fault::CutUpload, at }) => cut_upload(client, &req, body_len, at, sh, &what),
        other => forward(client, &req, body_len, other, sh, &Target { method, group, what: what.clone(), kind }),
    };
    if let Err(e) = done {
        sh.note(format!("{what}: proxy i/o error: {e}"));
    }
}

/// Answers 429 or 503 itself (after taking in the request body, as a registry would).
fn refuse(mut client: TcpStream, req: &Head, body_len: u64, f: Fault, sh: &Shared, what: &str) -> io::Result<()> {
    let left = body_len.saturating_sub(req.rest.len() as u64);
    pump(&mut client, &mut io::sink(), Some(left))?;
    let (status, reason, code) = if f == Fault::TooMany { (429, "Too Many Requests", "TOOMANYREQUESTS") } else { (503, "Service Unavailable", "UNAVAILABLE") };
    client.write_all(&refusal(status, reason, code))?;
    sh.count(|c| *c.faults.entry(f).or_default() += 1);
    sh.note(format!("{what}: {status} Retry-After: 1"));
    Ok(())
}

/// Sends the registry only part of an upload's body, then closes both sides.
fn cut_upload(mut client: TcpStream, req: &Head, body_len: u64, at: u64, sh: &Shared, what: &str) -> io::Result<()> {
    let mut up = TcpStream::connect_timeout(&sh.upstream, IO_TIMEOUT)?;
    up.write_all(&req.bytes_closing())?;
    let keep = at % body_len.max(1);
    let early = (req.rest.len() as u64).min(keep) as usize;
    up.write_all(&req.rest[..early])?;
    pump(&mut client, &mut up, Some(keep - early as u64))?;
    sh.count(|c| *c.faults.entry(Fault::CutUpload).or_default() += 1);
    sh.note(format!("{what}: upload cut after {keep} of {body_len} body bytes"));
    reset(up);
    reset(client);
    Ok(())
}

/// Forwards the request and hands back the answer, whole or as `strike` says.
fn forward(mut client: TcpStream, req: &Head, body_len: u64, strike: Option<Strike>, sh: &Shared, t: &Target) -> io::Result<()> {
    let what = t.what.as_str();
    let mut up = TcpStream::connect_timeout(&sh.upstream, IO_TIMEOUT)?;
    let _ = up.set_read_timeout(Some(IO_TIMEOUT));
    let _ = up.set_write_timeout(Some(IO_TIMEOUT));
    up.write_all(&req.bytes_closing())?;
    up.write_all(&req.rest)?;
    pump(&mut client, &mut up, Some(body_len.saturating_sub(req.rest.len() as u64)))?;
    let Some(resp) = read_head(&mut up) else {
        return Err(io::Error::other("the registry sent no answer head"));
    };
    let status = resp.first.split(' ').nth(1).unwrap_or("?").to_string();
    let len = if t.method == "HEAD" { 0 } else { resp.content_length().unwrap_or(0) };
    let Some(Strike { fault, at }) = strike else {
        client.write_all(&resp.bytes_closing())?;
        client.write_all(&resp.rest)?;
        let n = resp.rest.len() as u64 + pump(&mut up, &mut client, None)?;
        sh.note(format!("{what}: {status}, passed ({n} body bytes)"));
        if completes(&t.method, what, &status) {
            sh.settle(&t.group);
        }
        return Ok(());
    };
    // A body cut needs a body of 2 bytes or more, so that it lands strictly inside.
    let fault = if matches!(fault, Fault::CutFin | Fault::CutRst | Fault::Stall) && len < 2 { Fault::NoAnswer } else { fault };
    if fault == Fault::NoAnswer {
        // The registry has done the work; the client never hears of it.
        pump(&mut io::Cursor::new(&resp.rest), &mut io::sink(), None)?;
        let _ = pump(&mut up, &mut io::sink(), None);
        sh.count(|c| *c.faults.entry(Fault::NoAnswer).or_default() += 1);
        sh.note(format!("{what}: answered {status}, answer dropped"));
        return Ok(());
    }
    let cut = 1 + at % (len - 1);
    client.write_all(&resp.bytes_closing())?;
    let mut body = io::Read::chain(io::Cursor::new(resp.rest.clone()), &mut up);
    pump(&mut body, &mut client, Some(cut))?;
    if fault != Fault::CutRst && t.kind == Kind::BlobGet {
        sh.settle(&t.group);
    }
    match fault {
        Fault::CutFin | Fault::CutRst => {
            sh.count(|c| *c.faults.entry(fault).or_default() += 1);
            sh.note(format!("{what}: {status}, cut ({fault:?}) after {cut} of {len} body bytes"));
            if fault == Fault::CutRst {
                reset(client);
            }
            Ok(())
        }
        Fault::Stall => {
            sh.count(|c| *c.faults.entry(Fault::Stall).or_default() += 1);
            let gone = client_leaves_within(&mut client, sh.schedule.stall);
            sh.count(|c| c.stalls_abandoned += gone as u64);
            sh.note(format!("{what}: {status}, stalled after {cut} of {len} body bytes; client {}", if gone { "hung up" } else { "waited" }));
            if !gone {
                pump(&mut body, &mut client, None)?;
            }
            Ok(())
        }
        other => unreachable!("{other:?} is handled before forwarding"),
    }
}

/// Waits up to `d` for the client to close its end (it sends nothing while awaiting an
/// answer, so any read result but a timeout means it is gone).
fn client_leaves_within(client: &mut TcpStream, d: Duration) -> bool {
    let _ = client.set_read_timeout(Some(d));
    let mut b = [0u8; 1];
    let gone = match client.read(&mut b) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
    };
    let _ = client.set_read_timeout(Some(IO_TIMEOUT));
    gone
}

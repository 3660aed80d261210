//! Owns the fake registry's read side: auth checks, the token endpoint, manifests and blobs (ranges), injected faults.
#![allow(dead_code)]
use super::*;

pub(super) enum AuthResult {
    Ok,
    Challenge(Resp),
}

pub(super) fn check_auth(req: &Request, st: &State, port: u16, repo: Option<&str>) -> AuthResult {
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

pub(super) fn basic_matches(given: Option<&str>, user: &str, pass: &str) -> bool {
    use base64::Engine as _;
    let Some(b64) = given.and_then(|g| g.strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    raw == format!("{user}:{pass}").as_bytes()
}

pub(super) fn route(req: &Request, shared: &Shared) -> Resp {
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
    } else if let Some((repo, subject)) = req.path.strip_prefix("/v2/").and_then(|r| r.rsplit_once("/referrers/")).filter(|_| st.referrers_api) {
        match check_auth(req, &st, port, Some(repo)) {
            AuthResult::Challenge(r) => r,
            AuthResult::Ok => referrers(req, &st, repo, subject),
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

pub(super) fn token(req: &Request, st: &mut State, shared: &Shared) -> Resp {
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

pub(super) fn serve(req: &Request, st: &mut State, repo: &str, kind: &str, reference: &str) -> Resp {
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

pub(super) fn apply_faults(req: &Request, st: &mut State, key: Option<String>, mut resp: Resp) -> Resp {
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

/// The OCI 1.1 referrers API: an index of the repository's manifests whose `subject` is
/// `subject`, each with its artifactType and annotations, filtered by `artifactType`.
fn referrers(req: &Request, st: &State, repo: &str, subject: &str) -> Resp {
    let want = req.query.iter().find(|(k, _)| k == "artifactType").map(|(_, t)| t.clone());
    let mut list: Vec<serde_json::Value> = Vec::new();
    if let Some(r) = st.repos.get(repo) {
        for (digest, (mt, bytes)) in &r.manifests {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else { continue };
            if v["subject"]["digest"] != subject {
                continue;
            }
            let at = v["artifactType"].as_str().or(v["config"]["mediaType"].as_str()).unwrap_or("").to_string();
            if want.as_ref().is_some_and(|w| *w != at) {
                continue;
            }
            let mut d = serde_json::json!({"mediaType": mt, "digest": digest, "size": bytes.len(), "artifactType": at});
            if v["annotations"].is_object() {
                d["annotations"] = v["annotations"].clone();
            }
            list.push(d);
        }
    }
    list.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    // Pages after `last`, when pages are asked for.
    let mut next = None;
    if st.referrers_page > 0 {
        let last = req.query.iter().find(|(k, _)| k == "last").map(|(_, v)| v.clone());
        if let Some(l) = last {
            list.retain(|d| d["digest"].as_str().is_some_and(|x| x > l.as_str()));
        }
        if list.len() > st.referrers_page {
            list.truncate(st.referrers_page);
            let l = list.last().unwrap()["digest"].as_str().unwrap().to_string();
            next = Some(format!("</v2/{repo}/referrers/{subject}?last={l}>; rel=\"next\""));
        }
    }
    let body = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": list});
    let mut resp = Resp::new(200, "application/vnd.oci.image.index.v1+json", serde_json::to_vec(&body).unwrap());
    if let Some(n) = next {
        resp = resp.header("Link", &n);
    }
    if want.is_some() {
        resp = resp.header("OCI-Filters-Applied", "artifactType");
    }
    resp
}

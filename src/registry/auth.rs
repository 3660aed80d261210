//! Registry credentials (flags, auth.json / docker config.json, credential helpers) and
//! `WWW-Authenticate` challenges. Secrets live only here and in request headers.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A user name and secret. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    /// Parses `USER:PASS` (the password may contain colons).
    pub fn parse(s: &str) -> Result<Credentials> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials { username: u.into(), password: p.into() }),
            _ => Err(Error::Other("--creds must be USER:PASSWORD".into())),
        }
    }
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Where credentials come from, resolved once per run.
#[derive(Debug, Clone, Default)]
pub struct CredentialSource {
    /// `--creds`: used for every registry.
    pub explicit: Option<Credentials>,
    /// Auth files, searched in order.
    pub files: Vec<PathBuf>,
}

const HUB_KEYS: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io", "index.docker.io/v1"];

/// Normalises an auth.json key: no scheme, no trailing slash, Docker Hub's aliases to docker.io.
fn normalise_key(k: &str) -> String {
    let k = k.trim();
    let k = k.strip_prefix("https://").or_else(|| k.strip_prefix("http://")).unwrap_or(k);
    let k = k.trim_end_matches('/');
    let k = k.strip_suffix("/v1").or_else(|| k.strip_suffix("/v2")).unwrap_or(k);
    if HUB_KEYS.contains(&k) || k == "index.docker.io" { "docker.io".to_string() } else { k.to_string() }
}

impl CredentialSource {
    /// The default search path: `--authfile`, else `REGISTRY_AUTH_FILE`, the containers auth.json
    /// under `XDG_RUNTIME_DIR`, `~/.config/containers/auth.json` and docker's `config.json`.
    pub fn new(explicit: Option<Credentials>, authfile: Option<&Path>) -> Result<CredentialSource> {
        let mut files = Vec::new();
        if let Some(f) = authfile {
            if !f.is_file() {
                return Err(Error::Other(format!("--authfile {}: no such file", f.display())));
            }
            files.push(f.to_path_buf());
        } else {
            if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
                files.push(PathBuf::from(f));
            }
            if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
                files.push(PathBuf::from(d).join("containers/auth.json"));
            }
            let home = std::env::var_os("HOME").map(PathBuf::from);
            if let Some(h) = &home {
                files.push(h.join(".config/containers/auth.json"));
            }
            match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
                Some(d) => files.push(PathBuf::from(d).join("config.json")),
                None => {
                    if let Some(h) = &home {
                        files.push(h.join(".docker/config.json"));
                    }
                }
            }
        }
        Ok(CredentialSource { explicit, files })
    }

    /// Credentials for `registry` (and repository, for repository-scoped entries), if any.
    pub fn lookup(&self, registry: &str, repository: &str) -> Result<Option<Credentials>> {
        if let Some(c) = &self.explicit {
            return Ok(Some(c.clone()));
        }
        let full = format!("{registry}/{repository}");
        for path in &self.files {
            if !path.is_file() {
                continue;
            }
            let data = crate::limits::read_file_capped(path, crate::limits::AUTH_FILE)?;
            let file: AuthFile = serde_json::from_slice(&data)
                .map_err(|e| Error::Other(format!("{}: invalid auth file: {e}", path.display())))?;
            // Longest matching key wins: `host/ns/repo` beats `host/ns` beats `host`.
            let mut best: Option<(usize, &AuthEntry)> = None;
            for (k, v) in &file.auths {
                let k = normalise_key(k);
                let hit = k == registry || (full.starts_with(&k) && full.as_bytes().get(k.len()) == Some(&b'/'));
                if hit && best.is_none_or(|(n, _)| k.len() > n) {
                    best = Some((k.len(), v));
                }
            }
            let helper = file.cred_helpers.iter().find(|(k, _)| normalise_key(k) == registry).map(|(_, v)| v.clone());
            if let Some(h) = helper {
                return run_helper(&h, registry, path);
            }
            if let Some((_, e)) = best
                && let Some(c) = decode_entry(e, path, registry)? {
                return Ok(Some(c));
            }
            if let Some(store) = &file.creds_store
                && let Some(c) = run_helper(store, registry, path)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

fn decode_entry(e: &AuthEntry, path: &Path, registry: &str) -> Result<Option<Credentials>> {
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok(Some(Credentials { username: u.clone(), password: p.clone() }));
    }
    let Some(a) = &e.auth else { return Ok(None) };
    if a.is_empty() {
        return Ok(None);
    }
    let bad = || Error::Other(format!("{}: the \"auth\" entry for {registry} is not base64 of USER:PASSWORD", path.display()));
    let raw = base64::engine::general_purpose::STANDARD.decode(a.trim()).map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    Credentials::parse(&s).map(Some).map_err(|_| bad())
}

/// Runs `docker-credential-NAME get` (the docker credential-helper protocol).
fn run_helper(name: &str, registry: &str, path: &Path) -> Result<Option<Credentials>> {
    let server = if registry == "docker.io" { "https://index.docker.io/v1/".to_string() } else { registry.to_string() };
    let prog = format!("docker-credential-{name}");
    let fail = |why: String| Error::Other(format!("credential helper {prog} (from {}) for {registry}: {why}", path.display()));
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    child.stdin.take().expect("stdin").write_all(server.as_bytes()).map_err(|e| fail(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        // The protocol's "not found" is a failure exit; treat it as "no credentials".
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let h: HelperOut = serde_json::from_slice(&out.stdout).map_err(|_| fail("unreadable answer".into()))?;
    Ok(Some(Credentials { username: h.username, password: h.secret }))
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"`.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        let key = s[ks..i].trim().to_ascii_lowercase();
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                val.push(b[i] as char);
                i += 1;
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs.min(b.len())..i.min(b.len())].trim().to_string();
        }
        if !key.is_empty() {
            out.insert(key, val);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/redis:pull""#),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/redis:pull".into())
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
    }
    #[test]
    fn authfile_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &f,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"reg:5000":{{"auth":"{}"}},"reg:5000/team":{{"auth":"{}"}}}}}}"#,
                b64("hub:p"),
                b64("u:p:w"),
                b64("team:x")
            ),
        )
        .unwrap();
        let src = CredentialSource::new(None, Some(&f)).unwrap();
        assert_eq!(src.lookup("docker.io", "library/redis").unwrap().unwrap().username, "hub");
        let c = src.lookup("reg:5000", "other/x").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
        assert_eq!(src.lookup("reg:5000", "team/x").unwrap().unwrap().username, "team");
        assert_eq!(src.lookup("reg:5000", "teamx/y").unwrap().unwrap().username, "u");
        assert!(src.lookup("other", "x").unwrap().is_none());
        assert!(!format!("{c:?}").contains("p:w"));
    }
}

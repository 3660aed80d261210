//! A real registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1, plain, htpasswd, TLS or both.
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Plain HTTP, no auth.
    Plain,
    /// Plain HTTP, basic auth from an htpasswd (bcrypt) file.
    Auth,
    /// HTTPS with a self-signed certificate (SAN IP:127.0.0.1, DNS:localhost), no auth.
    Tls,
    /// HTTPS and basic auth.
    AuthTls,
}

impl Variant {
    pub fn auth(self) -> bool {
        matches!(self, Variant::Auth | Variant::AuthTls)
    }
    pub fn tls(self) -> bool {
        matches!(self, Variant::Tls | Variant::AuthTls)
    }
}

/// A running registry process; killed (and its storage removed) on drop.
pub struct Registry {
    pub variant: Variant,
    /// Basic-auth user (meaningful for the auth variants).
    pub user: String,
    /// Basic-auth password (meaningful for the auth variants).
    pub pass: String,
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// The server certificate of the TLS variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cert {
    /// `openssl req -x509` as in registry.sh and docker's docs: one self-signed certificate
    /// (basicConstraints CA:TRUE) that is both the server certificate and `ca.crt`.
    SelfSigned,
    /// A test CA (`ca.crt`) that signed a separate server certificate (CA:FALSE, serverAuth).
    CaSigned,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("spawn openssl");
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl Registry {
    /// Starts a registry; TLS variants use a self-signed certificate (`Cert::SelfSigned`).
    pub fn start(variant: Variant) -> Registry {
        Registry::start_with(variant, Cert::SelfSigned)
    }

    pub fn start_with(variant: Variant, cert: Cert) -> Registry {
        let dir = tempfile::tempdir().expect("registry tempdir");
        let user = "ocitest".to_string();
        // Distinctive, so a test can grep output for it.
        let pass = "s3cret-Pa55-7f3a9c".to_string();
        let root = dir.path().to_path_buf();
        fs::create_dir_all(root.join("data")).unwrap();
        if variant.auth() {
            let htpasswd = root.join("htpasswd");
            let out = Command::new("htpasswd")
                .arg("-Bbc")
                .arg(&htpasswd)
                .arg(&user)
                .arg(&pass)
                .output()
                .expect("spawn htpasswd (apt-get install apache2-utils)");
            assert!(out.status.success(), "htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        if variant.tls() {
            let tls = root.join("tls");
            fs::create_dir_all(&tls).unwrap();
            fs::create_dir_all(root.join("certs")).unwrap();
            let san = "subjectAltName=IP:127.0.0.1,DNS:localhost";
            match cert {
                Cert::SelfSigned => openssl(
                    &["req", "-x509", "-newkey", "rsa:2048", "-sha256", "-days", "3650", "-nodes", "-keyout", "domain.key",
                      "-out", "domain.crt", "-subj", "/CN=127.0.0.1", "-addext", san],
                    &tls,
                ),
                Cert::CaSigned => {
                    openssl(
                        &["req", "-x509", "-newkey", "rsa:2048", "-sha256", "-days", "3650", "-nodes", "-keyout", "ca.key",
                          "-out", "ca.crt", "-subj", "/CN=ocibundle test CA"],
                        &tls,
                    );
                    openssl(
                        &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "domain.key", "-out", "domain.csr", "-subj",
                          "/CN=127.0.0.1"],
                        &tls,
                    );
                    fs::write(
                        tls.join("ext.cnf"),
                        format!("{san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"),
                    )
                    .unwrap();
                    openssl(
                        &["x509", "-req", "-sha256", "-days", "3650", "-in", "domain.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                          "-CAcreateserial", "-out", "domain.crt", "-extfile", "ext.cnf"],
                        &tls,
                    );
                }
            }
            let ca = if cert == Cert::SelfSigned { "domain.crt" } else { "ca.crt" };
            // Only ca.crt in the cert dir: containers/image takes a *.key there for a client key.
            fs::copy(tls.join(ca), root.join("certs/ca.crt")).unwrap();
        }

        let mut reg = Registry { variant, user, pass, port: 0, child: None, dir };
        // A port picked by binding :0 can be taken by someone else before the registry binds
        // it; if the registry dies at startup, try again with another port.
        let mut last_err = String::new();
        for _attempt in 0..5 {
            match reg.try_start() {
                Ok(()) => return reg,
                Err(e) => last_err = e,
            }
        }
        panic!("registry ({variant:?}) did not start: {last_err}");
    }

    fn try_start(&mut self) -> Result<(), String> {
        let port = free_port();
        self.port = port;
        let root = self.dir.path();
        let config = root.join("config.yml");
        fs::write(&config, self.config_yaml(port)).unwrap();
        let log_path = root.join("registry.log");
        let log = fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(REGISTRY_BIN);
        cmd.arg("serve").arg(&config).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        super::daemon::dies_with_test(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("spawn {REGISTRY_BIN}: {e}"))?;
        self.child = Some(child);

        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::from("no probe yet");
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("registry exited ({status}) on port {port}; log:\n{}", self.log()));
            }
            match self.probe() {
                Ok(200) => {
                    // The answer must come from our process, not from someone else's port.
                    if self.child.as_mut().unwrap().try_wait().unwrap().is_none() {
                        return Ok(());
                    }
                }
                Ok(code) => last = format!("HTTP {code}"),
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!("no answer on {}/v2/ within 30s (last: {last}); log:\n{}", self.url(), self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn config_yaml(&self, port: u16) -> String {
        let root = self.dir.path().display().to_string();
        let tls = if self.variant.tls() {
            format!("  tls:\n    certificate: {root}/tls/domain.crt\n    key: {root}/tls/domain.key\n")
        } else {
            String::new()
        };
        let auth = if self.variant.auth() {
            format!("auth:\n  htpasswd:\n    realm: ocibundle-test\n    path: {root}/htpasswd\n")
        } else {
            String::new()
        };
        format!(
            "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: ocibundle-test-not-a-secret
  headers:
    X-Content-Type-Options: [nosniff]
{tls}{auth}health:
  storagedriver:
    enabled: false
"
        )
    }

    /// GET /v2/ with curl (creds and CA as needed); returns the HTTP status code.
    fn probe(&self) -> Result<u16, String> {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "--noproxy", "*"]);
        if self.variant.auth() {
            c.arg("-u").arg(self.creds());
        }
        if self.variant.tls() {
            c.arg("--cacert").arg(self.cert_dir().join("ca.crt"));
        }
        c.arg(format!("{}/v2/", self.url()));
        let out = c.output().map_err(|e| format!("spawn curl: {e}"))?;
        let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
        code.parse::<u16>().map_err(|_| format!("curl exit {} code {code:?}", out.status))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// "127.0.0.1:PORT"
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `http://127.0.0.1:PORT` or `https://…`.
    pub fn url(&self) -> String {
        let scheme = if self.variant.tls() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
    /// A folder holding only `ca.crt` (the self-signed server certificate), for `--cert-dir`.
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }
    /// "user:pass"
    pub fn creds(&self) -> String {
        format!("{}:{}", self.user, self.pass)
    }
    /// Contents of the registry's log file.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.path().join("registry.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Flags for skopeo talking to this registry as a destination (`dest`) or source (`src`),
    /// or for `skopeo inspect` / `login` (prefix "").
    pub fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let p = if prefix.is_empty() { String::new() } else { format!("{prefix}-") };
        let mut v = Vec::new();
        if self.variant.tls() {
            v.push(format!("--{p}cert-dir={}", self.cert_dir().display()));
        } else {
            v.push(format!("--{p}tls-verify=false"));
        }
        if self.variant.auth() {
            v.push(format!("--{p}creds={}", self.creds()));
        }
        v
    }

    /// Raw manifest bytes the registry serves for `reference` (`HOST/REPO:TAG` or `@digest`),
    /// via `skopeo inspect --raw` (no platform resolution: an index comes back as the index).
    pub fn raw_manifest(&self, reference: &str) -> Vec<u8> {
        let mut args: Vec<String> = vec!["inspect".into(), "--raw".into()];
        args.extend(self.skopeo_flags(""));
        args.push(format!("docker://{reference}"));
        let out = Command::new("skopeo").args(&args).output().expect("spawn skopeo");
        assert!(
            out.status.success(),
            "skopeo inspect --raw docker://{reference} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The `Docker-Content-Digest` the registry sends for `GET /v2/REPO/manifests/REF`,
    /// accepting OCI and Docker manifest and index types.
    pub fn content_digest(&self, repo: &str, reference: &str) -> String {
        let mut c = Command::new("curl");
        c.args(["-s", "-f", "-o", "/dev/null", "-D", "-", "--max-time", "10", "--noproxy", "*"]);
        for t in [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ] {
            c.arg("-H").arg(format!("Accept: {t}"));
        }
        if self.variant.auth() {
            c.arg("-u").arg(self.creds());
        }
        if self.variant.tls() {
            c.arg("--cacert").arg(self.cert_dir().join("ca.crt"));
        }
        c.arg(format!("{}/v2/{repo}/manifests/{reference}", self.url()));
        let out = c.output().expect("spawn curl");
        assert!(out.status.success(), "curl manifest {repo}:{reference} failed ({})", out.status);
        let head = String::from_utf8_lossy(&out.stdout);
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case("docker-content-digest").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no Docker-Content-Digest in:\n{head}"))
    }
}

impl Registry {
    /// curl with this registry's credentials and CA.
    fn curl(&self) -> Command {
        let mut c = Command::new("curl");
        c.args(["-s", "-f", "--max-time", "30", "--noproxy", "*"]);
        if self.variant.auth() {
            c.arg("-u").arg(self.creds());
        }
        if self.variant.tls() {
            c.arg("--cacert").arg(self.cert_dir().join("ca.crt"));
        }
        c
    }

    /// Uploads `data` as a blob of `repo` by hand (POST, then PUT with the digest), as any
    /// other tool would; returns its digest.
    pub fn curl_put_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = super::cmd::sha256(data);
        let out = self.curl().args(["-X", "POST", "-D", "-", "-o", "/dev/null"]).arg(format!("{}/v2/{repo}/blobs/uploads/", self.url())).output().expect("spawn curl");
        assert!(out.status.success(), "POST blobs/uploads failed");
        let head = String::from_utf8_lossy(&out.stdout);
        let loc = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("location")).map(|(_, v)| v.trim().to_string()))
            .expect("a Location header");
        let loc = if loc.starts_with('/') { format!("{}{loc}", self.url()) } else { loc };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let tmp = tempfile::NamedTempFile::new().unwrap();
        fs::write(tmp.path(), data).unwrap();
        let out = self
            .curl()
            .args(["-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary"])
            .arg(format!("@{}", tmp.path().display()))
            .arg(format!("{loc}{sep}digest={digest}"))
            .output()
            .expect("spawn curl");
        assert!(out.status.success(), "PUT blob {digest} failed: {}", String::from_utf8_lossy(&out.stderr));
        digest
    }

    /// Puts `bytes` as the manifest `repo:tag` by hand; returns its digest.
    pub fn curl_put_manifest(&self, repo: &str, tag: &str, media_type: &str, bytes: &[u8]) -> String {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        fs::write(tmp.path(), bytes).unwrap();
        let out = self
            .curl()
            .args(["-X", "PUT", "-H"])
            .arg(format!("Content-Type: {media_type}"))
            .arg("--data-binary")
            .arg(format!("@{}", tmp.path().display()))
            .arg(format!("{}/v2/{repo}/manifests/{tag}", self.url()))
            .output()
            .expect("spawn curl");
        assert!(out.status.success(), "PUT manifest {repo}:{tag} failed ({}): {}", out.status, self.log().lines().rev().take(5).collect::<Vec<_>>().join("\n"));
        super::cmd::sha256(bytes)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free TCP port on 127.0.0.1 (bound to :0, then released).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

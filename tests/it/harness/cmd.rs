//! Running the `ocibundle` binary from tests with an isolated environment.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp "home" for one test: its own store, HOME and auth files, removed on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env { dir: tempfile::tempdir().expect("tempdir") }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    /// Where the store keeps blob `digest`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.store().join("blobs/sha256").join(hex_of(digest))
    }
    /// `ocibundle` with HOME, XDG dirs and the store pointed into this env, and no
    /// auth file or proxy from the outside world.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ocibundle"));
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        c.env("HOME", &home)
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env("OCIBUNDLE_STORE", self.store())
            .env("OCIBUNDLE_RETRY_BASE_MS", "20")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_CONFIG")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY");
        c
    }
    /// Runs `ocibundle ARGS...` and returns its output (does not assert on status).
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn ocibundle")
    }
    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ocibundle {:?} failed ({}):\nstdout: {}\nstderr: {}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    /// Runs and asserts the CLI error contract (docs/cli.md): exit 1 and exactly one
    /// `error: ` line on stderr. Returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        error_line(args, &out)
    }
    /// Runs with `--json` appended and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let s = self.ok(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("bad JSON ({e}): {s}"))
    }
}

/// Runs an external tool (skopeo, umoci, ...) and asserts success; returns stdout.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {:?} failed ({}):\n{}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// sha256 of a byte slice as `sha256:<hex>`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Every file under `dir`, recursively (none if `dir` is missing).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The hex part of a `sha256:` digest (its file name in a store or layout).
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
}

/// A path as the `&str` an argument list wants.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A command's stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!("stdout: {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Asserts the CLI error contract on a finished run: exit 1 and exactly one `error: ` line on
/// stderr. Returns that line.
pub fn error_line(args: &[&str], o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "ocibundle {args:?} should fail with exit 1, got {}:\n{}", o.status, text(o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "ocibundle {args:?}: want exactly one `error: ` line:\n{}", text(o));
    lines[0].to_string()
}

/// `env.fails(args)` as a function, as most test files call it.
pub fn fails(env: &Env, args: &[&str]) -> String {
    env.fails(args)
}

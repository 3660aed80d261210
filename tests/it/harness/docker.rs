//! Owns the private Docker daemon of the tests: a `dockerd` (Debian `docker.io`) with its data,
//! exec root, socket and config in a temp dir (vfs storage, no iptables, no bridge), driven by
//! the `docker` client; stopped on drop.
//!
//! `docker load` is what most sites run on the offline side, so the docker-archive export is
//! checked against the real thing, not only against podman and containerd.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::peers::{bounded, output_text, pipe};

pub struct Docker {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Docker {
    /// Starts dockerd and waits (at most 60 s) until `docker version` answers on its socket.
    pub fn start() -> Docker {
        let dir = tempfile::tempdir().expect("dockerd tempdir");
        let d = dir.path();
        for sub in ["data", "exec", "tmp", "client"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        fs::write(d.join("daemon.json"), "{}").unwrap();
        let log = fs::File::create(d.join("dockerd.log")).unwrap();
        let mut cmd = Command::new("dockerd");
        cmd.arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .args([
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--userland-proxy=false",
            ])
            .env("TMPDIR", d.join("tmp"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        super::daemon::dies_with_test(&mut cmd);
        let child = cmd.spawn().expect("spawn dockerd (apt-get install docker.io)");
        let mut dk = Docker { dir, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = dk.child.as_mut().unwrap().try_wait().unwrap() {
                dk.child = None;
                panic!("dockerd exited at startup ({status}); log:\n{}", dk.log());
            }
            if dk.socket().exists() && dk.run(&["version"]).status.success() {
                return dk;
            }
            if Instant::now() > deadline {
                panic!("dockerd did not answer on {} within 60 s; log:\n{}", dk.socket().display(), dk.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    pub fn log(&self) -> String {
        let s = fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `docker -H unix://SOCK` with its own client config dir.
    pub fn cmd(&self) -> Command {
        let mut c = bounded("docker");
        c.arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn timeout docker")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "docker {args:?} failed ({}):\n{}\ndockerd log (tail):\n{}", o.status, output_text(&o), self.log());
        String::from_utf8(o.stdout).unwrap()
    }

    /// `docker load -i ARCHIVE`; returns what it printed per image, sorted: `NAME` for
    /// `Loaded image: NAME`, `ID sha256:…` for `Loaded image ID: sha256:…`.
    pub fn load(&self, archive: &Path) -> Vec<String> {
        loaded(&self.ok(&["load", "-q", "-i", archive.to_str().unwrap()]))
    }

    /// `producer | docker load`; asserts both succeed and returns what `load` returns.
    pub fn load_from(&self, producer: &mut Command) -> Vec<String> {
        let mut c = self.cmd();
        c.args(["load", "-q"]);
        let (po, co) = pipe(producer, &mut c);
        assert!(po.status.success(), "producer of docker load failed ({}):\n{}", po.status, output_text(&po));
        assert!(co.status.success(), "docker load from a pipe failed ({}):\n{}\ndockerd log (tail):\n{}", co.status, output_text(&co), self.log());
        loaded(&String::from_utf8_lossy(&co.stdout))
    }

    /// (image ID, `REPOSITORY:TAG`) of every image, sorted; untagged ones as `<none>:<none>`.
    pub fn images(&self) -> Vec<(String, String)> {
        let out = self.ok(&["images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"]);
        let mut v: Vec<(String, String)> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (id, name) = l.split_once(' ').unwrap_or_else(|| panic!("docker images line: {l}"));
                (id.to_string(), name.to_string())
            })
            .collect();
        v.sort();
        v
    }

    /// Removes every image.
    pub fn remove_all(&self) {
        let ids = self.ok(&["images", "-aq", "--no-trunc"]);
        let mut ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
        ids.sort();
        ids.dedup();
        if !ids.is_empty() {
            let mut a = vec!["rmi", "-f"];
            a.extend(ids);
            self.ok(&a);
        }
    }
}

fn loaded(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Loaded image ID: ")
                .map(|id| format!("ID {}", id.trim()))
                .or_else(|| l.strip_prefix("Loaded image: ").map(|n| n.trim().to_string()))
        })
        .collect();
    v.sort();
    v
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            super::daemon::stop(child, Duration::from_secs(15));
        }
        super::daemon::unmount_under(self.dir.path());
    }
}

//! Owns the peer-tool helpers of the export tests: a private podman (vfs storage in a temp dir, no daemon) and a private containerd 1.6 daemon driven with `ctr`, both local-only, bounded in time and cleaned up on drop.
//!
//! Every external command runs under coreutils `timeout`, so a hung peer fails the test
//! instead of hanging it. containerd listens only on unix sockets in its temp dir (its CRI
//! plugin's stream server binds 127.0.0.1 on a random port, as by default).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Seconds any single peer command may take before `timeout` kills it.
const CMD_TIMEOUT_S: u32 = 120;

/// `timeout -k 5 SECS PROGRAM`: the command dies if it runs longer than `CMD_TIMEOUT_S`.
pub fn bounded(program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "5", &CMD_TIMEOUT_S.to_string(), program]);
    c
}

/// Runs `producer | consumer` (a real pipe between the two processes); returns both outputs.
pub fn pipe(producer: &mut Command, consumer: &mut Command) -> (Output, Output) {
    let mut p = producer
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn producer");
    let out = p.stdout.take().unwrap();
    let c = consumer
        .stdin(Stdio::from(out))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn consumer");
    let co = c.wait_with_output().unwrap();
    let po = p.wait_with_output().unwrap();
    (po, co)
}

pub fn output_text(o: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// podman

/// A podman with its own storage (`--storage-driver vfs --root R --runroot R.run`), as the
/// field notes describe; removed with the temp dir on drop. Share one per test: vfs is slow.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        let dir = tempfile::tempdir().expect("podman tempdir");
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        Podman { dir }
    }

    /// `podman` with the private storage flags, TMPDIR (where `load` unpacks archives) and
    /// libpod's tmpdir inside the temp dir.
    pub fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = bounded("podman");
        c.arg("--storage-driver")
            .arg("vfs")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("root.run"))
            .arg("--tmpdir")
            .arg(d.join("libpod-tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .env("TMPDIR", d.join("tmp"))
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd()
            .args(args)
            .output()
            .expect("spawn timeout podman")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "podman {args:?} failed ({}):\n{}",
            o.status,
            output_text(&o)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `podman load -i ARCHIVE`; returns the image names it printed (`Loaded image: NAME`).
    pub fn load(&self, archive: &Path) -> Vec<String> {
        let out = self.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
        out.lines()
            .filter_map(|l| l.strip_prefix("Loaded image: "))
            .map(|s| s.trim().to_string())
            .collect()
    }

    /// `producer | podman load`; asserts both succeed and returns the loaded names.
    pub fn load_from(&self, producer: &mut Command) -> Vec<String> {
        let mut c = self.cmd();
        c.args(["load", "-q"]);
        let (po, co) = pipe(producer, &mut c);
        assert!(
            po.status.success(),
            "producer of podman load failed ({}):\n{}",
            po.status,
            output_text(&po)
        );
        assert!(
            co.status.success(),
            "podman load from a pipe failed ({}):\n{}",
            co.status,
            output_text(&co)
        );
        let out = String::from_utf8(co.stdout).unwrap();
        out.lines()
            .filter_map(|l| l.strip_prefix("Loaded image: "))
            .map(|s| s.trim().to_string())
            .collect()
    }

    /// Every (image ID, `REPOSITORY:TAG`) `podman images` shows, IDs untruncated
    /// (`sha256:<hex>`); an untagged image shows as `<none>:<none>`.
    pub fn images(&self) -> Vec<(String, String)> {
        let out = self.ok(&[
            "images",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Repository}}:{{.Tag}}",
        ]);
        let mut v: Vec<(String, String)> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (id, name) = l
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("podman images line: {l}"));
                (id.to_string(), name.to_string())
            })
            .collect();
        v.sort();
        v
    }

    /// Removes every image (to reuse the storage for the next archive).
    pub fn remove_all(&self) {
        self.ok(&["rmi", "--all", "--force"]);
    }
}

// ---------------------------------------------------------------------------------------------
// containerd

/// One row of `ctr images ls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtrImage {
    pub name: String,
    pub media_type: String,
    pub digest: String,
}

/// A private containerd (root, state, temp, opt dir and sockets in a temp dir), killed on drop.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The CRI plugin is running (it names every image in `k8s.io` by its ID, asynchronously).
    cri: bool,
}

impl Containerd {
    /// Starts containerd and waits (at most 30 s) until `ctr version` answers on its socket.
    pub fn start() -> Containerd {
        let dir = tempfile::tempdir().expect("containerd tempdir");
        let d = dir.path().to_path_buf();
        for sub in ["root", "state", "tmp", "opt"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let p = |s: &str| d.join(s).display().to_string();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
temp = "{tmp}"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{ttrpc}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = p("root"),
            state = p("state"),
            tmp = p("tmp"),
            sock = p("containerd.sock"),
            ttrpc = p("containerd-ttrpc.sock"),
            opt = p("opt"),
        );
        fs::write(d.join("config.toml"), config).unwrap();
        let log = fs::File::create(d.join("containerd.log")).unwrap();
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(d.join("config.toml"))
            .env("TMPDIR", d.join("tmp"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        super::daemon::dies_with_test(&mut cmd);
        let child = cmd
            .spawn()
            .expect("spawn containerd (apt-get install containerd)");
        let mut c = Containerd {
            dir,
            child: Some(child),
            cri: false,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.child.as_mut().unwrap().try_wait().unwrap() {
                c.child = None;
                panic!("containerd exited at startup ({status}); log:\n{}", c.log());
            }
            if c.socket().exists() {
                let o = c.ctr(&["version"]);
                if o.status.success() {
                    let plugins = c.ctr_ok(&["plugins", "ls"]);
                    c.cri = plugins.lines().any(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        f.len() >= 3
                            && f[0] == "io.containerd.grpc.v1"
                            && f[1] == "cri"
                            && f[f.len() - 1] == "ok"
                    });
                    return c;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "containerd did not answer on {} within 30 s; log:\n{}",
                    c.socket().display(),
                    c.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr -a SOCK -n k8s.io ARGS` (the namespace kubelet's CRI uses).
    pub fn ctr(&self, args: &[&str]) -> Output {
        bounded("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "k8s.io", "--connect-timeout", "10s"])
            .args(args)
            .env("TMPDIR", self.dir.path().join("tmp"))
            .stdin(Stdio::null())
            .output()
            .expect("spawn timeout ctr")
    }

    /// Runs `ctr` and asserts success; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "ctr {args:?} failed ({}):\n{}\ncontainerd log (tail):\n{}",
            o.status,
            output_text(&o),
            tail(&self.log(), 30)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `ctr images import [EXTRA...] ARCHIVE` (imports and unpacks); returns its stdout.
    pub fn import(&self, archive: &Path, extra: &[&str]) -> String {
        let mut a = vec!["images", "import"];
        a.extend_from_slice(extra);
        a.push(archive.to_str().unwrap());
        let out = self.ctr_ok(&a);
        self.settle();
        out
    }

    /// Whether the CRI plugin runs (then every image also has a `sha256:<config>` name).
    pub fn cri(&self) -> bool {
        self.cri
    }

    /// With CRI: waits (at most 20 s) until CRI has named every image by its ID (a
    /// `sha256:…` name with the same target), so listings and removals do not race it.
    fn settle(&self) {
        if !self.cri {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let imgs = self.images();
            let done = imgs
                .iter()
                .filter(|i| !i.name.starts_with("sha256:"))
                .all(|n| {
                    imgs.iter()
                        .any(|i| i.name.starts_with("sha256:") && i.digest == n.digest)
                });
            if done {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "containerd's CRI did not name every image by its ID within 20 s: {imgs:?}\nlog (tail):\n{}",
                    tail(&self.log(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `producer | ctr images import -`; asserts both succeed, returns ctr's stdout.
    pub fn import_from(&self, producer: &mut Command) -> String {
        let mut c = bounded("ctr");
        c.arg("--address")
            .arg(self.socket())
            .args([
                "--namespace",
                "k8s.io",
                "--connect-timeout",
                "10s",
                "images",
                "import",
                "-",
            ])
            .env("TMPDIR", self.dir.path().join("tmp"));
        let (po, co) = pipe(producer, &mut c);
        assert!(
            po.status.success(),
            "producer of ctr import failed ({}):\n{}",
            po.status,
            output_text(&po)
        );
        assert!(
            co.status.success(),
            "ctr images import - failed ({}):\n{}",
            co.status,
            output_text(&co)
        );
        self.settle();
        String::from_utf8(co.stdout).unwrap()
    }

    /// `ctr images ls`, parsed (REF, TYPE, DIGEST columns), sorted by name. In `k8s.io`, the
    /// CRI plugin adds a `sha256:<config digest>` name (the image ID) for every image.
    pub fn images(&self) -> Vec<CtrImage> {
        let out = self.ctr_ok(&["images", "ls"]);
        let mut v: Vec<CtrImage> = out
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut f = l.split_whitespace();
                let mut next = || {
                    f.next()
                        .unwrap_or_else(|| panic!("ctr images ls line: {l}"))
                        .to_string()
                };
                CtrImage {
                    name: next(),
                    media_type: next(),
                    digest: next(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Removes every image.
    pub fn remove_all(&self) {
        let names = self.ctr_ok(&["images", "ls", "-q"]);
        let names: Vec<&str> = names.lines().filter(|l| !l.is_empty()).collect();
        if !names.is_empty() {
            let mut a = vec!["images", "rm", "--sync"];
            a.extend(names);
            self.ctr_ok(&a);
        }
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::daemon::stop(child, Duration::from_secs(10));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        // Unpacking mounts only briefly, but a killed daemon may leave one under its root.
        super::daemon::unmount_under(self.dir.path());
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

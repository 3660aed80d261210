//! Owns the test that runs the runbook docs/airgap.md: every fenced `sh connected` and
//! `sh offline` block, in order, with `bash -euo pipefail`, against two real loopback registries
//! (upstream with sample images and a hand-made Ollama-style model, and the site's), private
//! podman storage, dockerd and containerd; then checks what the runbook promised arrived (the
//! site registry's digests, the Ollama models directory, the model files). The placeholder
//! convention is written at the top of docs/airgap.md.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::harness::cmd::sha256;
use crate::harness::docker::Docker;
use crate::harness::fixtures::{layout, noise, push, push_one, PushMode};
use crate::harness::peers::{bounded, Containerd};
use crate::harness::registry::{Registry, Variant};

const RUNBOOK: &str = include_str!("../../docs/airgap.md");

#[derive(Debug)]
enum Step {
    Block { side: String, line: usize, code: String },
    Hook(String),
}

/// The runbook's steps in order. Every `sh` block must say its side: an untagged one would
/// be a command no test runs.
fn steps(md: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let mut lines = md.lines().enumerate();
    while let Some((i, l)) = lines.next() {
        if let Some(h) = l.trim().strip_prefix("<!-- airgap-test:").and_then(|h| h.strip_suffix("-->")) {
            out.push(Step::Hook(h.trim().to_string()));
            continue;
        }
        let Some(info) = l.strip_prefix("```") else { continue };
        let mut code = String::new();
        for (_, body) in lines.by_ref() {
            if body.starts_with("```") {
                break;
            }
            code.push_str(body);
            code.push('\n');
        }
        let words: Vec<&str> = info.split_whitespace().collect();
        match words.as_slice() {
            ["sh", side @ ("connected" | "offline")] => out.push(Step::Block { side: side.to_string(), line: i + 1, code }),
            // The signature gate runs like any offline block: the test signs every image first.
            ["sh", "offline", "needs-key"] => out.push(Step::Block { side: "offline".to_string(), line: i + 1, code }),
            ["sh", ..] | ["bash", ..] | ["shell", ..] => panic!("docs/airgap.md:{}: a shell block must be `sh connected` or `sh offline` (found {info:?})", i + 1),
            _ => {}
        }
    }
    out
}

/// An Ollama-style model, as Ollama's registry serves one: a Docker schema2 manifest, a Docker
/// config naming the model, layers of `application/vnd.ollama.image.*` types. Pushed by hand.
pub fn push_ollama_model(reg: &Registry, repo: &str, tag: &str) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut gguf = b"GGUF\x03\x00\x00\x00".to_vec();
    gguf.extend(noise(11, 150_000));
    let layers = vec![
        ("application/vnd.ollama.image.model".to_string(), gguf),
        ("application/vnd.ollama.image.template".to_string(), b"{{ .Prompt }}".to_vec()),
        ("application/vnd.ollama.image.params".to_string(), br#"{"stop":["</s>"]}"#.to_vec()),
    ];
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| sha256(d)).collect();
    let config = serde_json::to_vec(&json!({"model_format": "gguf", "model_family": "llama", "model_type": "1B", "file_type": "Q4_0", "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}})).unwrap();
    let cd = reg.curl_put_blob(repo, &config);
    let ls: Vec<serde_json::Value> = layers.iter().map(|(mt, d)| json!({"mediaType": mt, "digest": reg.curl_put_blob(repo, d), "size": d.len()})).collect();
    let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": config.len()}, "layers": ls})).unwrap();
    reg.curl_put_manifest(repo, tag, "application/vnd.docker.distribution.manifest.v2+json", &m);
    let mut blobs = vec![(sha256(&config), config)];
    blobs.extend(layers.into_iter().map(|(_, d)| (sha256(&d), d)));
    (m, blobs)
}

fn write_model_dir(dir: &Path) {
    fs::create_dir_all(dir.join("tokenizer")).unwrap();
    fs::write(dir.join("llama-q4.gguf"), noise(12, 40_000)).unwrap();
    fs::write(dir.join("tokenizer/tokenizer.json"), br#"{"vocab":{}}"#).unwrap();
    fs::write(dir.join("README.md"), b"# llama q4\n").unwrap();
}

fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = crate::harness::cmd::files_under(dir).into_iter().map(|p| (p.strip_prefix(dir).unwrap().to_path_buf(), fs::read(&p).unwrap())).collect();
    v.sort();
    v
}

#[test]
fn airgap_runbook_runs_as_written() {
    let steps = steps(RUNBOOK);
    assert!(steps.iter().filter(|s| matches!(s, Step::Block { .. })).count() >= 15, "the runbook lost its blocks: {steps:?}");

    let upstream = Registry::start(Variant::Plain);
    let site = Registry::start(Variant::Plain);
    let simple = push_one(&upstream, "simple");
    let multi = push_one(&upstream, "multi");
    let zstd = push_one(&upstream, "zstd");
    let (ollama_manifest, ollama_blobs) = push_ollama_model(&upstream, "library/tinyllama", "1b");
    // Upstream signs what it publishes (cosign's format, a key made by openssl); the site
    // carries only the public half.
    let keys = tempfile::tempdir().unwrap();
    let key = crate::harness::signer::Key::new(keys.path(), "cosign", false);
    for (repo, digest) in [(&simple.repo, &simple.digest), (&multi.repo, &multi.digest), (&zstd.repo, &zstd.digest)] {
        crate::harness::signer::sign(&upstream, repo, digest, &key);
    }
    crate::harness::signer::sign(&upstream, "library/tinyllama", &sha256(&ollama_manifest), &key);

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (usb, connected, offline, models, ollama) = (r.join("usb"), r.join("connected"), r.join("offline"), r.join("model-src"), r.join("ollama-models"));
    for d in [&usb, &connected, &offline, &r.join("home"), &r.join("tmp"), &r.join("podman")] {
        fs::create_dir_all(d).unwrap();
    }
    write_model_dir(&models);
    fs::copy(keys.path().join("cosign.pub"), usb.join("cosign.pub")).unwrap();
    // podman with a private storage, by its own configuration variables.
    let p = r.join("podman");
    fs::write(p.join("storage.conf"), format!("[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/root\"\n", p.display())).unwrap();
    fs::write(p.join("containers.conf"), format!("[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\ntmp_dir = \"{}/libpod-tmp\"\n", p.display())).unwrap();
    let docker = Docker::start();
    let ctd = Containerd::start();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ocibundle")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());

    let mut ran = 0;
    // The volume the corrupt-volume hook damaged, with its good bytes, until repair-volume.
    let mut damaged: Option<(PathBuf, Vec<u8>)> = None;
    let mut expect_damage = false;
    for step in &steps {
        let (side, line, code) = match step {
            Step::Hook(h) if h == "new-version" => {
                // Upstream moves a tag between two deliveries.
                push(&upstream, &layout().dir, "shared", &format!("{}:v1", simple.repo), PushMode::Oci);
                continue;
            }
            Step::Hook(h) if h == "corrupt-volume" => {
                let v = usb.join("site.bundle.002");
                let good = fs::read(&v).unwrap();
                let mut bad = good.clone();
                let at = good.len() / 2;
                bad[at] ^= 0x20;
                fs::write(&v, bad).unwrap();
                damaged = Some((v, good));
                expect_damage = true;
                continue;
            }
            Step::Hook(h) if h == "repair-volume" => {
                let (v, good) = damaged.take().expect("repair-volume after corrupt-volume");
                fs::write(v, good).unwrap();
                continue;
            }
            Step::Hook(h) => panic!("docs/airgap.md: unknown test hook {h:?}"),
            Step::Block { side, line, code } => (side, line, code),
        };
        let cwd = if side == "connected" { &connected } else { &offline };
        let out = bounded("bash")
            .args(["-euo", "pipefail", "-c", code])
            .current_dir(cwd)
            .env("PATH", &path)
            .env("HOME", r.join("home"))
            .env("TMPDIR", r.join("tmp"))
            .env("OCIBUNDLE_STORE", cwd.join("store"))
            .env("OCIBUNDLE_RETRY_BASE_MS", "20")
            .env("REGISTRY", upstream.host())
            .env("SITE_REGISTRY", site.host())
            .env("USB", &usb)
            .env("VOLUME_SIZE", "60k")
            .env("MODEL_DIR", &models)
            .env("OLLAMA_MODELS", &ollama)
            .env("CONTAINERS_STORAGE_CONF", p.join("storage.conf"))
            .env("CONTAINERS_CONF", p.join("containers.conf"))
            .env("DOCKER_HOST", format!("unix://{}", docker.socket().display()))
            .env("DOCKER_CONFIG", r.join("home/.docker"))
            .env("CONTAINERD_ADDRESS", ctd.socket())
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_DATA_HOME")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .output()
            .expect("spawn bash");
        assert!(
            out.status.success(),
            "docs/airgap.md:{line} ({side} side) failed ({}):\n{code}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if std::mem::take(&mut expect_damage) {
            // What the runbook says the reader will see: the volume named, the blob named.
            let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(all.contains("site.bundle.002: FAILED") && all.contains("does not match its digest") && all.contains("content hashes to"), "docs/airgap.md:{line}: the damage was not reported:\n{all}");
        }
        ran += 1;
    }
    assert!(damaged.is_none(), "a damaged volume was never repaired");
    assert!(ran >= 15);

    // Volumes: the sample bundle needed more than one at 60k.
    assert!(usb.join("site.bundle.002").exists(), "{:?}", fs::read_dir(&usb).unwrap().flatten().map(|e| e.file_name()).collect::<Vec<_>>());
    // The site registry serves what the lock pinned, then the update, under the new names.
    let shared = &layout().image("shared").manifest.digest;
    assert_eq!(&site.content_digest("mirror/test/simple", "v1"), shared, "the delta delivered the new version");
    assert_eq!(site.content_digest("mirror/library/tinyllama", "1b"), sha256(&ollama_manifest));
    site.content_digest("models/llama-files", "q4");
    // Ollama's directory: every blob as sha256-<hex>, the manifest's exact bytes at its path.
    let host = upstream.host();
    assert_eq!(fs::read(ollama.join("manifests").join(&host).join("library/tinyllama/1b")).unwrap(), ollama_manifest);
    for (d, data) in &ollama_blobs {
        assert_eq!(&fs::read(ollama.join("blobs").join(format!("sha256-{}", &d[7..]))).unwrap(), data, "{d}");
    }
    assert!(tree(&ollama.join("blobs")).len() == ollama_blobs.len(), "no temp files left");
    // The model files came back out byte for byte.
    assert_eq!(tree(&offline.join("llama-q4")), tree(&models));
    // The engines hold the images.
    let names = ctd.ctr_ok(&["images", "ls", "-q"]);
    assert!(names.contains(&simple.reference), "{names}");
    let dk = docker.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(dk.contains(&format!("{}/test/multi:v1", upstream.host())), "{dk}");
    let pm = Command::new("podman").args(["images", "--format", "{{.Repository}}:{{.Tag}}"]).env("CONTAINERS_STORAGE_CONF", p.join("storage.conf")).env("CONTAINERS_CONF", p.join("containers.conf")).env("TMPDIR", r.join("tmp")).output().unwrap();
    assert!(String::from_utf8_lossy(&pm.stdout).contains("test/zstd:v1"), "{pm:?}");
}

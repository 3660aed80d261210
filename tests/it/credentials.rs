//! Owns the credential-helper tests: docker `config.json` naming a helper per registry
//! (`credHelpers`) or for all (`credsStore`), the helper a program on PATH speaking docker's
//! credential-helper protocol (`docker-credential-NAME get`, server on stdin, JSON out), used by
//! `fetch` and `push` against the real registry with htpasswd auth; nothing of them reaches
//! the store, a bundle or any output.
//!
//! Expected values: the registry's credentials and manifest digests; the protocol as docker
//! documents it (a helper that knows nothing exits non-zero); docs/cli.md for the error
//! contract. No timing.
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::cmd::{Env, error_line, files_under, text};
use crate::harness::fixtures::push_one;
use crate::harness::registry::{Registry, Variant};

/// A helper `docker-credential-NAME` in `dir` that answers `user`/`pass` for `server` only,
/// "not found" (exit 1) for anything else, and logs every server it is asked about.
fn write_helper(dir: &Path, name: &str, server: &str, user: &str, pass: &str) -> PathBuf {
    let log = dir.join(format!("{name}.log"));
    let script = format!(
        r#"#!/bin/sh
[ "$1" = get ] || exit 2
read -r server
echo "$server" >> '{log}'
if [ "$server" = '{server}' ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{pass}"}}\n' "$server"
else
  echo "credentials not found in native keychain"
  exit 1
fi
"#,
        log = log.display()
    );
    let p = dir.join(format!("docker-credential-{name}"));
    fs::write(&p, script).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    log
}

/// `ocibundle ARGS` with `DOCKER_CONFIG=config_dir` and the helpers' dir first on PATH.
fn run(env: &Env, config_dir: &Path, helpers: &Path, args: &[&str]) -> Output {
    let path = format!("{}:{}", helpers.display(), std::env::var("PATH").unwrap_or_default());
    env.cmd().env("DOCKER_CONFIG", config_dir).env("PATH", path).args(args).output().expect("spawn ocibundle")
}

/// The password as it could be leaked: plain, and inside base64 of `user:pass` (basic auth).
fn secret_forms(user: &str, pass: &str) -> Vec<String> {
    use base64::Engine as _;
    vec![pass.to_string(), base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn asked(log: &Path) -> Vec<String> {
    fs::read_to_string(log).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn credential_helpers_serve_fetch_and_push() {
    let src = Registry::start(Variant::Auth);
    let simple = push_one(&src, "simple");
    let dst = Registry::start(Variant::Auth);
    let env = Env::new();
    let helpers = env.path().join("helpers");
    let config = env.path().join("docker");
    fs::create_dir_all(&helpers).unwrap();
    fs::create_dir_all(&config).unwrap();
    let config_json = config.join("config.json");

    // credHelpers: the helper named for the source registry serves fetch.
    let src_log = write_helper(&helpers, "srcstore", &src.host(), &src.user, &src.pass);
    fs::write(&config_json, serde_json::json!({ "credHelpers": { src.host(): "srcstore" } }).to_string()).unwrap();
    let o = run(&env, &config, &helpers, &["fetch", &simple.reference]);
    assert!(o.status.success(), "fetch with a credential helper: {}", text(&o));
    assert!(!text(&o).contains(&src.pass), "the password reached the output");
    assert!(asked(&src_log).iter().all(|s| *s == src.host()), "the helper was asked about {:?}", asked(&src_log));
    assert!(!asked(&src_log).is_empty(), "the helper was never asked");

    // Nothing of the credentials reaches the store or a bundle made from it.
    let b = env.path().join("x.bundle");
    env.ok(&["bundle", "-o", b.to_str().unwrap(), &simple.reference]);
    let secrets = secret_forms(&src.user, &src.pass);
    for f in files_under(&env.store()).into_iter().chain([b.clone(), env.path().join("x.bundle.sha256")]) {
        let data = fs::read(&f).unwrap();
        for secret in &secrets {
            assert!(!contains(&data, secret.as_bytes()), "{} holds a form of the password", f.display());
        }
    }

    // credsStore: one helper for every registry serves push.
    let all_log = write_helper(&helpers, "allstore", &dst.host(), &dst.user, &dst.pass);
    fs::write(&config_json, serde_json::json!({ "credsStore": "allstore" }).to_string()).unwrap();
    let to = format!("{}/mirror", dst.host());
    let o = run(&env, &config, &helpers, &["push", &simple.reference, "--to", &to]);
    assert!(o.status.success(), "push with a credential store: {}", text(&o));
    assert!(!text(&o).contains(&dst.pass), "the password reached the output");
    assert!(asked(&all_log).contains(&dst.host()), "the store was not asked about {}: {:?}", dst.host(), asked(&all_log));
    let target = format!("{to}/test/simple:v1");
    assert_eq!(dst.content_digest("mirror/test/simple", "v1"), simple.digest, "{target} is not the pushed manifest");

    // A helper that knows nothing of the registry: no credentials, so the registry's 401 is
    // the one error, naming the image.
    fs::write(&config_json, serde_json::json!({ "credHelpers": { src.host(): "allstore" } }).to_string()).unwrap();
    let fresh = Env::new();
    let args = ["fetch", simple.reference.as_str()];
    let o = run(&fresh, &config, &helpers, &args);
    let e = error_line(&args, &o);
    assert!(e.contains(&simple.reference), "the error does not name the image: {e}");
    assert!(e.contains("requires authentication"), "the error does not say credentials are missing: {e}");

    // A helper that is not installed: the error names it.
    fs::write(&config_json, serde_json::json!({ "credHelpers": { src.host(): "not-installed" } }).to_string()).unwrap();
    let o = run(&fresh, &config, &helpers, &args);
    let e = error_line(&args, &o);
    assert!(e.contains("docker-credential-not-installed"), "the error does not name the missing helper: {e}");
    assert!(!text(&o).contains(&src.pass));
}

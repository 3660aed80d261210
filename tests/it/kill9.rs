//! kill -9 at seeded random moments of fetch, bundle, import, export (all three forms) and
//! push, then a rerun (issue 11): the rerun succeeds, `store fsck` is clean, every output is
//! byte-identical to an uninterrupted run's, and no temp file or partial is left behind.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::cmd::{s, Env};
use crate::harness::fixtures;
use crate::harness::registry::{Registry, Variant};

/// Kill points per command; `OCIBUNDLE_KILLS` raises it.
fn kills() -> usize {
    std::env::var("OCIBUNDLE_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(4)
}

/// A small deterministic PRNG (xorshift), so a failing schedule can be replayed by its seed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Every path under `dir` whose name says it is a temp or a partial.
fn litter(dir: &Path) -> Vec<PathBuf> {
    crate::harness::cmd::files_under(dir).into_iter().filter(|p| {
        let n = p.file_name().unwrap().to_string_lossy().to_string();
        n.contains(".tmp-") || n.ends_with(".partial") || n.contains(".ready-") || n.starts_with("tmp-") || p.components().any(|c| c.as_os_str().to_string_lossy().contains(".tmp-"))
    }).collect()
}

/// Runs `ocibundle ARGS` in `env`, kills it with SIGKILL after `after`, and waits for it.
fn kill_after(env: &Env, args: &[&str], after: Duration) {
    let mut c: Command = env.cmd();
    c.args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

/// How long an uninterrupted `ocibundle ARGS` takes (it must succeed).
fn timed(env: &Env, args: &[&str]) -> Duration {
    let t = Instant::now();
    env.ok(args);
    t.elapsed()
}

fn stored(env: &Env) -> String {
    env.json(&["store", "ls"])["images"].to_string()
}

#[test]
fn killed_runs_resume_to_the_same_result_and_leave_nothing() {
    let reg = Registry::start(Variant::Plain);
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = fixtures::big_layout(&dir.path().join("big"), 48 << 20, 9);
    fixtures::push(&reg, &layout, "big", "test/big:v1", fixtures::PushMode::Oci);
    let simple = fixtures::push_one(&reg, "simple");
    let big = format!("{}/test/big:v1", reg.host());
    let refs = [big.as_str(), simple.reference.as_str()];
    let seed = std::env::var("OCIBUNDLE_KILL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    let mut rng = Rng(seed);
    let out = |n: &str| dir.path().join(n);

    // The uninterrupted runs: what every killed-and-rerun one must equal.
    let base = Env::new();
    let mut fetch = vec!["fetch"];
    fetch.extend(refs);
    let t_fetch = timed(&base, &fetch);
    let want_store = stored(&base);
    let t_bundle = timed(&base, &["bundle", "--all", "-o", s(&out("want.bundle"))]);
    let t_docker = timed(&base, &["export", "--all", "--docker-archive", s(&out("want.docker.tar"))]);
    let t_oci = timed(&base, &["export", "--all", "--oci-archive", s(&out("want.oci.tar"))]);
    let t_layout = timed(&base, &["export", "--all", "--oci-layout", s(&out("want.layout"))]);
    let imp = Env::new();
    let t_import = timed(&imp, &["import", s(&out("want.bundle"))]);
    let t_push = timed(&base, &["push", "--all", "--to", &format!("{}/want", reg.host())]);

    let mut survived = 0;
    for k in 0..kills() {
        let at = |t: Duration, rng: &mut Rng| Duration::from_micros(rng.below(t.as_micros() as u64 * 5 / 4));
        let why = |what: &str| format!("{what}, kill point {k}, seed {seed:#x} (OCIBUNDLE_KILL_SEED)");

        // fetch
        let env = Env::new();
        kill_after(&env, &fetch, at(t_fetch, &mut rng));
        env.ok(&fetch);
        env.ok(&["store", "fsck"]);
        assert_eq!(stored(&env), want_store, "{}", why("fetch"));
        assert!(litter(&env.store()).is_empty(), "{}: left {:?}", why("fetch"), litter(&env.store()));

        // bundle, and the three exports: the rerun writes the same bytes, no temp beside them.
        let outdir = out(&format!("run{k}"));
        std::fs::create_dir_all(&outdir).unwrap();
        for (name, args, t, want) in [
            ("b.bundle", vec!["bundle", "--all", "-o"], t_bundle, "want.bundle"),
            ("d.tar", vec!["export", "--all", "--docker-archive"], t_docker, "want.docker.tar"),
            ("o.tar", vec!["export", "--all", "--oci-archive"], t_oci, "want.oci.tar"),
        ] {
            let target = outdir.join(name);
            let mut a = args.clone();
            a.push(s(&target));
            kill_after(&env, &a, at(t, &mut rng));
            a.push("--force");
            env.ok(&a);
            assert!(std::fs::read(&target).unwrap() == std::fs::read(out(want)).unwrap(), "{}: output differs", why(name));
        }
        let lay = outdir.join("layout");
        let mut a = vec!["export", "--all", "--oci-layout", s(&lay)];
        kill_after(&env, &a, at(t_layout, &mut rng));
        a.push("--force");
        env.ok(&a);
        for f in crate::harness::cmd::files_under(&out("want.layout")) {
            let rel = f.strip_prefix(out("want.layout")).unwrap();
            assert!(std::fs::read(lay.join(rel)).ok() == Some(std::fs::read(&f).unwrap()), "{}: {} differs", why("oci layout"), rel.display());
        }
        assert!(litter(&outdir).is_empty(), "{}: left {:?}", why("bundle/export"), litter(&outdir));

        // import
        let env2 = Env::new();
        kill_after(&env2, &["import", s(&out("want.bundle"))], at(t_import, &mut rng));
        env2.ok(&["import", s(&out("want.bundle"))]);
        env2.ok(&["store", "fsck"]);
        assert_eq!(stored(&env2), want_store, "{}", why("import"));
        assert!(litter(&env2.store()).is_empty(), "{}: left {:?}", why("import"), litter(&env2.store()));

        // push: the rerun completes and the registry serves the same digests.
        let to = format!("{}/kill{k}", reg.host());
        kill_after(&env, &["push", "--all", "--to", &to], at(t_push, &mut rng));
        env.ok(&["push", "--all", "--to", &to]);
        for (repo, want) in [("test/big", reg.content_digest("want/test/big", "v1")), ("test/simple", simple.digest.clone())] {
            assert_eq!(reg.content_digest(&format!("kill{k}/{repo}"), "v1"), want, "{}", why("push"));
        }
        survived += 1;
    }
    assert_eq!(survived, kills());
}

//! Owns the seeded mutation test of every reader of untrusted bytes (issue 11): bundle files and
//! streams (header, entry headers, index, trailer), docker-archives and OCI archives (tar headers,
//! manifest.json, index.json, manifests, configs), manifests and configs on their own, a store's
//! index.json and oci-layout, and inventories. Each case must end in success or one clean error
//! line: never a panic, never a hang (a per-case deadline), never memory above a bound (the
//! process's peak RSS).
//!
//! `OCIBUNDLE_MUTATIONS=N` runs N cases (default 4000), `OCIBUNDLE_MUTATION_SEED=S` another
//! seed, `OCIBUNDLE_MUTATION_CASE=C` case C alone (what a failure report names), and
//! `OCIBUNDLE_MUTATION_TRACE=1` prints each case before it runs (a stack overflow aborts the
//! process: the last line printed names the case).
mod archives;
mod bundles;
mod bytes;
mod json;
mod rng;
mod seeds;
mod tar;
mod targets;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rng::{case_seed, Rng};
use targets::{Input, Outcome, Scratch, Target};

const DEFAULT_CASES: u64 = 4000;
const DEFAULT_SEED: u64 = 0x0c1b_0d1e_2026_0011;
/// Far more than any case needs (a few ms each), so only a real hang trips it, even on a
/// loaded 2-core machine.
const CASE_DEADLINE: Duration = Duration::from_secs(30);
/// Peak resident memory of the whole test process; the seeds are a few KiB, so a reader that
/// goes near this is allocating from a length it was told, not from what it read.
const MEMORY_BOUND: u64 = 512 << 20;
/// One line a user can read: an error echoing a 10 000-byte hostile string is not one.
const MAX_LINE: usize = 1024;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// A `/proc/self/status` field in bytes (VmRSS, VmHWM).
fn status_bytes(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix(field)?.trim_start_matches(':').trim().strip_suffix("kB")?.trim().parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// What is wrong with an outcome's messages, if anything.
fn unclean(o: &Outcome) -> Option<String> {
    o.lines.iter().find_map(|l| {
        if l.trim().is_empty() {
            Some("an empty error message".to_string())
        } else if l.contains('\n') {
            Some(format!("an error of more than one line: {:?}", l.chars().take(300).collect::<String>()))
        } else if l.len() > MAX_LINE {
            Some(format!("an error line of {} bytes: {:?}...", l.len(), l.chars().take(200).collect::<String>()))
        } else {
            None
        }
    })
}

enum Msg {
    Start { case: u64, target: Target },
    Done { case: u64, target: Target, result: Result<Outcome, String>, rss: u64 },
}

fn pick_target(rng: &mut Rng) -> Target {
    let total: usize = targets::ALL.iter().map(|(_, w)| w).sum();
    let mut n = rng.below(total);
    for (t, w) in targets::ALL {
        if n < *w {
            return *t;
        }
        n -= w;
    }
    unreachable!()
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".into())
}

#[test]
fn mutation_every_untrusted_reader_ends_in_success_or_one_clean_error() {
    let seed = env_u64("OCIBUNDLE_MUTATION_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("OCIBUNDLE_MUTATIONS").unwrap_or(DEFAULT_CASES);
    let only = env_u64("OCIBUNDLE_MUTATION_CASE");
    let trace = std::env::var_os("OCIBUNDLE_MUTATION_TRACE").is_some();
    eprintln!("mutation: seed {seed:#x}, {cases} cases (OCIBUNDLE_MUTATION_SEED / OCIBUNDLE_MUTATIONS / OCIBUNDLE_MUTATION_CASE)");
    // tmpfs where there is one: imports fsync, and thousands of them on a disk would be the run.
    let base = if std::path::Path::new("/dev/shm").is_dir() { tempfile::tempdir_in("/dev/shm") } else { tempfile::tempdir() }.unwrap();
    let seeds = seeds::build(&base.path().join("seeds"));
    let scratch_dir = base.path().join("scratch");
    std::fs::create_dir_all(&scratch_dir).unwrap();
    let scratch = Scratch::new(&scratch_dir, &seeds);

    for (t, _) in targets::ALL {
        for (i, input) in t.seeds(&seeds).iter().enumerate() {
            let o = t.run(input, &seeds, &scratch);
            assert!(o.ok && o.lines.is_empty(), "{} seed {i} is not read as valid: {:?}", t.name(), o.lines);
        }
    }

    // Peak RSS counted from here: the seeds and the build of this binary's other tests are not ours.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<Msg>();
    let list: Vec<u64> = match only {
        Some(c) => vec![c],
        None => (0..cases).collect(),
    };
    let worker = {
        let list = list.clone();
        std::thread::Builder::new()
            .name("mutation-cases".into())
            .spawn(move || {
                for case in list {
                    let mut rng = Rng::new(case_seed(seed, case));
                    let target = pick_target(&mut rng);
                    let input: Input = target.mutate(&mut rng, &seeds);
                    if trace {
                        eprintln!("mutation: case {case} {} ({} bytes)", target.name(), input.bytes.len());
                    }
                    let _ = tx.send(Msg::Start { case, target });
                    let result = catch_unwind(AssertUnwindSafe(|| target.run(&input, &seeds, &scratch))).map_err(panic_text);
                    let _ = tx.send(Msg::Done { case, target, result, rss: status_bytes("VmRSS") });
                }
            })
            .unwrap()
    };

    let mut failures: Vec<String> = Vec::new();
    let mut tally: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut running: Option<(u64, Target)> = None;
    let mut done = 0;
    while done < list.len() {
        match rx.recv_timeout(CASE_DEADLINE) {
            Ok(Msg::Start { case, target }) => running = Some((case, target)),
            Ok(Msg::Done { case, target, result, rss }) => {
                done += 1;
                running = None;
                let what = format!("seed {seed:#x} case {case} ({})", target.name());
                match result {
                    Err(p) => failures.push(format!("{what}: panicked: {p}")),
                    Ok(o) => {
                        let t = tally.entry(target.name()).or_default();
                        if o.ok { t.0 += 1 } else { t.1 += 1 }
                        if let Some(why) = unclean(&o) {
                            failures.push(format!("{what}: {why}"));
                        }
                    }
                }
                if rss > MEMORY_BOUND {
                    failures.push(format!("{what}: resident memory {} MiB after it, over the {} MiB bound", rss >> 20, MEMORY_BOUND >> 20));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let (case, target) = running.expect("a case is running");
                panic!("seed {seed:#x} case {case} ({}): no result after {CASE_DEADLINE:?}: a hang (rerun it alone with OCIBUNDLE_MUTATION_CASE={case})", target.name());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    worker.join().unwrap();
    let peak = status_bytes("VmHWM");
    eprintln!("mutation: {done} cases in {:.1} s, peak RSS {} MiB", started.elapsed().as_secs_f64(), peak >> 20);
    for (name, (ok, err)) in &tally {
        eprintln!("mutation:   {name:15} {ok:5} read, {err:5} refused");
    }
    assert_eq!(done, list.len(), "the case thread stopped early");
    assert!(peak <= MEMORY_BOUND, "peak RSS {} MiB over the {} MiB bound", peak >> 20, MEMORY_BOUND >> 20);
    assert!(failures.is_empty(), "{} of {done} cases did not end cleanly:\n{}", failures.len(), failures.join("\n"));
}

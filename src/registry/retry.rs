//! The one retry policy of every registry call (pings, tokens, manifests, blob downloads, every
//! push request): retryable failures are tried again with doubling delays or the server's
//! `Retry-After` (both capped), and the budget counts failures *in a row without progress*, so a
//! transfer that advances on every try is never given up, unless the user set a deadline.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The longest wait between two attempts, whatever `Retry-After` asks for.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// A failed attempt: the error, and how long the server asked us to wait (`Retry-After`).
pub type Failure = (Error, Option<Duration>);

/// How often and how patiently to try again.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy<'a> {
    /// Attempts after a failure that follows no progress (429, 5xx, dropped connections).
    pub retries: u32,
    /// The first delay; each further failure in a row doubles it (up to [`MAX_WAIT`]).
    pub base: Duration,
    /// `--retry-timeout`: once this long has passed since a call's first attempt, its next
    /// failure is final even after progress (a link that trickles forever ends somewhere).
    pub give_up_after: Option<Duration>,
    /// Counts every retry, for the run's report.
    pub tally: Option<&'a AtomicU64>,
}

impl RetryPolicy<'_> {
    /// Runs `op` until it succeeds or fails for good. `progress` reads a counter that grows when
    /// an attempt got somewhere (bytes received or uploaded): when it has grown since the last
    /// failure, the failure count starts again from zero. Calls without a notion of progress
    /// pass `|| 0`.
    pub fn run<T>(&self, mut op: impl FnMut() -> std::result::Result<T, Failure>, mut progress: impl FnMut() -> u64) -> Result<T> {
        let start = Instant::now();
        let mut failures = 0u32;
        let mut attempts = 0u64;
        let mut mark = progress();
        loop {
            attempts += 1;
            match op() {
                Ok(v) => return Ok(v),
                Err(_) if crate::cancel::requested() => return Err(Error::Interrupted),
                Err((e, wait)) if e.retryable() => {
                    // A failure after new bytes is not one "without progress": it resets the
                    // count and does not add to it, so the whole budget is there again.
                    let now = progress();
                    let advanced = now > mark;
                    if advanced {
                        failures = 0;
                        mark = now;
                    }
                    if failures >= self.retries {
                        return Err(e);
                    }
                    let mut pause = self.delay(failures, wait);
                    if let Some(limit) = self.give_up_after {
                        let spent = start.elapsed();
                        if spent >= limit {
                            return Err(out_of_time(e, limit, attempts));
                        }
                        // The last wait ends at the deadline: one more try, then it is over.
                        pause = pause.min(limit - spent);
                    }
                    std::thread::sleep(pause);
                    if !advanced {
                        failures += 1;
                    }
                    if let Some(t) = self.tally {
                        t.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// The wait before the attempt after `failures` failures in a row.
    fn delay(&self, failures: u32, asked: Option<Duration>) -> Duration {
        asked.unwrap_or(self.base * 2u32.pow(failures.min(6))).min(MAX_WAIT)
    }
}

/// The last error of a call that ran out of `--retry-timeout`, saying so; final.
fn out_of_time(e: Error, limit: Duration, attempts: u64) -> Error {
    let why = format!("gave up after --retry-timeout {} ({attempts} attempts)", show(limit));
    match e {
        Error::Registry { what, message, .. } => Error::Registry { what, message: format!("{message}; {why}"), retryable: false },
        other => Error::Other(format!("{other}; {why}")),
    }
}

/// A duration as the flag takes it: `90s`, `1500ms`.
fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn cut() -> Failure {
        (Error::Registry { what: "blob".into(), message: "connection lost".into(), retryable: true }, None)
    }

    #[test]
    fn failures_that_follow_progress_do_not_use_up_the_budget() {
        let p = RetryPolicy { retries: 2, base: Duration::ZERO, give_up_after: None, tally: None };
        let got = Cell::new(0u64);
        let tries = Cell::new(0);
        // Ten cuts, each after some new bytes: more cuts than the budget, and still done.
        let r = p.run(
            || {
                tries.set(tries.get() + 1);
                if tries.get() <= 10 {
                    got.set(got.get() + 100);
                    return Err(cut());
                }
                Ok("done")
            },
            || got.get(),
        );
        assert_eq!(r.unwrap(), "done");
        assert_eq!(tries.get(), 11);
    }

    /// Regression (issue 11, found by the fault proxy): the failure that brought new bytes
    /// was itself counted, so after progress only `retries - 1` empty failures were allowed.
    #[test]
    fn after_progress_the_whole_budget_is_there_again() {
        let p = RetryPolicy { retries: 2, base: Duration::ZERO, give_up_after: None, tally: None };
        let got = Cell::new(0u64);
        let tries = Cell::new(0);
        // A cut after new bytes, then two empty failures (the whole budget), then success.
        let r = p.run(
            || {
                tries.set(tries.get() + 1);
                match tries.get() {
                    1 => {
                        got.set(10);
                        Err(cut())
                    }
                    2 | 3 => Err(cut()),
                    _ => Ok("done"),
                }
            },
            || got.get(),
        );
        assert_eq!(r.unwrap(), "done");
        assert_eq!(tries.get(), 4);
    }

    #[test]
    fn failures_in_a_row_without_progress_stop_after_the_budget() {
        let p = RetryPolicy { retries: 2, base: Duration::ZERO, give_up_after: None, tally: None };
        let tries = Cell::new(0);
        let r: Result<()> = p.run(
            || {
                tries.set(tries.get() + 1);
                Err(cut())
            },
            || 0,
        );
        assert!(r.is_err());
        assert_eq!(tries.get(), 3, "the first try and 2 retries");
        let fatal: Result<()> = p.run(|| Err((Error::Other("no".into()), None)), || 0);
        assert!(fatal.is_err());
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let p = RetryPolicy { retries: 5, base: Duration::from_millis(250), give_up_after: None, tally: None };
        assert_eq!(p.delay(0, None), Duration::from_millis(250));
        assert_eq!(p.delay(3, None), Duration::from_secs(2));
        assert_eq!(p.delay(0, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(p.delay(0, Some(Duration::from_secs(3600))), MAX_WAIT);
        assert_eq!(p.delay(30, None), MAX_WAIT);
    }

    #[test]
    fn a_deadline_ends_even_a_call_that_keeps_making_progress() {
        let tally = AtomicU64::new(0);
        // One retry without progress allowed; every try brings bytes, so only the deadline ends it.
        let p = RetryPolicy { retries: 1, base: Duration::from_millis(1), give_up_after: Some(Duration::from_millis(200)), tally: Some(&tally) };
        let got = Cell::new(0u64);
        let r: Result<()> = p.run(
            || {
                got.set(got.get() + 1);
                Err(cut())
            },
            || got.get(),
        );
        let e = r.unwrap_err();
        assert!(!e.retryable(), "{e}");
        assert!(e.to_string().contains("connection lost") && e.to_string().contains("--retry-timeout 200ms"), "{e}");
        assert!(got.get() > 2, "progress on every try keeps it going past the no-progress budget");
        assert_eq!(tally.load(Ordering::Relaxed), got.get() - 1, "every attempt but the first was a retry");
    }
}

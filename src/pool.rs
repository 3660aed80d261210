//! The one worker pool for working on many blobs at once: every core, given order, a 1 MiB buffer
//! per worker. `try_each` stops at the first failure (or a stop request); `map_all` (checks that
//! report every problem) runs every item and returns every result.
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(8)
}

/// Runs `f` on every item, on up to one thread per core (at most 8). Returns the first error,
/// or `Interrupted` if a stop was asked for.
pub fn try_each<T: Sync>(items: &[T], f: impl Fn(&T, &mut [u8]) -> Result<()> + Sync) -> Result<()> {
    try_each_on(items, cores(), f)
}

/// The same on `threads` threads (at least one), taking the items in their order.
pub fn try_each_on<T: Sync>(items: &[T], threads: usize, f: impl Fn(&T, &mut [u8]) -> Result<()> + Sync) -> Result<()> {
    try_each_stopping(items, threads, &AtomicBool::new(false), f)
}

/// The same, raising `stop` at the first failure so that items in progress can give up too.
/// The failure is recorded before `stop` is raised: what workers report after seeing it (an
/// `Interrupted`, say) never takes the place of the failure that stopped them.
pub fn try_each_stopping<T: Sync>(items: &[T], threads: usize, stop: &AtomicBool, f: impl Fn(&T, &mut [u8]) -> Result<()> + Sync) -> Result<()> {
    let queue = Mutex::new(items.iter());
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let threads = threads.clamp(1, items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    if failure.lock().unwrap().is_some() || crate::cancel::requested() {
                        break;
                    }
                    let Some(item) = queue.lock().unwrap().next() else { break };
                    if let Err(e) = f(item, &mut buf) {
                        failure.lock().unwrap().get_or_insert(e);
                        stop.store(true, Ordering::SeqCst);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    if crate::cancel::requested() {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// Runs `f` on every item on up to one thread per core (at most 8), whatever each returns, and
/// gives the results in the items' order.
pub fn map_all<T: Sync, R: Send>(items: &[T], f: impl Fn(&T, &mut [u8]) -> R + Sync) -> Vec<R> {
    let queue = Mutex::new(items.iter().enumerate());
    let results: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..cores().clamp(1, items.len().max(1)) {
            s.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let Some((i, item)) = queue.lock().unwrap().next() else { break };
                    let r = f(item, &mut buf);
                    results.lock().unwrap().push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_all_returns_every_result_in_item_order() {
        let items: Vec<u32> = (0..100).collect();
        let out = map_all(&items, |&i, buf| {
            assert_eq!(buf.len(), 1 << 20);
            if i % 7 == 0 { Err(i) } else { Ok(i * 2) }
        });
        let want: Vec<std::result::Result<u32, u32>> = items.iter().map(|&i| if i % 7 == 0 { Err(i) } else { Ok(i * 2) }).collect();
        assert_eq!(out, want);
        assert!(map_all(&[] as &[u32], |_, _| 0).is_empty());
    }

    #[test]
    fn try_each_stopping_returns_the_failure_not_what_the_stopped_workers_say() {
        for _ in 0..20 {
            let stop = AtomicBool::new(false);
            let r = try_each_stopping(&[0u32, 1], 2, &stop, |&i, _| {
                if i == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    return Err(Error::Other("the real failure".into()));
                }
                while !stop.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                Err(Error::Interrupted)
            });
            assert!(matches!(r, Err(Error::Other(ref m)) if m == "the real failure"), "{r:?}");
        }
    }

    #[test]
    fn try_each_on_returns_the_failure_and_stops_taking_items() {
        let items: Vec<u32> = (0..1000).collect();
        let taken = std::sync::atomic::AtomicUsize::new(0);
        let r = try_each_on(&items, 1, |&i, _| {
            taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i == 3 { Err(Error::Other(format!("item {i}"))) } else { Ok(()) }
        });
        assert!(matches!(r, Err(Error::Other(ref m)) if m == "item 3"));
        assert_eq!(taken.into_inner(), 4);
    }
}

//! The one worker pool for working on many blobs at once: every core, given order, a 1 MiB buffer
//! per worker. `try_each` stops at the first failure (or a stop request); `map_all` (checks that
//! report every problem) runs every item and returns every result. The threads are a rayon pool;
//! the items go through `par_bridge`, which hands them out one at a time in their order (a
//! slice's `par_iter` would split it in halves, and the second worker would start in the middle of
//! a largest-first list, so parallel copies would no longer end together).
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::iter::{ParallelBridge, ParallelIterator};

use crate::error::{Error, Result};

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(8)
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("pool-{i}")).build().expect("starting worker threads")
}

fn buffer() -> Vec<u8> {
    vec![0u8; 1 << 20]
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
    // rayon's own short-circuit returns whichever error it meets, so the first failure is kept
    // here and rayon only sees `Err(())` (which stops the bridge handing out items).
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let threads = threads.clamp(1, items.len().max(1));
    let _ = pool(threads).install(|| {
        items.iter().par_bridge().try_for_each_init(buffer, |buf, item| {
            if failure.lock().unwrap().is_some() || crate::cancel::requested() {
                return Err(());
            }
            f(item, buf).map_err(|e| {
                failure.lock().unwrap().get_or_insert(e);
                stop.store(true, Ordering::SeqCst);
            })
        })
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
    let threads = cores().clamp(1, items.len().max(1));
    let mut results: Vec<(usize, R)> =
        pool(threads).install(|| items.iter().enumerate().par_bridge().map_init(buffer, |buf, (i, item)| (i, f(item, buf))).collect());
    // The bridge gives results in the order they finished.
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

    /// Largest-first lists rely on it: workers take the items in their order, so a second
    /// worker starts on the second item, not in the middle of the list. Item 0 holds its worker
    /// until another item has started: on two workers that must be item 1 (no timing involved).
    #[test]
    fn workers_take_the_items_in_their_order() {
        let items: Vec<usize> = (0..200).collect();
        let started = Mutex::new(Vec::new());
        let seen = std::sync::Condvar::new();
        try_each_on(&items, 2, |&i, _| {
            let mut s = started.lock().unwrap();
            s.push(i);
            seen.notify_all();
            if i == 0 {
                let _s = seen.wait_while(s, |s| s.len() < 2).unwrap();
            }
            Ok(())
        })
        .unwrap();
        let mut first_two = started.into_inner().unwrap()[..2].to_vec();
        first_two.sort();
        assert_eq!(first_two, [0, 1]);
        let one = Mutex::new(Vec::new());
        try_each_on(&items, 1, |&i, _| {
            one.lock().unwrap().push(i);
            Ok(())
        })
        .unwrap();
        assert_eq!(one.into_inner().unwrap(), items);
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

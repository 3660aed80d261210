//! The one worker pool for copying many blobs at once: every core, given order, a 1 MiB buffer
//! per worker, the first failure (or a stop request) ends the others.
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Runs `f` on every item, on up to one thread per core (at most 8). Returns the first error,
/// or `Interrupted` if a stop was asked for.
pub fn try_each<T: Sync>(items: &[T], f: impl Fn(&T, &mut [u8]) -> Result<()> + Sync) -> Result<()> {
    try_each_on(items, std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(8), f)
}

/// The same on `threads` threads (at least one), taking the items in their order.
pub fn try_each_on<T: Sync>(items: &[T], threads: usize, f: impl Fn(&T, &mut [u8]) -> Result<()> + Sync) -> Result<()> {
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

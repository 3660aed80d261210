//! Rebuilding a zlib-replayed deflate body that has seams (`rezlib::Seam`) on several cores: the
//! plain text is read once, in order, and cut into segments; each segment is re-deflated by its
//! own fresh deflater on a worker thread; the outputs are written back in order. Segment jobs in
//! flight are capped across the whole process (one per core), so memory stays bounded however
//! many layers rebuild at once.
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};

use super::exact::{Out, ZlibReplay, read_plain};
use super::rezlib::{Deflater, MARGIN, history_start};
use crate::error::{Error, Result};

/// One segment's work: its plain text with the dictionary in front (`dict` bytes of it) and the
/// margin past its end; how many body bytes of the output are its own (`None`: all, the last).
struct Job {
    index: usize,
    text: Vec<u8>,
    dict: usize,
    bits: u8,
    value: u8,
    take: Option<u64>,
}

/// Segment jobs in flight in the whole process.
struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

static SLOTS: Slots = Slots { used: Mutex::new(0), freed: Condvar::new() };

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 16)
}

impl Slots {
    /// A slot if one is free now, or (with `wait`) once one is.
    fn take(&self, wait: bool) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= cores() {
            if !wait {
                return false;
            }
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        true
    }
    fn give(&self) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        self.freed.notify_one();
    }
}

/// Re-deflates the body from its plain text `plain` (updating `crc`), segment by segment on up to
/// one thread per core, into `out`; returns the body bytes written.
pub(super) fn replay(z: &ZlibReplay, plain: &mut dyn Read, out: &mut Out, crc: &mut flate2::Crc, what: &str) -> Result<u64> {
    let (level, mem_level) = (i32::from(z.level), i32::from(z.mem_level));
    let n = z.seams.len() + 1;
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let jobs_rx = Mutex::new(jobs_rx);
    let (done_tx, done_rx) = mpsc::channel::<(usize, Result<Vec<u8>>)>();
    std::thread::scope(|scope| {
        for _ in 0..cores().min(n) {
            let done_tx = done_tx.clone();
            let jobs_rx = &jobs_rx;
            scope.spawn(move || {
                loop {
                    let job = match jobs_rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    };
                    let index = job.index;
                    if done_tx.send((index, segment(&job, level, mem_level, what))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let r = feed(z, plain, out, crc, what, &jobs_tx, &done_rx);
        drop(jobs_tx);
        r
    })
}

/// One segment re-deflated: the bytes of the body it writes.
fn segment(job: &Job, level: i32, mem_level: i32, what: &str) -> Result<Vec<u8>> {
    let named = |e: Error| Error::Other(format!("{what}: segment {} of the zlib replay: {e}", job.index + 1));
    let mut zs = if job.index == 0 {
        Deflater::new(level, mem_level)
    } else {
        Deflater::at_seam(level, mem_level, &job.text[..job.dict], job.bits, job.value)
    }
    .map_err(named)?;
    let text = &job.text[job.dict..];
    let mut body = Vec::with_capacity(text.len() / 2 + (64 << 10));
    match job.take {
        None => zs.run(text, true, &mut body).map_err(named)?,
        Some(take) => {
            zs.sync(text, &mut body).map_err(named)?;
            if (body.len() as u64) < take {
                return Err(Error::Other(format!(
                    "{what}: segment {} of the zlib replay wrote {} bytes, not the {take} its record says (the record does not fit the plain stream)",
                    job.index + 1,
                    body.len()
                )));
            }
            body.truncate(take as usize);
        }
    }
    Ok(body)
}

/// The reading and writing side: plain text in order, cut into jobs, outputs written in order.
fn feed(z: &ZlibReplay, plain: &mut dyn Read, out: &mut Out, crc: &mut flate2::Crc, what: &str, jobs: &mpsc::Sender<Job>, done: &mpsc::Receiver<(usize, Result<Vec<u8>>)>) -> Result<u64> {
    let n = z.seams.len() + 1;
    // Plain text read so far, from plain offset `held_from` on: the next segment's dictionary,
    // its own text and the margin past it.
    let mut held: Vec<u8> = Vec::new();
    let mut held_from = 0u64;
    let mut read = 0u64;
    let mut sent = 0usize;
    let mut written = 0usize;
    let mut in_flight = 0usize;
    let mut ready: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let mut total = 0u64;
    let result = (|| {
        while written < n {
            // Hand out the next segment when a slot is free (waiting for one only when nothing of
            // ours is in flight, so two rebuilds never wait on each other's slots).
            if sent < n && SLOTS.take(in_flight == 0) {
                in_flight += 1;
                let start = if sent == 0 { 0 } else { z.seams[sent - 1].plain_at };
                let end = if sent + 1 < n { z.seams[sent].plain_at + MARGIN } else { z.plain_len };
                if end > read {
                    let have = held.len();
                    held.resize(have + (end - read) as usize, 0);
                    read_plain(plain, &mut held[have..], what)?;
                    crc.update(&held[have..]);
                    read = end;
                }
                let dict = if sent == 0 { 0 } else { (start - history_start(start)) as usize };
                let from = (start - dict as u64 - held_from) as usize;
                let text = held[from..(end - held_from) as usize].to_vec();
                let (bits, value) = if sent == 0 { (0, 0) } else { (z.seams[sent - 1].bits, z.seams[sent - 1].value) };
                let take = (sent + 1 < n).then(|| z.seams[sent].byte_at - if sent == 0 { 0 } else { z.seams[sent - 1].byte_at });
                // What the next segment needs from here on: its dictionary and text.
                if sent + 1 < n {
                    let keep = history_start(z.seams[sent].plain_at);
                    held.drain(..(keep - held_from) as usize);
                    held_from = keep;
                }
                if jobs.send(Job { index: sent, text, dict, bits, value, take }).is_err() {
                    return Err(Error::Other(format!("{what}: the zlib replay's workers stopped")));
                }
                sent += 1;
                continue;
            }
            // Otherwise write out the next segment once it is done.
            while !ready.contains_key(&written) {
                let (i, r) = done.recv().map_err(|_| Error::Other(format!("{what}: the zlib replay's workers stopped")))?;
                SLOTS.give();
                in_flight -= 1;
                ready.insert(i, r?);
            }
            let body = ready.remove(&written).expect("present");
            out.put(&body)?;
            total += body.len() as u64;
            written += 1;
        }
        Ok(total)
    })();
    // Slots of jobs still in flight (after an error) come back as they finish.
    for _ in 0..in_flight {
        if done.recv().is_ok() {
            SLOTS.give();
        }
    }
    result
}

//! Rebuilding a replayed deflate body that comes in independent segments on several cores: a
//! zlib replay, cut at its seams (`rezlib::Seam`; one segment if it has none), or pigz's jobs
//! (`repigz`). The plain text is read
//! once, in order, and cut into segments; each segment is re-deflated by its own fresh deflater
//! on a worker thread; the outputs are written back in order. Segment jobs in
//! flight are capped across the whole process (one per core), so memory stays bounded however
//! many layers rebuild at once.
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};

use super::exact::{Out, read_plain};
use super::repigz;
use super::rezlib::{Deflater, HISTORY, MARGIN, Seam, history_start};
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
    /// A pigz job (and whether jobs follow) rather than a segment between seams.
    pigz_more: Option<bool>,
}

/// How a body is cut into segments.
#[derive(Clone, Copy)]
pub(super) enum Layout<'a> {
    /// A zlib replay's seams.
    Seams(&'a [Seam]),
    /// pigz's jobs of this many plain bytes, each with the 32 KiB before it as its dictionary.
    Pigz(u64),
}

/// The dictionary a pigz job after the first gets.
const PIGZ_DICT: u64 = 32 << 10;

/// Segment jobs in flight in the whole process.
struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

static SLOTS: Slots = Slots { used: Mutex::new(0), freed: Condvar::new() };

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8)
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

/// Re-deflates the body of `plain_len` plain bytes from `plain` (updating `crc`), segment by
/// segment on up to one thread per core, into `out` (whose `what` names the blob in errors);
/// returns the body bytes written.
pub(super) fn replay(level: u8, mem_level: u8, plain_len: u64, layout: Layout, plain: &mut dyn Read, out: &mut Out, crc: &mut flate2::Crc) -> Result<u64> {
    let what = out.what;
    let (level, mem_level) = (i32::from(level), i32::from(mem_level));
    let f = Feed { layout, plain_len, plain, crc, what, held: Vec::new(), held_from: 0, read: 0 };
    let n = f.count();
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
        let r = feed(f, (level, mem_level), out, &jobs_tx, &done_rx);
        drop(jobs_tx);
        r
    })
}

/// One segment re-deflated: the bytes of the body it writes.
fn segment(job: &Job, level: i32, mem_level: i32, what: &str) -> Result<Vec<u8>> {
    let named = |e: Error| Error::Other(format!("{what}: segment {} of the zlib replay: {e}", job.index + 1));
    if let Some(more) = job.pigz_more {
        let mut body = Vec::with_capacity(job.text.len() / 2 + (64 << 10));
        repigz::job(level, &job.text[..job.dict], &job.text[job.dict..], more, &mut body).map_err(named)?;
        return Ok(body);
    }
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
                return Err(short(what, job.index, body.len() as u64, take));
            }
            body.truncate(take as usize);
        }
    }
    Ok(body)
}

/// The most plain text a segment handed to a worker may have: a longer one (a body whose seam
/// trials stopped, or a record that says so) is re-deflated here as it is read, after the
/// segments before it are written, so memory never grows with a segment.
const SEGMENT_MAX: u64 = 8 << 20;

/// Segment `i` wrote `made` bytes where its record says `take`.
fn short(what: &str, i: usize, made: u64, take: u64) -> Error {
    Error::Other(format!("{what}: segment {} of the zlib replay wrote {made} bytes, not the {take} its record says (the record does not fit the plain stream)", i + 1))
}

/// The reading and writing side: plain text in order, cut into jobs, outputs written in order.
fn feed(mut f: Feed, levels: (i32, i32), out: &mut Out, jobs: &mpsc::Sender<Job>, done: &mpsc::Receiver<(usize, Result<Vec<u8>>)>) -> Result<u64> {
    let n = f.count();
    let what = f.what;
    let mut sent = 0usize;
    let mut written = 0usize;
    let mut in_flight = 0usize;
    let mut ready: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let mut total = 0u64;
    let stopped = || Error::Other(format!("{what}: the zlib replay's workers stopped"));
    let result = (|| {
        while written < n {
            if sent < n && written == sent && f.too_long(sent) {
                // A long segment, with everything before it written: stream it here.
                total += f.stream(sent, levels, out)?;
                sent += 1;
                written += 1;
                continue;
            }
            // Hand out the next segment when a slot is free (waiting for one only when nothing of
            // ours is in flight, so two rebuilds never wait on each other's slots).
            if sent < n && !f.too_long(sent) && SLOTS.take(in_flight == 0) {
                // The slot is ours until the job is in flight: a read that fails (a plain stream
                // shorter than the record) gives it back, or the next rebuild waits forever.
                let sending = f.job(sent).and_then(|job| jobs.send(job).map_err(|_| stopped()));
                if let Err(e) = sending {
                    SLOTS.give();
                    return Err(e);
                }
                in_flight += 1;
                sent += 1;
                continue;
            }
            // Otherwise write out the next segment once it is done.
            while !ready.contains_key(&written) {
                let (i, r) = done.recv().map_err(|_| stopped())?;
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

/// The plain text read so far that segments still need: `held` is plain[held_from..read).
struct Feed<'a> {
    layout: Layout<'a>,
    plain_len: u64,
    plain: &'a mut dyn Read,
    crc: &'a mut flate2::Crc,
    what: &'a str,
    held: Vec<u8>,
    held_from: u64,
    read: u64,
}

impl Feed<'_> {
    /// How many segments the body has.
    fn count(&self) -> usize {
        match self.layout {
            Layout::Seams(s) => s.len() + 1,
            Layout::Pigz(b) => self.plain_len.div_ceil(b).max(1) as usize,
        }
    }

    /// Segment `i`'s plain text: from its seam to the next seam (or the end).
    fn span(&self, i: usize) -> (u64, u64) {
        match self.layout {
            Layout::Seams(s) => (if i == 0 { 0 } else { s[i - 1].plain_at }, s.get(i).map_or(self.plain_len, |s| s.plain_at)),
            Layout::Pigz(b) => (i as u64 * b, ((i as u64 + 1) * b).min(self.plain_len)),
        }
    }

    /// Whether segment `i` is streamed here rather than handed to a worker (pigz jobs never are:
    /// a record's job size is at most `repigz::BLOCK_MAX`, which is `SEGMENT_MAX`).
    fn too_long(&self, i: usize) -> bool {
        let (a, b) = self.span(i);
        matches!(self.layout, Layout::Seams(_)) && b - a > SEGMENT_MAX
    }

    /// Where segment `i`'s deflater stops reading: `MARGIN` past its end, or the body's end.
    fn feed_end(&self, i: usize) -> u64 {
        match self.layout {
            Layout::Seams(s) => s.get(i).map_or(self.plain_len, |s| s.plain_at + MARGIN),
            Layout::Pigz(_) => self.span(i).1,
        }
    }

    /// Where segment `i`'s dictionary starts.
    fn dict_from(&self, i: usize) -> u64 {
        let (start, _) = self.span(i);
        match self.layout {
            Layout::Seams(_) => history_start(start).min(start),
            Layout::Pigz(_) => start.saturating_sub(PIGZ_DICT),
        }
    }

    /// Reads plain text up to `to` into `held`.
    fn read_to(&mut self, to: u64) -> Result<()> {
        if to > self.read {
            let have = self.held.len();
            self.held.resize(have + (to - self.read) as usize, 0);
            read_plain(self.plain, &mut self.held[have..], self.what)?;
            self.crc.update(&self.held[have..]);
            self.read = to;
        }
        Ok(())
    }

    /// Drops what segments after `i` do not need (the next one's dictionary on).
    fn done_with(&mut self, i: usize) {
        if i + 1 < self.count() {
            let keep = self.dict_from(i + 1);
            self.held.drain(..(keep - self.held_from) as usize);
            self.held_from = keep;
        }
    }

    /// Segment `i`'s primed bits and the body bytes that are its own (seams only).
    fn shape(&self, i: usize) -> (u8, u8, Option<u64>) {
        let Layout::Seams(s) = self.layout else { return (0, 0, None) };
        let (bits, value, from) = if i == 0 { (0, 0, 0) } else { (s[i - 1].bits, s[i - 1].value, s[i - 1].byte_at) };
        (bits, value, s.get(i).map(|s| s.byte_at - from))
    }

    fn job(&mut self, i: usize) -> Result<Job> {
        let (start, _) = self.span(i);
        let end = self.feed_end(i);
        self.read_to(end)?;
        let (bits, value, take) = self.shape(i);
        let dict = (start - self.dict_from(i)) as usize;
        let from = (start - dict as u64 - self.held_from) as usize;
        let text = self.held[from..(end - self.held_from) as usize].to_vec();
        self.done_with(i);
        let pigz_more = matches!(self.layout, Layout::Pigz(_)).then_some(i + 1 < self.count());
        Ok(Job { index: i, text, dict, bits, value, take, pigz_more })
    }

    /// Re-deflates segment `i` while reading it, writing its bytes as they come; returns them.
    fn stream(&mut self, i: usize, (level, mem_level): (i32, i32), out: &mut Out) -> Result<u64> {
        let what = self.what;
        let named = |e: Error| Error::Other(format!("{what}: segment {} of the zlib replay: {e}", i + 1));
        let (start, _) = self.span(i);
        let end = self.feed_end(i);
        let (bits, value, take) = self.shape(i);
        let dict_from = self.dict_from(i);
        self.read_to(start)?;
        let mut zs = if i == 0 {
            Deflater::new(level, mem_level)
        } else {
            let h = &self.held[(dict_from - self.held_from) as usize..(start - self.held_from) as usize];
            Deflater::at_seam(level, mem_level, h, bits, value)
        }
        .map_err(named)?;
        let mut body = Vec::new();
        let mut made = 0u64;
        // Writes what the deflater gave, up to the segment's own bytes.
        let mut put = |body: &mut Vec<u8>, out: &mut Out| -> Result<()> {
            let room = take.map_or(body.len() as u64, |t| t.saturating_sub(made).min(body.len() as u64)) as usize;
            out.put(&body[..room])?;
            made += room as u64;
            body.clear();
            Ok(())
        };
        // Plain text already read past the seam, then the rest in 1 MiB reads; only the last
        // HISTORY + MARGIN bytes are kept (the next seam's dictionary and margin).
        let from = (start - self.held_from) as usize;
        zs.run(&self.held[from..], false, &mut body).map_err(named)?;
        put(&mut body, out)?;
        while self.read < end {
            let to = (self.read + (1 << 20)).min(end);
            let at = self.held.len();
            self.read_to(to)?;
            zs.run(&self.held[at..], false, &mut body).map_err(named)?;
            put(&mut body, out)?;
            let keep = (self.read - self.held_from).min(HISTORY as u64 + MARGIN) as usize;
            let cut = self.held.len() - keep;
            self.held.drain(..cut);
            self.held_from += cut as u64;
        }
        match take {
            None => zs.run(&[], true, &mut body),
            Some(_) => zs.sync(&[], &mut body),
        }
        .map_err(named)?;
        put(&mut body, out)?;
        if let Some(t) = take
            && made < t
        {
            return Err(short(what, i, made, t));
        }
        self.done_with(i);
        Ok(made)
    }
}

//! Owns the fault-injecting TCP proxy: it sits on 127.0.0.1 in front of a real registry and,
//! on a seeded schedule, cuts, refuses or stalls what passes through, counting every fault.
//!
//! Each client connection carries one request: the proxy forwards it with `Connection: close`
//! and closes after the answer, so every request gets its own decision. A decision depends
//! only on the seed, the request (method, path with upload session ids blanked, `digest=`)
//! and how often that same request came before, never on which thread got there first: a
//! seed replays the same schedule (only the order in which the global cap is reached, and
//! concurrent requests to one repository, can differ between runs).
//!
//! The schedule models a network that is bad but alive: at most `max_faults` faults in all,
//! and at most `max_in_a_row` in a row that bring the client nothing, per blob download and
//! per repository for every other request. The run of a blob download starts again when a
//! fault hands the client new bytes (a FIN cut or a stall after some bytes), as the client's
//! retry budget does; the run of a repository when a request in it completes or moves an
//! upload on (in an upload only the final `PUT`, a mount, and a `PATCH` the registry took:
//! opening a session or asking where one stands is a step, not an end).
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod conn;

/// The accept loop stops by itself after this, dropped or not.
const LIFETIME: Duration = Duration::from_secs(600);

/// What the proxy does to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// The answer's head and part of its body, then FIN.
    CutFin,
    /// The answer's head and part of its body, then RST (`SO_LINGER` 0).
    CutRst,
    /// The request reaches the registry, its answer never reaches the client (FIN before any
    /// header byte).
    NoAnswer,
    /// `429 Too Many Requests` with `Retry-After: 1`, made up by the proxy.
    TooMany,
    /// `503 Service Unavailable` with `Retry-After: 1`, made up by the proxy.
    Unavailable,
    /// The answer's head and part of its body, then silence for `Schedule::stall`; then the
    /// rest, if the client is still there.
    Stall,
    /// Only part of an upload's body reaches the registry, then both sides are closed.
    CutUpload,
}

/// When and how often to strike.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub seed: u64,
    /// Faults in all; after that everything passes.
    pub max_faults: u32,
    /// Chance (percent) that a request moving data (a blob download, a request with a body)
    /// is struck.
    pub blob_pct: u64,
    /// Chance (percent) that any other request is struck.
    pub other_pct: u64,
    /// Faults without progress in a row for one request, before one is let through.
    pub max_in_a_row: u32,
    /// How long a stall holds the answer.
    pub stall: Duration,
}

/// What the proxy saw and did.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// HTTP requests received.
    pub requests: u64,
    /// Requests carrying a `Range` header.
    pub range_requests: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<Fault, u64>,
    /// Stalls the client gave up on (closed its end) before the stall ended.
    pub stalls_abandoned: u64,
    /// Connections that did not start with an HTTP request (a TLS hello on the https probe).
    pub non_http: u64,
    /// Requests the proxy cannot forward (a chunked request body).
    pub unsupported: u64,
}

impl Counts {
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
}


struct Shared {
    upstream: SocketAddr,
    schedule: Schedule,
    stop: AtomicBool,
    /// Faults promised so far (a promise that turns out not to apply is taken back).
    promised: AtomicU32,
    /// Per request key: times seen.
    seen: Mutex<HashMap<String, u64>>,
    /// Per group (a blob download, a repository): faults in a row that brought nothing.
    streaks: Mutex<HashMap<String, u32>>,
    counts: Mutex<Counts>,
    log: Mutex<Vec<String>>,
    /// When the proxy started: log lines say how long after.
    born: Instant,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// splitmix64: small, fast and good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// What a request is, as far as the schedule cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `GET /v2/<name>/blobs/<digest>`.
    BlobGet,
    /// Any other `GET` (manifests, `/v2/`, upload status).
    Get,
    /// A request with a body (upload `PATCH`/`PUT`, manifest `PUT`).
    WithBody,
    /// Anything else (`HEAD`, `POST` without a body, an empty `PUT`).
    Other,
}

/// A decision: the fault and a random number for where in the body it strikes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strike {
    pub fault: Fault,
    pub at: u64,
}

impl Shared {
    /// Whether and how to strike the request `key` (see the module comment), which belongs
    /// to `group`.
    fn decide(&self, key: &str, group: &str, kind: Kind) -> Option<Strike> {
        let n = {
            let mut seen = self.seen.lock().unwrap();
            let n = seen.entry(key.to_string()).or_default();
            *n += 1;
            *n - 1
        };
        let s = &self.schedule;
        let mut rng = Rng(s.seed ^ fnv1a(key) ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let pct = if matches!(kind, Kind::BlobGet | Kind::WithBody) { s.blob_pct } else { s.other_pct };
        let mut streaks = self.streaks.lock().unwrap();
        let streak = streaks.entry(group.to_string()).or_default();
        if *streak >= s.max_in_a_row || rng.below(100) >= pct {
            return None;
        }
        let menu: &[(Fault, u64)] = match kind {
            Kind::BlobGet => &[(Fault::CutFin, 30), (Fault::CutRst, 20), (Fault::NoAnswer, 10), (Fault::TooMany, 10), (Fault::Unavailable, 10), (Fault::Stall, 20)],
            Kind::Get => &[(Fault::CutFin, 20), (Fault::NoAnswer, 20), (Fault::TooMany, 25), (Fault::Unavailable, 25), (Fault::Stall, 10)],
            // Refusals cost a whole second each (Retry-After: 1): fewer of them on the many
            // small requests of a push keep the run short.
            Kind::WithBody => &[(Fault::CutUpload, 55), (Fault::NoAnswer, 35), (Fault::TooMany, 5), (Fault::Unavailable, 5)],
            Kind::Other => &[(Fault::NoAnswer, 70), (Fault::TooMany, 15), (Fault::Unavailable, 15)],
        };
        let mut pick = rng.below(menu.iter().map(|(_, w)| w).sum());
        let fault = menu.iter().find(|(_, w)| pick < *w || { pick -= w; false }).map(|(f, _)| *f).expect("a weighted pick");
        if self.promised.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| (p < s.max_faults).then_some(p + 1)).is_err() {
            return None;
        }
        // Counted as bringing nothing until the connection says otherwise (`settle`).
        *streak += 1;
        Some(Strike { fault, at: rng.next() })
    }

    /// The group's run of faults that brought nothing is over: a request in it completed, or
    /// the fault just applied handed the client new blob bytes it surely read (a FIN cut or a
    /// stall after byte 1; after an RST the kernel may drop bytes not yet read).
    fn settle(&self, group: &str) {
        self.streaks.lock().unwrap().remove(group);
    }

    fn count(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock().unwrap())
    }

    fn note(&self, line: String) {
        let at = self.born.elapsed();
        self.log.lock().unwrap().push(format!("[{:>4}.{:03}s] {line}", at.as_secs(), at.subsec_millis()));
    }
}

impl FaultProxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream` (which must be loopback).
    pub fn start(upstream: SocketAddr, schedule: Schedule) -> FaultProxy {
        assert!(upstream.ip().is_loopback(), "the proxy only forwards to loopback, not {upstream}");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            schedule,
            stop: AtomicBool::new(false),
            promised: AtomicU32::new(0),
            seen: Mutex::new(HashMap::new()),
            streaks: Mutex::new(HashMap::new()),
            counts: Mutex::new(Counts::default()),
            log: Mutex::new(Vec::new()),
            born: Instant::now(),
        });
        let sh = shared.clone();
        let accept = std::thread::Builder::new().name(format!("faultproxy-{}", addr.port())).spawn(move || accept_loop(listener, sh)).unwrap();
        FaultProxy { addr, shared, accept: Some(accept) }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    pub fn counts(&self) -> Counts {
        self.shared.counts.lock().unwrap().clone()
    }

    /// The seed, the counts and the last `tail` events: for assertion messages.
    pub fn summary(&self, tail: usize) -> String {
        let log = self.shared.log.lock().unwrap();
        let from = log.len().saturating_sub(tail);
        format!(
            "fault proxy seed {:#x} (rerun with FAULTPROXY_SEED={:#x}): {:?}\nlast {} of {} events:\n{}",
            self.shared.schedule.seed,
            self.shared.schedule.seed,
            self.counts(),
            log.len() - from,
            log.len(),
            log[from..].join("\n")
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let born = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) && born.elapsed() < LIFETIME {
        match listener.accept() {
            Ok((stream, peer)) if peer.ip().is_loopback() => {
                let sh = shared.clone();
                let _ = std::thread::Builder::new().name("faultproxy-conn".into()).spawn(move || conn::serve(stream, &sh));
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

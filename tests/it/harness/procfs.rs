//! Owns looking into a running child through /proc: is it waiting for bytes that will not come?
//!
//! A test that interrupts a download mid-body must know the client has taken in every byte the
//! server sent (none left in the kernel's socket queue or in the HTTP library's buffer). That holds
//! exactly when one of the child's threads is blocked reading a socket connected to the server
//! whose receive queue is empty: the HTTP library only goes to the socket once its buffer is empty.
use std::time::{Duration, Instant};

/// Inodes of TCP sockets (IPv4 and IPv6) whose remote port is `port` and whose receive queue is
/// empty.
fn drained_sockets_to(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let rem_port = f[2].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            let rx_queue = f[4].split(':').nth(1).and_then(|q| u64::from_str_radix(q, 16).ok());
            if rem_port == Some(port) && rx_queue == Some(0)
                && let Ok(inode) = f[9].parse() {
                out.push(inode);
            }
        }
    }
    out
}

/// The socket inode behind `fd` of process `pid`, if `fd` is a socket.
fn socket_inode(pid: u32, fd: u64) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// True when a thread of `pid` is blocked in a read on a socket to `port` with nothing queued.
fn blocked_on_drained_socket(pid: u32, port: u16) -> bool {
    let drained = drained_sockets_to(port);
    if drained.is_empty() {
        return false;
    }
    let reads = [libc::SYS_read, libc::SYS_recvfrom, libc::SYS_recvmsg, libc::SYS_readv];
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    for task in tasks.flatten() {
        // "NR arg0 arg1 ..." while in a syscall; "running" or "-1 ..." otherwise.
        let Ok(sc) = std::fs::read_to_string(task.path().join("syscall")) else { continue };
        let mut f = sc.split_whitespace();
        let Some(nr) = f.next().and_then(|n| n.parse::<libc::c_long>().ok()) else { continue };
        if !reads.contains(&nr) {
            continue;
        }
        let Some(fd) = f.next().and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok()) else { continue };
        if socket_inode(pid, fd).is_some_and(|ino| drained.contains(&ino)) {
            return true;
        }
    }
    false
}

/// Waits until `pid` has read everything a server on `port` sent and waits for more.
pub fn wait_blocked_reading(pid: u32, port: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        // Twice in a row, a moment apart, so a thread passing through a read does not count.
        if blocked_on_drained_socket(pid, port) {
            std::thread::sleep(Duration::from_millis(20));
            if blocked_on_drained_socket(pid, port) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

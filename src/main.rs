//! The `ocibundle` binary: parse flags, run, print one `error:` line and exit 1 on failure.
mod cli;

use clap::Parser;

fn main() {
    // A closed pipe (e.g. `| head`) ends the program quietly instead of panicking.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Buffers of 1 MiB and more (decoded chunk packs, pack frames, read windows) are mapped and
    // given back when freed. glibc otherwise raises its threshold to the size of the first such
    // buffer freed, after which 16 MiB packs come from the heap and their memory stays with the
    // process: measured, a docker-archive export from a format 2 bundle peaked at 275 MiB
    // instead of 203 MiB.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let args = cli::Cli::parse();
    ocibundle::cancel::install();
    match cli::run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) if matches!(e.downcast_ref::<ocibundle::Error>(), Some(ocibundle::Error::Interrupted)) => {
            eprintln!("error: {e}");
            std::process::exit(130);
        }
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            std::process::exit(1);
        }
    }
}

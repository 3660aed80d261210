//! The `ocibundle` binary: parse flags, run, print one `error:` line and exit 1 on failure.
mod cli;

use clap::Parser;

fn main() {
    // A closed pipe (e.g. `| head`) ends the program quietly instead of panicking.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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

//! Progress bars on a terminal (per blob and total); nothing at all otherwise.
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Progress of one command; a no-op unless stderr is a terminal.
pub struct Progress {
    multi: Option<MultiProgress>,
    total: ProgressBar,
}

impl Progress {
    /// Bars only if `wanted` and stderr is a TTY.
    pub fn new(wanted: bool, total_bytes: u64, label: &str) -> Progress {
        if !(wanted && std::io::stderr().is_terminal()) {
            return Progress { multi: None, total: ProgressBar::hidden() };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        let total = multi.add(ProgressBar::new(total_bytes));
        total.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap()
                .progress_chars("=> "),
        );
        total.set_prefix(label.to_string());
        Progress { multi: Some(multi), total }
    }

    /// A bar for one blob; its increments also advance the total.
    pub fn blob(&self, name: &str, size: u64) -> BlobBar {
        let bar = match &self.multi {
            Some(m) => {
                let b = m.insert_from_back(1, ProgressBar::new(size));
                b.set_style(ProgressStyle::with_template("{prefix:>12} [{bar:30}] {bytes}/{total_bytes}").unwrap().progress_chars("=> "));
                b.set_prefix(name.to_string());
                b
            }
            None => ProgressBar::hidden(),
        };
        BlobBar { bar, total: self.total.clone() }
    }

    pub fn finish(&self) {
        self.total.finish_and_clear();
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

pub struct BlobBar {
    bar: ProgressBar,
    total: ProgressBar,
}

impl BlobBar {
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.total.inc(n);
    }
    /// Counts bytes already there (resumed or skipped) without animating a download.
    pub fn skip(&self, n: u64) {
        self.bar.inc(n);
        self.total.inc(n);
    }
    pub fn done(&self) {
        self.bar.finish_and_clear();
    }
}

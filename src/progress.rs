//! Progress reporting: a bar with bytes and rate on a terminal (indicatif),
//! one plain line per step otherwise (cron, CI, `--json`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::util::human_bytes;

/// How the command reports while it works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars on stderr.
    Bars,
    /// One line per finished step on stderr.
    Lines,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// Bars only when stderr is a terminal and the output is for people.
    pub fn detect(json: bool) -> Mode {
        if json {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// A byte counter for one step, cheap to clone across threads.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
        }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn bytes(&self) -> u64 {
        self.bar.position()
    }
}

/// Reports the steps of one command.
pub struct Reporter {
    mode: Mode,
}

/// A running step; finish it with [`Step::done`].
pub struct Step {
    mode: Mode,
    label: String,
    started: Instant,
    pub progress: Progress,
}

impl Reporter {
    pub fn new(mode: Mode) -> Reporter {
        Reporter { mode }
    }

    /// Starts a step that moves bytes (`total` when known).
    pub fn step(&self, label: impl Into<String>, total: Option<u64>) -> Step {
        let label = label.into();
        let bar = match self.mode {
            Mode::Bars => {
                let bar = match total {
                    Some(t) => ProgressBar::new(t),
                    None => ProgressBar::no_length(),
                };
                bar.set_draw_target(ProgressDrawTarget::stderr());
                let template = if total.is_some() {
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
                } else {
                    "{spinner} {msg} {bytes} {binary_bytes_per_sec} {elapsed}"
                };
                bar.set_style(
                    ProgressStyle::with_template(template)
                        .unwrap()
                        .progress_chars("=> "),
                );
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            }
            _ => ProgressBar::hidden(),
        };
        Step {
            mode: self.mode,
            label,
            started: Instant::now(),
            progress: Progress { bar },
        }
    }

    /// A plain informational line (not shown in quiet mode).
    pub fn note(&self, line: impl AsRef<str>) {
        if self.mode != Mode::Quiet {
            eprintln!("{}", line.as_ref());
        }
    }
}

impl Step {
    /// Ends the step and prints its line: bytes, time and rate.
    pub fn done(self, detail: &str) -> Duration {
        let elapsed = self.started.elapsed();
        let bytes = self.progress.bytes();
        self.progress.bar.finish_and_clear();
        if self.mode != Mode::Quiet {
            let secs = elapsed.as_secs_f64().max(1e-3);
            eprintln!(
                "{}: {} in {:.1}s ({}/s){}{}",
                self.label,
                human_bytes(bytes),
                secs,
                human_bytes((bytes as f64 / secs) as u64),
                if detail.is_empty() { "" } else { ", " },
                detail
            );
        }
        elapsed
    }

    pub fn abandon(self) {
        self.progress.bar.finish_and_clear();
    }
}

//! `strata schedule run`: the long-running scheduler.
//!
//! Every tick it asks the planner ([`super::plan`]) which tiers are due,
//! turns each due tier into one job per source, and runs the jobs through
//! the same function as `strata backup --tier`
//! ([`crate::backup::tier_source`]). Rules, chosen on purpose:
//!
//! - **One job per source at a time.** A job whose source is busy (another
//!   tier is backing it up) waits in the queue and starts when the source
//!   is free: a daily dump and a weekly base backup due at the same minute
//!   both run, one after the other. Jobs of different sources run in
//!   parallel, at most `--max-jobs` at once. (The repository's source lock
//!   also refuses a second backup of a source from another host.)
//! - **A tier whose previous run has not finished skips its slot**, with a
//!   `job_skipped` line: slots do not pile up behind a slow run.
//! - **After downtime a missed slot runs once** (the planner's rule), with
//!   a `catch_up` line saying how many slots were missed.
//! - **A tier is recorded as run when all its jobs have ended**, failed or
//!   not, in the state file (`schedule-state.json` in the state
//!   directory). A failed job is retried at the tier's next slot; the
//!   webhook and `strata status --check` report the failure. A job that
//!   was abandoned or never started because of a shutdown is not recorded,
//!   so the next start catches it up.
//! - **SIGTERM or SIGINT**: no new job starts; queued jobs are dropped
//!   (`job_skipped reason=shutdown`); running jobs get `--shutdown-grace`
//!   to finish. Then (or at a second signal) they are abandoned: their
//!   child processes (`pg_dump`, `pg_basebackup`) are terminated, which
//!   fails the job the ordinary way: the upload is aborted, no manifest is
//!   written (a backup's manifest is written last, only after every object
//!   is committed), and the source lock is released. A job still running
//!   [`ABANDON_WAIT`] later is dropped, and the locks this process holds
//!   are removed. Leftover objects are removed by `strata cleanup`. Exit 0.
//! - A `drill` tier is one job, `strata drill --tier NAME` run as a child
//!   process (it starts servers in a sandbox; on SIGTERM it tears them down
//!   and stores no report). It restores from the repository only, so it
//!   does not occupy its sources.
//! - The configuration is read once, at start: restart the daemon to apply
//!   a change (no reload on SIGHUP).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::{Id, JoinError, JoinSet};

use super::children::{drill, signal_children};
use super::clock::Clock;
use super::events::{Event, Log};
use super::{
    LastRuns, STATE_FILE, due_slot, load_state, missed_slots, plan, save_state, schedulable,
};
use crate::backup;
use crate::catalog::lock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::sources::backup::BackupReport;
use crate::tier::TierKind;

/// How long an abandoned job may take to wind down after its child
/// processes were told to stop, before it is dropped.
pub const ABANDON_WAIT: StdDuration = StdDuration::from_secs(10);
/// The longest the daemon sleeps between plans (a wall-clock jump, e.g.
/// after a suspend, is noticed within this time).
const MAX_SLEEP: StdDuration = StdDuration::from_secs(60);
/// Missed slots counted for the `catch_up` line, at most.
const MISSED_CAP: usize = 10_000;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Holds the state file and the daemon's lock file.
    pub state_dir: PathBuf,
    pub log: Log,
    /// Plan once, run what is due, wait for it and exit.
    pub once: bool,
    pub shutdown_grace: StdDuration,
    /// Jobs running at once (never two on one source).
    pub max_jobs: usize,
    pub clock: Clock,
    /// `--identity`, passed on to drills (they decrypt).
    pub identity: Option<PathBuf>,
}

/// One source of one due tier.
#[derive(Debug, Clone)]
struct Job {
    tier: String,
    source: String,
    kind: TierKind,
    /// The daemon's time when the tier was found due.
    due: DateTime<Utc>,
    /// The slot that made it due.
    slot: Option<DateTime<Utc>>,
    waiting_logged: bool,
}

/// What a finished job produced.
enum Done {
    Backup(Box<BackupReport>),
    /// A drill's report (`strata drill --json`), passed.
    Drill(Value),
}

struct Running {
    job: Job,
    started: Instant,
}

/// Runs the daemon until a signal (or, with `--once`, until the due jobs
/// are done). Returns the exit code.
pub async fn run(cfg: Config, opts: Options) -> Result<u8> {
    let _state_lock = lock_state_dir(&opts.state_dir)?;
    let state_path = opts.state_dir.join(STATE_FILE);
    let persisted = load_state(&state_path)?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| Error::failed(format!("cannot handle SIGTERM: {e}")))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| Error::failed(format!("cannot handle SIGINT: {e}")))?;
    // SIGHUP would end the process; there is nothing to reload: say so.
    let mut hangup = signal(SignalKind::hangup())
        .map_err(|e| Error::failed(format!("cannot handle SIGHUP: {e}")))?;
    let mut d = Daemon {
        last: persisted.clone(),
        persisted,
        state_path,
        since: opts.clock.now(),
        cfg: Arc::new(cfg),
        opts,
        queue: VecDeque::new(),
        running: HashMap::new(),
        busy: HashMap::new(),
        in_flight: BTreeMap::new(),
        jobs: JoinSet::new(),
        failures: 0,
        abandoning: false,
        cut_short: HashSet::new(),
    };
    d.started();
    d.distrust_future_runs();

    // Normal operation: plan, start what can start, sleep until the next
    // slot, a finished job or a signal.
    let mut planned = false;
    let signal_name = loop {
        let now = d.opts.clock.now();
        let mut next = None;
        if !(d.opts.once && planned) {
            let p = plan(d.cfg.tiers.values(), &d.last, d.since, now);
            for name in p.due {
                d.dispatch(&name, now);
            }
            next = p.next;
            planned = true;
        }
        d.start_ready();
        if d.opts.once && d.queue.is_empty() && d.running.is_empty() {
            break None;
        }
        let sleep = next
            .map(|t| d.opts.clock.real_until(t))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        tokio::select! {
            _ = tokio::time::sleep(sleep), if !d.opts.once => {}
            Some(done) = d.jobs.join_next_with_id(), if !d.jobs.is_empty() => d.finished(done),
            _ = terminate.recv() => break Some("SIGTERM"),
            _ = interrupt.recv() => break Some("SIGINT"),
            _ = hangup.recv() => d.log(
                Event::warn(d.opts.clock.now(), "sighup_ignored")
                    .with("note", "the configuration is read at start: restart the daemon to apply a change"),
            ),
        }
    };

    if let Some(sig) = &signal_name {
        d.shutdown(sig, &mut terminate, &mut interrupt).await;
    }
    d.log(Event::info(d.opts.clock.now(), "daemon_stopped").with("failed_jobs", d.failures));
    // With --once, failed jobs fail the run (for a timer or a script); a
    // stop by signal is an orderly end either way.
    Ok(if d.opts.once && signal_name.is_none() && d.failures > 0 {
        1
    } else {
        0
    })
}

struct Daemon {
    cfg: Arc<Config>,
    opts: Options,
    /// When each tier last ran as far as planning goes (set when it is
    /// found due, so it is not found due again while it runs).
    last: LastRuns,
    /// What the state file says: tiers whose jobs have all ended.
    persisted: LastRuns,
    state_path: PathBuf,
    /// When the daemon started (stands in for a never-run tier's last run).
    since: DateTime<Utc>,
    queue: VecDeque<Job>,
    running: HashMap<Id, Running>,
    /// Busy sources and the tier backing each up.
    busy: HashMap<String, String>,
    /// Jobs queued or running, per tier.
    in_flight: BTreeMap<String, usize>,
    jobs: JoinSet<Result<Done>>,
    failures: usize,
    /// Set once running jobs are being abandoned.
    abandoning: bool,
    /// Tiers with jobs dropped or abandoned by a shutdown.
    cut_short: HashSet<String>,
}

impl Daemon {
    fn log(&self, e: Event) {
        self.opts.log.emit(&e);
    }

    fn now(&self) -> DateTime<Utc> {
        self.opts.clock.now()
    }

    fn started(&self) {
        let now = self.now();
        let clock = &self.opts.clock;
        self.log(
            Event::info(now, "daemon_started")
                .with("version", crate::VERSION)
                .with("pid", std::process::id())
                .with("config", self.cfg.path.display().to_string())
                .with("state", self.state_path.display().to_string())
                .with("max_jobs", self.opts.max_jobs)
                .with("shutdown_grace_s", self.opts.shutdown_grace.as_secs())
                .with("once", self.opts.once)
                .with(
                    "clock",
                    if clock.is_fake() {
                        Value::String(format!("fake, {}x", clock.speed()))
                    } else {
                        Value::Null
                    },
                ),
        );
        if !self.cfg.tiers.values().any(schedulable) {
            self.log(
                Event::warn(now, "no_scheduled_tiers")
                    .with("config", self.cfg.path.display().to_string())
                    .with("hint", "define [tiers.NAME] with a schedule, or include = [\"schedules/standard.toml\"] (docs/configuration.md)"),
            );
        }
        for t in self.cfg.tiers.values() {
            let mut e = Event::info(now, "tier_scheduled")
                .with("tier", t.name.as_str())
                .with("kind", t.kind.as_str())
                .with("schedule", t.schedule.as_ref().map(|s| s.to_string()))
                .with("timezone", t.tz().name())
                .with("sources", t.sources.join(","));
            if !schedulable(t) {
                e = e.with(
                    "note",
                    if t.kind == TierKind::Wal {
                        "continuous: archive_command runs `strata wal push`"
                    } else {
                        "no schedule: run by hand"
                    },
                );
            } else {
                let next = t
                    .schedule
                    .as_ref()
                    .and_then(|s| s.next_runs(t.tz(), now, 1).into_iter().next())
                    .map(|n| rfc(n.with_timezone(&Utc)));
                e = e
                    .with("next", next)
                    .with("last_run", self.last.get(&t.name).map(|l| rfc(*l)));
            }
            self.log(e);
        }
    }

    /// A last run later than now (the clock was set back, or the state
    /// file came from another host) would hold the tier back until then:
    /// count it from the daemon's start instead, loudly.
    fn distrust_future_runs(&mut self) {
        let now = self.since;
        let future: Vec<(String, DateTime<Utc>)> = self
            .last
            .iter()
            .filter(|(_, t)| **t > now)
            .map(|(n, t)| (n.clone(), *t))
            .collect();
        for (name, t) in future {
            self.log(
                Event::warn(now, "state_in_future")
                    .with("tier", name.as_str())
                    .with("last_run", rfc(t))
                    .with(
                        "note",
                        "the clock is behind the recorded run; counting from now",
                    ),
            );
            self.last.insert(name, now);
        }
    }

    /// Turns a due tier into jobs (or a line saying why not).
    fn dispatch(&mut self, name: &str, now: DateTime<Utc>) {
        let tier = self.cfg.tiers[name].clone();
        let previous = self.last.get(name).copied();
        self.last.insert(name.to_string(), now);
        if self.in_flight.get(name).copied().unwrap_or(0) > 0 {
            let slot = due_slot(&tier, previous.unwrap_or(self.since), now);
            self.log(
                Event::warn(now, "job_skipped")
                    .with("tier", name)
                    .with("slot", slot.map(rfc))
                    .with("reason", "the previous run of this tier has not finished"),
            );
            return;
        }
        let from = previous.unwrap_or(self.since);
        let missed = missed_slots(&tier, from, now, MISSED_CAP);
        let slot = due_slot(&tier, from, now);
        if previous.is_some_and(|p| p < self.since) && first_slot_before(&tier, from, self.since) {
            self.log(
                Event::info(now, "catch_up")
                    .with("tier", name)
                    .with("slot", slot.map(rfc))
                    .with("last_run", previous.map(rfc))
                    .with("missed_slots", missed)
                    .with("note", "slots missed while the daemon was down run once"),
            );
        } else {
            self.log(
                Event::info(now, "tier_due")
                    .with("tier", name)
                    .with("slot", slot.map(rfc))
                    .with("kind", tier.kind.as_str())
                    .with(
                        "missed_slots",
                        if missed > 1 {
                            Value::from(missed)
                        } else {
                            Value::Null
                        },
                    ),
            );
        }
        if tier.kind == TierKind::Wal {
            self.record_not_run(
                name,
                now,
                "wal tiers are archived continuously, not scheduled",
            );
            return;
        }
        if tier.sources.is_empty() {
            self.record_not_run(name, now, "the tier covers no source");
            return;
        }
        if tier.kind == TierKind::Drill {
            // One job for the whole drill: it restores into a sandbox from
            // the repository and never touches the sources' servers, so it
            // does not occupy them.
            self.queue.push_back(Job {
                tier: name.to_string(),
                source: format!("drill:{name}"),
                kind: tier.kind,
                due: now,
                slot,
                waiting_logged: false,
            });
            self.in_flight.insert(name.to_string(), 1);
            return;
        }
        for source in &tier.sources {
            self.queue.push_back(Job {
                tier: name.to_string(),
                source: source.clone(),
                kind: tier.kind,
                due: now,
                slot,
                waiting_logged: false,
            });
        }
        self.in_flight.insert(name.to_string(), tier.sources.len());
    }

    fn record_not_run(&mut self, name: &str, now: DateTime<Utc>, reason: &str) {
        self.log(
            Event::warn(now, "tier_not_run")
                .with("tier", name)
                .with("reason", reason),
        );
        self.persist(name);
    }

    /// Starts queued jobs whose source is free, in queue order, up to
    /// `max_jobs` running.
    fn start_ready(&mut self) {
        let mut i = 0;
        while i < self.queue.len() && self.running.len() < self.opts.max_jobs.max(1) {
            if let Some(holder) = self.busy.get(&self.queue[i].source) {
                if !self.queue[i].waiting_logged {
                    let j = &self.queue[i];
                    self.log(
                        Event::info(self.now(), "job_waiting")
                            .with("tier", j.tier.as_str())
                            .with("source", j.source.as_str())
                            .with(
                                "reason",
                                format!("source {} is being backed up by tier {holder}", j.source),
                            ),
                    );
                    self.queue[i].waiting_logged = true;
                }
                i += 1;
                continue;
            }
            let job = self.queue.remove(i).expect("index checked");
            self.start(job);
        }
    }

    fn start(&mut self, job: Job) {
        let cfg = self.cfg.clone();
        let tier = cfg.tiers[&job.tier].clone();
        let source = job.source.clone();
        let identity = self.opts.identity.clone();
        let handle = self.jobs.spawn(async move {
            if tier.kind == TierKind::Drill {
                drill(&cfg, &tier.name, identity.as_deref())
                    .await
                    .map(Done::Drill)
            } else {
                backup::tier_source(&cfg, &tier, &source)
                    .await
                    .map(|r| Done::Backup(Box::new(r)))
            }
        });
        self.log(
            Event::info(self.now(), "job_started")
                .with("tier", job.tier.as_str())
                .with("source", job.source.as_str())
                .with("kind", job.kind.as_str())
                .with("slot", job.slot.map(rfc))
                .with("due", rfc(job.due)),
        );
        self.busy.insert(job.source.clone(), job.tier.clone());
        self.running.insert(
            handle.id(),
            Running {
                job,
                started: Instant::now(),
            },
        );
    }

    /// A job ended: log it, free its source, record its tier when it was
    /// the tier's last job.
    fn finished(&mut self, done: std::result::Result<(Id, Result<Done>), JoinError>) {
        let (id, outcome) = match done {
            Ok((id, r)) => (id, Ok(r)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some(Running { job, started }) = self.running.remove(&id) else {
            return;
        };
        let seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        let now = self.now();
        let base = |e: Event| {
            e.with("tier", job.tier.as_str())
                .with("source", job.source.as_str())
                .with("kind", job.kind.as_str())
                .with("seconds", seconds)
        };
        let ok = match outcome {
            Ok(Ok(Done::Backup(report))) => {
                self.log(
                    base(Event::info(now, "job_finished"))
                        .with("backup", report.id.as_str())
                        .with("plain_bytes", report.plain_bytes)
                        .with("stored_bytes", report.stored_bytes),
                );
                true
            }
            Ok(Ok(Done::Drill(report))) => {
                self.log(
                    base(Event::info(now, "job_finished"))
                        .with("drill", report["id"].clone())
                        .with("passed", report["passed"].clone())
                        .with("rto_seconds", report["rto_seconds"].clone())
                        .with("stored_as", report["stored_as"].clone()),
                );
                true
            }
            Ok(Err(e)) => {
                let name = if self.abandoning {
                    "job_abandoned"
                } else {
                    "job_failed"
                };
                self.log(
                    base(Event::error(now, name))
                        .with("error", e.message.as_str())
                        .with("hint", e.hint.clone())
                        .with("exit_code", e.exit_code())
                        .with("retryable", e.retryable),
                );
                false
            }
            Err(e) if e.is_cancelled() => {
                self.log(
                    base(Event::error(now, "job_abandoned"))
                        .with("error", "dropped while running (no manifest is written)"),
                );
                false
            }
            Err(e) => {
                self.log(
                    base(Event::error(now, "job_failed"))
                        .with("error", format!("job panicked: {e}")),
                );
                false
            }
        };
        if !ok {
            self.failures += 1;
        }
        self.busy.remove(&job.source);
        let left = self.in_flight.entry(job.tier.clone()).or_insert(1);
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.in_flight.remove(&job.tier);
            // A tier cut short by a shutdown stays unrecorded, so the next
            // start catches it up; one whose jobs all ended is recorded.
            if !self.abandoning && !self.cut_short.contains(&job.tier) {
                self.persist(&job.tier);
            }
        } else if self.abandoning {
            self.cut_short.insert(job.tier.clone());
        }
    }

    /// Records `tier`'s last run in the state file.
    fn persist(&mut self, tier: &str) {
        let Some(t) = self.last.get(tier).copied() else {
            return;
        };
        self.persisted.insert(tier.to_string(), t);
        if let Err(e) = save_state(&self.state_path, &self.persisted) {
            self.log(
                Event::error(self.now(), "state_not_saved")
                    .with("state", self.state_path.display().to_string())
                    .with("error", e.message.as_str())
                    .with("note", "after a restart this tier may run again"),
            );
        }
    }

    /// Stops starting jobs, lets running ones finish within the grace
    /// period, then abandons them (see the module docs).
    async fn shutdown(
        &mut self,
        sig: &str,
        terminate: &mut tokio::signal::unix::Signal,
        interrupt: &mut tokio::signal::unix::Signal,
    ) {
        let now = self.now();
        self.log(
            Event::info(now, "shutdown_requested")
                .with("signal", sig)
                .with("running", self.running.len())
                .with("queued", self.queue.len())
                .with("grace_s", self.opts.shutdown_grace.as_secs()),
        );
        for j in std::mem::take(&mut self.queue) {
            // Its tier stays unrecorded: the next start catches it up.
            self.cut_short.insert(j.tier.clone());
            if let Some(n) = self.in_flight.get_mut(&j.tier) {
                *n = n.saturating_sub(1);
            }
            self.log(
                Event::warn(now, "job_skipped")
                    .with("tier", j.tier.as_str())
                    .with("source", j.source.as_str())
                    .with("reason", "shutdown: not started; it runs at the next start"),
            );
        }
        let deadline = tokio::time::Instant::now() + self.opts.shutdown_grace;
        let mut second_signal = false;
        while !self.running.is_empty() {
            tokio::select! {
                Some(done) = self.jobs.join_next_with_id() => self.finished(done),
                _ = tokio::time::sleep_until(deadline) => break,
                _ = terminate.recv() => { second_signal = true; break }
                _ = interrupt.recv() => { second_signal = true; break }
            }
        }
        if self.running.is_empty() {
            return;
        }
        self.abandoning = true;
        self.log(
            Event::warn(self.now(), "abandoning_jobs")
                .with("running", self.running.len())
                .with(
                    "reason",
                    if second_signal {
                        "second signal"
                    } else {
                        "shutdown grace period over"
                    },
                )
                .with("note", "no manifest is written for an abandoned backup; `strata cleanup` removes its leftovers"),
        );
        // A job blocked in its own code (a query, the network) is dropped at
        // once; one running a client program fails as soon as that exits.
        let children = signal_children(libc::SIGTERM);
        let wait = if children.is_empty() {
            StdDuration::ZERO
        } else {
            self.log(
                Event::warn(self.now(), "processes_terminated")
                    .with("processes", children.join(",")),
            );
            ABANDON_WAIT
        };
        let wind_down = tokio::time::Instant::now() + wait;
        while !self.running.is_empty() {
            tokio::select! {
                Some(done) = self.jobs.join_next_with_id() => self.finished(done),
                _ = tokio::time::sleep_until(wind_down) => break,
            }
        }
        if !self.running.is_empty() {
            signal_children(libc::SIGKILL);
            self.jobs.abort_all();
            while let Some(done) = self.jobs.join_next_with_id().await {
                self.finished(done);
            }
            self.remove_own_locks().await;
        }
    }

    /// Removes repository locks held by this process (jobs dropped before
    /// they could release theirs). Safe: this process no longer writes.
    async fn remove_own_locks(&self) {
        let repo = match crate::context::open_repository(&self.cfg).await {
            Ok(r) => r,
            Err(e) => {
                self.log(
                    Event::error(self.now(), "lock_not_removed").with("error", e.message.as_str()),
                );
                return;
            }
        };
        let me = std::process::id();
        let host = crate::util::host_name();
        let found = match lock::list(repo.storage()).await {
            Ok(f) => f,
            Err(e) => {
                self.log(
                    Event::error(self.now(), "lock_not_removed").with("error", e.message.as_str()),
                );
                return;
            }
        };
        for l in found {
            let ours = l
                .info
                .as_ref()
                .is_some_and(|i| i.pid == me && i.host == host);
            if !ours {
                continue;
            }
            let e = match repo.storage().delete(&l.key).await {
                Ok(()) => Event::warn(self.now(), "lock_removed").with("lock", l.key.as_str()),
                Err(err) => Event::error(self.now(), "lock_not_removed")
                    .with("lock", l.key.as_str())
                    .with("error", err.to_string()),
            };
            self.log(e);
        }
    }
}

/// A time for the log: RFC 3339 in UTC, milliseconds.
fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Whether `tier` had a slot after `from` and before `before` (a slot the
/// daemon was not running for).
fn first_slot_before(tier: &crate::tier::Tier, from: DateTime<Utc>, before: DateTime<Utc>) -> bool {
    tier.schedule
        .as_ref()
        .and_then(|s| s.next_runs(tier.tz(), from, 1).into_iter().next())
        .is_some_and(|t| t.with_timezone(&Utc) < before)
}

/// Takes `DIR/schedule.lock` (flock) so two daemons never share a state
/// directory, and writes this pid into it for people.
fn lock_state_dir(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::usage(format!("cannot create state directory {}: {e}", dir.display()))
            .hint("pass --state-dir DIR (a directory the daemon's user may write), or set StateDirectory=strata in its systemd unit")
    })?;
    let path = dir.join("schedule.lock");
    let lock = crate::util::try_flock(&path)
        .map_err(|e| Error::usage(format!("cannot open {}: {e}", path.display())))?;
    let Some(mut f) = lock else {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(Error::conflict(format!(
            "another `strata schedule run` (pid {}) uses the state directory {}",
            holder.trim(),
            dir.display()
        ))
        .hint("run one daemon per state directory; stop the other one, or give this one its own --state-dir"));
    };
    use std::io::{Seek, Write};
    let _ = f.set_len(0);
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = writeln!(f, "{}", std::process::id());
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_daemon_per_state_dir() {
        let d = tempfile::tempdir().unwrap();
        let held = lock_state_dir(d.path()).unwrap();
        // flock locks belong to the open file description: a second open
        // in the same process conflicts too.
        let e = lock_state_dir(d.path()).unwrap_err();
        assert_eq!(e.exit_code(), 8, "{e}");
        assert!(e.message.contains(&std::process::id().to_string()), "{e}");
        drop(held);
        lock_state_dir(d.path()).unwrap();
    }
}

//! Runs checks: all at once, each under its own timeout inside the global one, then suppresses
//! failures that a failing dependency explains.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::checks::{self, Outcome, Shared};
use crate::report::{CheckResult, Report, Status};
use crate::spec::{CheckSpec, Probe};
use crate::units::format_duration;

/// Where the `backup` kind learns the newest snapshot time. The binary implements it over the
/// repository (opened read-only); this crate never touches the repository itself.
pub trait SnapshotAges: Send + Sync {
    /// The newest snapshot of `source` (of any source when `None`); `Ok(None)` when there is
    /// none; `Err` with a one-line reason when the repository cannot be read.
    fn newest(&self, source: Option<&str>) -> Result<Option<NewestSnapshot>, String>;
}

/// Where the `wal_locations` kind learns how far each storage location's archived WAL is
/// behind; the binary implements it over the configured locations (a listing of each, no
/// passphrase needed).
pub trait WalCopies: Send + Sync {
    /// One entry per configured location; `Err` with a one-line reason when none can be read.
    fn copies(&self) -> Result<Vec<WalCopy>, String>;
}

/// One location's archived WAL against the first reachable location's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalCopy {
    /// Location name.
    pub location: String,
    /// `Err`: why it could not be listed.
    pub reachable: Result<(), String>,
    /// WAL files the first reachable location has and this one lacks.
    pub missing: usize,
    /// Storage time of the oldest of them (how long this location has lagged).
    pub missing_since: Option<jiff::Timestamp>,
    /// Its newest WAL file.
    pub newest: Option<String>,
}

/// What the `backup` kind needs to know of the newest snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewestSnapshot {
    /// When the backup started.
    pub time: jiff::Timestamp,
    /// Files the backup could not read (a partial snapshot is a failed backup, in the plan's
    /// terms, even though it was saved).
    pub unreadable: usize,
}

/// What checks may need from their surroundings.
#[derive(Clone, Default)]
pub struct Context {
    /// Snapshot times for `backup` checks; `None`: those checks report that no repository is
    /// configured.
    pub snapshots: Option<Arc<dyn SnapshotAges>>,
    /// WAL copies per location for `wal_locations` checks; `None`: no repository configured.
    pub wal_copies: Option<Arc<dyn WalCopies>>,
    /// Results of earlier runs, for `error_rate` checks over another check's failures. Keep one
    /// across the runs of `--watch`; `None`: each run sees only itself.
    pub history: Option<Arc<History>>,
}

/// Which checks failed when: the memory of `--watch`, from which `error_rate` checks with
/// `of_check` compute a failure share over their window.
#[derive(Debug, Default)]
pub struct History {
    samples: std::sync::Mutex<Vec<(jiff::Timestamp, String, bool)>>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Records one run's results; forgets samples older than `keep`.
    fn record(&self, at: jiff::Timestamp, results: impl Iterator<Item = (String, bool)>, keep: Duration) {
        let Ok(mut s) = self.samples.lock() else { return };
        s.extend(results.map(|(n, failed)| (at, n, failed)));
        let horizon = at - jiff::SignedDuration::try_from(keep).unwrap_or(jiff::SignedDuration::MAX);
        s.retain(|(t, _, _)| *t >= horizon);
    }

    /// (failed, total) runs of `name` since `since`.
    fn failures(&self, name: &str, since: jiff::Timestamp) -> (usize, usize) {
        let Ok(s) = self.samples.lock() else { return (0, 0) };
        s.iter()
            .filter(|(t, n, _)| *t >= since && n == name)
            .fold((0, 0), |(f, total), (_, _, failed)| {
                (f + usize::from(*failed), total + 1)
            })
    }
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Bound on the whole run: no check outlives it, whatever its own timeout.
    pub timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            timeout: Duration::from_secs(120),
        }
    }
}

/// Runs the checks on a fresh two-thread runtime (for callers without one).
pub fn run_blocking(checks: &[CheckSpec], opts: &RunOptions, ctx: &Context) -> std::io::Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    Ok(rt.block_on(run(checks, opts, ctx)))
}

/// Runs every check concurrently and builds the report (results in the given order).
pub async fn run(checks: &[CheckSpec], opts: &RunOptions, ctx: &Context) -> Report {
    let started_at = jiff::Timestamp::now();
    let start = Instant::now();
    let deadline = start + opts.timeout;
    let shared = Arc::new(Shared::new());
    let mut tasks = Vec::with_capacity(checks.len());
    for spec in checks {
        let spec = spec.clone();
        let shared = shared.clone();
        let ctx = ctx.clone();
        let global = opts.timeout;
        // Each check is its own task so both cores share the work (TLS handshakes, parsing).
        tasks.push(tokio::spawn(async move {
            let own = start + spec.timeout;
            let until = own.min(deadline);
            let t0 = Instant::now();
            let outcome = match tokio::time::timeout_at(until, checks::probe(&spec, &shared, &ctx)).await {
                Ok(o) => o,
                Err(_) if own <= deadline => {
                    Outcome::fail("down", format!("timed out after {}", format_duration(spec.timeout)))
                }
                Err(_) => Outcome::fail(
                    "down",
                    format!("stopped by the global timeout ({})", format_duration(global)),
                ),
            };
            let outcome = apply_latency(&spec, outcome);
            (outcome, t0.elapsed())
        }));
    }
    let mut outcomes: Vec<(Outcome, Duration)> = Vec::with_capacity(checks.len());
    for t in tasks {
        outcomes.push(match t.await {
            Ok(o) => o,
            Err(e) => (Outcome::fail("down", format!("check crashed: {e}")), Duration::ZERO),
        });
    }
    derive_failure_rates(checks, &mut outcomes, ctx, started_at);
    let results = suppress(checks, outcomes);
    Report::new(started_at, start.elapsed().as_secs_f64() * 1000.0, results)
}

/// Records this run's results and evaluates the `error_rate` checks over other checks' failures.
fn derive_failure_rates(
    checks: &[CheckSpec],
    outcomes: &mut [(Outcome, Duration)],
    ctx: &Context,
    now: jiff::Timestamp,
) {
    let local;
    let history = match &ctx.history {
        Some(h) => h.as_ref(),
        None => {
            local = History::new();
            &local
        }
    };
    let is_derived = |s: &CheckSpec| matches!(s.probe, Probe::CheckFailures { .. });
    let keep = checks
        .iter()
        .filter_map(|s| match s.probe {
            Probe::CheckFailures { window, .. } => Some(window),
            _ => None,
        })
        .max()
        .unwrap_or(Duration::ZERO);
    history.record(
        now,
        checks
            .iter()
            .zip(outcomes.iter())
            .filter(|(s, _)| !is_derived(s))
            .map(|(s, (o, _))| (s.name.clone(), o.failure.is_some())),
        keep,
    );
    for (spec, (o, _)) in checks.iter().zip(outcomes.iter_mut()) {
        let Probe::CheckFailures {
            of_check,
            window,
            max_rate,
        } = &spec.probe
        else {
            continue;
        };
        let since = now - jiff::SignedDuration::try_from(*window).unwrap_or(jiff::SignedDuration::MAX);
        let (failed, total) = history.failures(of_check, since);
        let span = format_duration(*window);
        *o = if total == 0 {
            Outcome::ok(format!("no runs of {of_check} in the last {span}"))
        } else {
            let rate = failed as f64 / total as f64;
            let what = format!(
                "{of_check} failed {failed} of {total} run(s) in the last {span} ({:.1}%)",
                rate * 100.0
            );
            if rate > *max_rate {
                Outcome::fail("errors", format!("{what}, above {:.1}%", max_rate * 100.0))
            } else {
                Outcome::ok(what)
            }
        };
    }
}

/// Turns a too-slow success into a `slow` (critical_latency) or `degraded` (warn_latency) failure.
fn apply_latency(spec: &CheckSpec, o: Outcome) -> Outcome {
    let (Some(lat), None) = (o.latency, o.failure) else {
        return o;
    };
    if let Some(c) = spec.critical_latency
        && lat > c
    {
        return Outcome {
            failure: Some("slow"),
            detail: format!(
                "{} (took {}, limit {})",
                o.detail,
                format_duration(lat),
                format_duration(c)
            ),
            latency: o.latency,
        };
    }
    if let Some(w) = spec.warn_latency
        && lat > w
    {
        return Outcome {
            failure: Some("degraded"),
            detail: format!(
                "{} (took {}, target {})",
                o.detail,
                format_duration(lat),
                format_duration(w)
            ),
            latency: o.latency,
        };
    }
    o
}

/// Builds results; a failing check with a failing (or itself suppressed) direct dependency is
/// suppressed: its own observation stays in the detail, but it carries no level.
fn suppress(checks: &[CheckSpec], outcomes: Vec<(Outcome, Duration)>) -> Vec<CheckResult> {
    let mut results: Vec<CheckResult> = checks
        .iter()
        .zip(outcomes)
        .map(|(spec, (o, _elapsed))| CheckResult {
            name: spec.name.clone(),
            kind: spec.kind().to_string(),
            target: spec.target(),
            status: if o.failure.is_some() { Status::Fail } else { Status::Ok },
            level: o.failure.map(|c| spec.level_of(c)),
            class: o.failure.map(str::to_string),
            latency_ms: o.latency.map(|l| (l.as_secs_f64() * 10_000.0).round() / 10.0),
            detail: o.detail,
            depends_on: spec.depends_on.clone(),
            suppressed_by: Vec::new(),
        })
        .collect();
    let index: BTreeMap<String, usize> = results.iter().enumerate().map(|(i, r)| (r.name.clone(), i)).collect();
    // Dependencies form a DAG (validated), so resolving in dependency order terminates.
    let mut done = vec![false; results.len()];
    fn resolve(i: usize, results: &mut Vec<CheckResult>, index: &BTreeMap<String, usize>, done: &mut Vec<bool>) {
        if done[i] {
            return;
        }
        done[i] = true;
        let deps = results[i].depends_on.clone();
        let mut down = Vec::new();
        for d in deps {
            // A dependency left out of this run (`--only`) cannot explain anything.
            let Some(&j) = index.get(&d) else { continue };
            resolve(j, results, index, done);
            if results[j].status != Status::Ok {
                down.push(d);
            }
        }
        let r = &mut results[i];
        if r.status == Status::Fail && !down.is_empty() {
            r.status = Status::Suppressed;
            r.level = None;
            r.detail = format!(
                "suppressed: depends on {} (failing); own result: {}",
                down.join(", "),
                r.detail
            );
            r.suppressed_by = down;
        }
    }
    for i in 0..results.len() {
        resolve(i, &mut results, &index, &mut done);
    }
    results
}

//! What a run found: per-check results, the worst level, a one-line verdict, and the JSON shape
//! (`schema_version` 1) that scripts and dashboards read.

use serde::{Deserialize, Serialize};

use crate::level::Level;

/// Version of the JSON report. Fields are only ever added within a version; a rename or a
/// change of meaning bumps it.
pub const SCHEMA_VERSION: u32 = 1;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Healthy.
    Ok,
    /// Failing; `level` says how badly.
    Fail,
    /// Failing, but a check it depends on is down too: reported, never alerted on.
    Suppressed,
}

impl Status {
    /// Lower-case name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::Suppressed => "suppressed",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Check name.
    pub name: String,
    /// Check kind (`http`, `tls`, …).
    pub kind: String,
    /// What was probed; URLs without passwords or query strings.
    pub target: String,
    /// ok, fail or suppressed.
    pub status: Status,
    /// Alert level when `status` is `fail`; null otherwise.
    pub level: Option<Level>,
    /// Failure class (`down`, `slow`, `expiring`, …) when not ok; null otherwise.
    pub class: Option<String>,
    /// How long the probe took (connect + request + answer), when it measured one.
    pub latency_ms: Option<f64>,
    /// What was seen, in one line.
    pub detail: String,
    /// The check's configured dependencies.
    pub depends_on: Vec<String>,
    /// The failing dependencies that suppressed this check (empty unless suppressed).
    pub suppressed_by: Vec<String>,
}

/// How many checks ended in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// All checks run.
    pub total: usize,
    /// Healthy.
    pub ok: usize,
    /// Failing and alerting.
    pub fail: usize,
    /// Failing behind a failing dependency.
    pub suppressed: usize,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When the run started (RFC 3339, UTC).
    pub started_at: jiff::Timestamp,
    /// Wall-clock time of the whole run.
    pub duration_ms: f64,
    /// `healthy`, or the worst level: `high`, `urgent`, `critical`.
    pub status: String,
    /// The worst level among failing checks; null when healthy.
    pub worst_level: Option<Level>,
    /// One line for people, e.g. `CRITICAL: 1 of 5 checks failing (db critical); 2 suppressed`.
    pub verdict: String,
    /// Counts by status.
    pub counts: Counts,
    /// Results in config order.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// Builds the summary fields from the results.
    pub fn new(started_at: jiff::Timestamp, duration_ms: f64, checks: Vec<CheckResult>) -> Report {
        let mut counts = Counts {
            total: checks.len(),
            ..Counts::default()
        };
        for c in &checks {
            match c.status {
                Status::Ok => counts.ok += 1,
                Status::Fail => counts.fail += 1,
                Status::Suppressed => counts.suppressed += 1,
            }
        }
        let worst_level = checks.iter().filter_map(|c| c.level).max();
        let status = worst_level.map_or("healthy", Level::as_str).to_string();
        let verdict = verdict(worst_level, &counts, &checks);
        Report {
            schema_version: SCHEMA_VERSION,
            started_at,
            duration_ms,
            status,
            worst_level,
            verdict,
            counts,
            checks,
        }
    }
}

fn verdict(worst: Option<Level>, counts: &Counts, checks: &[CheckResult]) -> String {
    let plural = |n: usize| if n == 1 { "check" } else { "checks" };
    let Some(worst) = worst else {
        if counts.total == 0 {
            return "HEALTHY: no checks configured".into();
        }
        return format!("HEALTHY: all {} {} pass", counts.total, plural(counts.total));
    };
    let failing: Vec<String> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| format!("{} {}", c.name, c.level.map_or("", Level::as_str)))
        .collect();
    let mut s = format!(
        "{}: {} of {} {} failing ({})",
        worst.as_str().to_uppercase(),
        counts.fail,
        counts.total,
        plural(counts.total),
        failing.join(", ")
    );
    if counts.suppressed > 0 {
        s.push_str(&format!(
            "; {} suppressed behind failing dependencies",
            counts.suppressed
        ));
    }
    s
}

/// A check whose status or level changed between two runs (for `--watch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Check name.
    pub name: String,
    /// Status before; null for a check not in the previous run.
    pub from_status: Option<Status>,
    /// Level before.
    pub from_level: Option<Level>,
    /// The new result.
    pub now: CheckResult,
}

/// The checks whose status or level differ between `prev` and `next` (all of `next` when there
/// is no previous run).
pub fn changes(prev: Option<&Report>, next: &Report) -> Vec<Change> {
    next.checks
        .iter()
        .filter_map(|n| {
            let before = prev.and_then(|p| p.checks.iter().find(|c| c.name == n.name));
            match before {
                Some(b) if b.status == n.status && b.level == n.level => None,
                _ => Some(Change {
                    name: n.name.clone(),
                    from_status: before.map(|b| b.status),
                    from_level: before.and_then(|b| b.level),
                    now: n.clone(),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, status: Status, level: Option<Level>) -> CheckResult {
        CheckResult {
            name: name.into(),
            kind: "tcp".into(),
            target: "x:1".into(),
            status,
            level,
            class: None,
            latency_ms: None,
            detail: String::new(),
            depends_on: vec![],
            suppressed_by: vec![],
        }
    }

    #[test]
    fn verdict_names_the_worst() {
        let now = jiff::Timestamp::now();
        let rep = Report::new(
            now,
            1.0,
            vec![
                r("a", Status::Ok, None),
                r("db", Status::Fail, Some(Level::Critical)),
                r("api", Status::Suppressed, None),
                r("tls", Status::Fail, Some(Level::High)),
            ],
        );
        assert_eq!(rep.worst_level, Some(Level::Critical));
        assert_eq!(rep.status, "critical");
        assert_eq!(
            rep.verdict,
            "CRITICAL: 2 of 4 checks failing (db critical, tls high); 1 suppressed behind failing dependencies"
        );
        let ok = Report::new(now, 1.0, vec![r("a", Status::Ok, None)]);
        assert_eq!(ok.verdict, "HEALTHY: all 1 check pass");
        assert_eq!(changes(Some(&rep), &rep).len(), 0);
        let c = changes(Some(&ok), &rep);
        assert_eq!(
            c.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["db", "api", "tls"]
        );
    }
}

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

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Numeric form of a level for metrics: 0 none, 1 high, 2 urgent, 3 critical.
fn level_number(l: Option<Level>) -> u8 {
    match l {
        None => 0,
        Some(Level::High) => 1,
        Some(Level::Urgent) => 2,
        Some(Level::Critical) => 3,
    }
}

impl Report {
    /// The report in the Prometheus text exposition format (version 0.0.4), for node_exporter's
    /// textfile collector: Prometheus alerts on these and keeps the history a single run lacks.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, help: &str, rows: Vec<(String, String)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for (labels, value) in rows {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        let labels = |c: &CheckResult| format!("{{check=\"{}\",kind=\"{}\"}}", label(&c.name), label(&c.kind));
        family(
            "lifeboat_check_up",
            "1 when the check passed, 0 when it failed or was suppressed.",
            self.checks
                .iter()
                .map(|c| (labels(c), u8::from(c.status == Status::Ok).to_string()))
                .collect(),
        );
        family(
            "lifeboat_check_suppressed",
            "1 when the check failed behind a failing dependency (no alert).",
            self.checks
                .iter()
                .map(|c| (labels(c), u8::from(c.status == Status::Suppressed).to_string()))
                .collect(),
        );
        family(
            "lifeboat_check_alert_level",
            "Alert level of the check: 0 none, 1 high, 2 urgent, 3 critical.",
            self.checks
                .iter()
                .map(|c| (labels(c), level_number(c.level).to_string()))
                .collect(),
        );
        family(
            "lifeboat_check_latency_seconds",
            "Latency the check measured (only kinds that measure one).",
            self.checks
                .iter()
                .filter_map(|c| c.latency_ms.map(|ms| (labels(c), format!("{}", ms / 1000.0))))
                .collect(),
        );
        family(
            "lifeboat_health_alert_level",
            "Worst alert level of the run: 0 healthy, 1 high, 2 urgent, 3 critical.",
            vec![(String::new(), level_number(self.worst_level).to_string())],
        );
        family(
            "lifeboat_health_last_run_timestamp_seconds",
            "When the run started (Unix time).",
            vec![(
                String::new(),
                format!("{:.3}", self.started_at.as_millisecond() as f64 / 1000.0),
            )],
        );
        family(
            "lifeboat_health_duration_seconds",
            "Wall-clock time of the whole run.",
            vec![(String::new(), format!("{}", self.duration_ms / 1000.0))],
        );
        out
    }
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

    #[test]
    fn prometheus_exposition() {
        let mut db = r("db", Status::Fail, Some(Level::Critical));
        db.latency_ms = Some(12.5);
        let mut odd = r("we\"ird", Status::Suppressed, None);
        odd.kind = "http".into();
        let rep = Report::new(
            jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            250.0,
            vec![db, odd],
        );
        let text = rep.to_prometheus();
        for line in [
            "# TYPE lifeboat_check_up gauge",
            "lifeboat_check_up{check=\"db\",kind=\"tcp\"} 0",
            "lifeboat_check_alert_level{check=\"db\",kind=\"tcp\"} 3",
            "lifeboat_check_suppressed{check=\"we\\\"ird\",kind=\"http\"} 1",
            "lifeboat_check_latency_seconds{check=\"db\",kind=\"tcp\"} 0.0125",
            "lifeboat_health_alert_level 3",
            "lifeboat_health_last_run_timestamp_seconds 1700000000.000",
            "lifeboat_health_duration_seconds 0.25",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with('\n'));
    }
}

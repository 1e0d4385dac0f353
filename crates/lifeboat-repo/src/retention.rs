//! Snapshot retention ("forget") policies.
//!
//! A [`RetentionPolicy`] says which snapshots must survive a `forget`; every
//! snapshot that no rule keeps may be deleted. [`apply`] evaluates a policy
//! over a list of [`Candidate`]s and explains, per snapshot, why it was kept.
//!
//! This module is pure logic (no I/O) so the rules can be tested exhaustively
//! and the same code can drive both a dry run and the real deletion.
//!
//! The semantics follow restic's documented `forget` behaviour, because that
//! is what operators already know and expect:
//!
//! * snapshots are walked newest first (ties broken by id);
//! * `keep_last n` keeps the `n` newest snapshots;
//! * `keep_{hourly,daily,weekly,monthly,yearly} n` keeps the newest snapshot
//!   of each of the last `n` hours/days/ISO weeks/months/years *that have
//!   snapshots*; buckets are computed in the caller's time zone;
//! * if such a rule still has budget left when the oldest snapshot is
//!   reached, the oldest snapshot is kept as well ("oldest daily snapshot"),
//!   which maximises the history kept while the budget is not used up;
//! * `keep_within d` keeps every snapshot within `d` of the **newest**
//!   snapshot (not of "now"), so a host that stopped backing up never loses
//!   its last backups just because time passes;
//! * `keep_within_{hourly,...} d` keeps the newest snapshot of every bucket
//!   within `d` of the newest snapshot (with the same "oldest" extra);
//! * `keep_tags` keeps every snapshot carrying any of the listed tags;
//! * a snapshot is kept if any rule keeps it; each rule adds a reason.
//!
//! Deliberate differences from restic, all in the direction of keeping more:
//!
//! * a snapshot exactly at a window's cutoff is kept (restic: strictly after);
//! * snapshots dated after `now` are always kept ("in the future") and take
//!   no part in the counting rules, so a host with a broken clock cannot
//!   push real snapshots out of `keep_last` or shift the `keep_within`
//!   windows (restic already ignores them when picking the newest snapshot);
//! * month/year arithmetic clamps to the end of the month (31 March minus one
//!   month is 29 February, not 2 March as in Go's `AddDate`);
//! * a `keep_tags` entry is a single tag, not a comma-separated tag list.

use std::fmt;
use std::str::FromStr;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::{Deserialize, Serialize};

/// Errors produced while reading retention settings.
///
/// Exists so configuration and command-line front ends can report a precise,
/// user-facing message instead of silently ignoring a malformed rule.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetentionError {
    /// A duration such as `"7d"` or `"1y6m"` could not be parsed; rejecting
    /// it loudly matters because a misread retention window deletes backups.
    #[error("invalid retention duration {input:?}: {reason}")]
    BadDuration {
        /// The text exactly as given, so the user can find it in their config.
        input: String,
        /// What is wrong with it, phrased for a human.
        reason: String,
    },
}

/// A calendar span such as `"7d"`, `"30d"`, `"1y6m"`, `"12h"` or `"2w"`.
///
/// Retention windows are naturally expressed in calendar units ("keep a
/// month"), which have no fixed length, so this keeps the units separate and
/// resolves them against a time zone only when a policy is applied.
///
/// Text form: one or more `<number><unit>` groups with units `y` (years),
/// `m` (months), `w` (weeks), `d` (days) and `h` (hours), each unit at most
/// once and in that order, e.g. `"1y2m3w4d5h"`. Minutes are deliberately not
/// supported (`m` means months). A span of zero (`"0d"`) parses, but a rule
/// with a zero span is treated as absent, like restic does. Serialized as the
/// text form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeepDuration {
    /// Whole calendar years (`y`), so "keep a year" means the same date last year.
    pub years: u32,
    /// Whole calendar months (`m`), clamped to the end of shorter months.
    pub months: u32,
    /// Weeks of seven calendar days (`w`), a convenience for weekly schedules.
    pub weeks: u32,
    /// Calendar days (`d`), which may be 23 or 25 hours long across DST changes.
    pub days: u32,
    /// Elapsed hours (`h`), for sub-day windows.
    pub hours: u32,
}

impl KeepDuration {
    /// Whether every component is zero; such a span disables the rule it is
    /// attached to, which is how "no window" is spelled in restic.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// Converts to a `jiff` span, so callers can do their own calendar
    /// arithmetic with exactly the semantics `apply` uses.
    ///
    /// Fails when a component exceeds what `jiff` can represent (for example
    /// more than 19 998 years); parsing already rejects such values, but the
    /// fields are public and may be set directly.
    pub fn to_span(&self) -> Result<Span, RetentionError> {
        let bad = |unit: char, value: u32| RetentionError::BadDuration {
            input: self.to_string(),
            reason: format!("{value}{unit} is larger than the supported range"),
        };
        Span::new()
            .try_years(i64::from(self.years))
            .map_err(|_| bad('y', self.years))?
            .try_months(i64::from(self.months))
            .map_err(|_| bad('m', self.months))?
            .try_weeks(i64::from(self.weeks))
            .map_err(|_| bad('w', self.weeks))?
            .try_days(i64::from(self.days))
            .map_err(|_| bad('d', self.days))?
            .try_hours(i64::from(self.hours))
            .map_err(|_| bad('h', self.hours))
    }

    /// The earliest instant still inside a window of this length that ends
    /// at `newest`, computed in `tz` (calendar units first, then hours).
    ///
    /// When the window reaches past the representable range of time, the
    /// window covers everything, so the minimum timestamp is returned: an
    /// oversized window must keep more, never less.
    fn cutoff(&self, newest: Timestamp, tz: &TimeZone) -> Timestamp {
        self.to_span()
            .ok()
            .and_then(|span| newest.to_zoned(tz.clone()).checked_sub(span).ok())
            .map_or(Timestamp::MIN, |zoned| zoned.timestamp())
    }
}

impl fmt::Display for KeepDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0d");
        }
        for (value, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.weeks, 'w'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for KeepDuration {
    type Err = RetentionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| RetentionError::BadDuration {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(bad("empty duration; expected e.g. \"7d\" or \"1y6m\"".into()));
        }
        const UNITS: [char; 5] = ['y', 'm', 'w', 'd', 'h'];
        let mut out = Self::default();
        // Index into UNITS of the next unit allowed; enforces order and
        // uniqueness at once.
        let mut next_unit = 0;
        let mut rest = input;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let (number, tail) = rest.split_at(digits);
            let Some(unit) = tail.chars().next() else {
                return Err(bad(format!(
                    "missing unit after {number:?}; expected one of y, m, w, d, h"
                )));
            };
            if number.is_empty() {
                return Err(if UNITS.contains(&unit) {
                    bad(format!("missing number before unit '{unit}'"))
                } else {
                    bad(format!(
                        "unexpected character {unit:?}; expected a number followed by y, m, w, d or h"
                    ))
                });
            }
            let Some(position) = UNITS.iter().position(|&u| u == unit) else {
                return Err(bad(format!(
                    "unknown unit {unit:?}; expected y (years), m (months), w (weeks), d (days) or h (hours)"
                )));
            };
            if position < next_unit {
                return Err(bad(format!(
                    "unit '{unit}' repeated or out of order; units must appear at most once, in the order y, m, w, d, h"
                )));
            }
            next_unit = position + 1;
            let value: u32 = number
                .parse()
                .map_err(|_| bad(format!("number {number} is too large")))?;
            let field = match unit {
                'y' => &mut out.years,
                'm' => &mut out.months,
                'w' => &mut out.weeks,
                'd' => &mut out.days,
                _ => &mut out.hours,
            };
            *field = value;
            rest = &tail[unit.len_utf8()..];
        }
        // Reject spans jiff cannot represent, so a policy that parsed is a
        // policy that can be evaluated exactly.
        out.to_span().map_err(|err| match err {
            RetentionError::BadDuration { reason, .. } => bad(reason),
        })?;
        Ok(out)
    }
}

impl TryFrom<String> for KeepDuration {
    type Error = RetentionError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<KeepDuration> for String {
    fn from(value: KeepDuration) -> Self {
        value.to_string()
    }
}

/// Which snapshots a `forget` must keep; everything else may be deleted.
///
/// Exists as one serializable value so the same policy can come from a config
/// file or the command line and be shown back to the user verbatim. Counts of
/// `0` and zero-length windows are treated like absent rules (restic's
/// convention). Unknown fields are rejected on deserialization so that a typo
/// such as `keep_dayly` fails loudly instead of silently keeping less.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the `n` newest snapshots, a floor that holds however rarely
    /// backups run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` hours that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` days that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` ISO weeks that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` months that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` years that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this span of the newest snapshot (not of
    /// "now", so a host that stopped backing up keeps its last backups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<KeepDuration>,
    /// Within this span of the newest snapshot, keep the newest per hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<KeepDuration>,
    /// Within this span of the newest snapshot, keep the newest per day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<KeepDuration>,
    /// Within this span of the newest snapshot, keep the newest per ISO week.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<KeepDuration>,
    /// Within this span of the newest snapshot, keep the newest per month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<KeepDuration>,
    /// Within this span of the newest snapshot, keep the newest per year.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<KeepDuration>,
    /// Keep every snapshot carrying any of these tags, so hand-marked
    /// snapshots (e.g. "before-migration") survive any schedule.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
}

impl RetentionPolicy {
    /// The plan's default: every backup kept 7 days, one a day kept 30 days.
    ///
    /// Exists so a repository without an explicit policy still has a sane,
    /// documented retention instead of keeping everything forever or nothing.
    pub fn plan_default() -> Self {
        Self {
            keep_within_hourly: Some(KeepDuration {
                days: 7,
                ..KeepDuration::default()
            }),
            keep_within_daily: Some(KeepDuration {
                days: 30,
                ..KeepDuration::default()
            }),
            ..Self::default()
        }
    }

    /// The six `keep_within*` rules, in order from plain to yearly.
    fn within_rules(&self) -> [Option<KeepDuration>; 6] {
        [
            self.keep_within,
            self.keep_within_hourly,
            self.keep_within_daily,
            self.keep_within_weekly,
            self.keep_within_monthly,
            self.keep_within_yearly,
        ]
    }

    /// The longest time any time-based rule keeps a snapshot after it was taken, rounded up
    /// (a month counts 31 days, a year 366, a week 7; `keep_daily = n` keeps at most n days,
    /// `keep_weekly = n` n weeks, and so on). Used to lock objects in an Object Lock bucket for
    /// as long as a kept snapshot may need them.
    ///
    /// `keep_last` and `keep_tags` have no time bound (a snapshot kept only by them may live
    /// forever); they are not counted, and `None` means no rule has a time bound at all.
    pub fn longest_time_span(&self) -> Option<std::time::Duration> {
        const HOUR: u64 = 3600;
        const DAY: u64 = 24 * HOUR;
        let counts = [
            (self.keep_hourly, HOUR),
            (self.keep_daily, DAY),
            (self.keep_weekly, 7 * DAY),
            (self.keep_monthly, 31 * DAY),
            (self.keep_yearly, 366 * DAY),
        ];
        let spans = self.within_rules();
        let from_counts = counts.iter().filter_map(|(n, unit)| n.map(|n| u64::from(n) * unit));
        let from_spans = spans.iter().flatten().map(|d| {
            u64::from(d.years) * 366 * DAY
                + u64::from(d.months) * 31 * DAY
                + u64::from(d.weeks) * 7 * DAY
                + u64::from(d.days) * DAY
                + u64::from(d.hours) * HOUR
        });
        from_counts
            .chain(from_spans)
            .filter(|s| *s > 0)
            .max()
            .map(std::time::Duration::from_secs)
    }

    /// Whether the policy has no effective rule at all.
    ///
    /// Callers must refuse to run `forget` with an empty policy: "keep
    /// nothing" is never what an operator meant. Zero counts and zero spans
    /// count as absent.
    pub fn is_empty(&self) -> bool {
        let counts = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        let spans = self.within_rules();
        counts.iter().all(|c| c.unwrap_or(0) == 0)
            && spans.iter().all(|s| s.is_none_or(|s| s.is_zero()))
            && self.keep_tags.is_empty()
    }
}

/// One snapshot as the policy sees it: only what the rules look at.
///
/// Borrowed so callers can evaluate a policy over their snapshot list without
/// cloning it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The snapshot's id, echoed in the [`Decision`] and used to break ties.
    pub id: &'a str,
    /// When the snapshot was taken; the only input to the time-based rules.
    pub time: Timestamp,
    /// The snapshot's tags, matched against [`RetentionPolicy::keep_tags`].
    pub tags: &'a [String],
}

/// The verdict for one snapshot, with the reasons, so a dry run can show the
/// operator exactly why each snapshot survives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The id of the snapshot this decision is about.
    pub id: String,
    /// `true` to keep the snapshot, `false` if it may be forgotten.
    pub keep: bool,
    /// Every rule that keeps the snapshot (e.g. `"last 3"`, `"daily snapshot"`,
    /// `"daily within 30d"`, `"tag config"`); empty exactly when `keep` is false.
    pub reasons: Vec<String>,
}

/// The calendar bucket sizes that rules group snapshots by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Granularity {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// A calendar bucket: two snapshots in the same bucket compare equal.
type Bucket = (i16, i8, i8, i8);

impl Granularity {
    fn name(self) -> &'static str {
        match self {
            Self::Hour => "hourly",
            Self::Day => "daily",
            Self::Week => "weekly",
            Self::Month => "monthly",
            Self::Year => "yearly",
        }
    }

    fn bucket(self, dt: DateTime) -> Bucket {
        match self {
            Self::Hour => (dt.year(), dt.month(), dt.day(), dt.hour()),
            Self::Day => (dt.year(), dt.month(), dt.day(), 0),
            Self::Week => {
                let week = dt.date().iso_week_date();
                (week.year(), week.week(), 0, 0)
            }
            Self::Month => (dt.year(), dt.month(), 0, 0),
            Self::Year => (dt.year(), 0, 0, 0),
        }
    }
}

/// State of a `keep_hourly`..`keep_yearly` rule during the walk.
struct CountRule {
    granularity: Granularity,
    remaining: u32,
    last: Option<Bucket>,
}

/// State of a `keep_within_hourly`..`keep_within_yearly` rule during the walk.
struct WithinRule {
    granularity: Granularity,
    span: KeepDuration,
    cutoff: Timestamp,
    last: Option<Bucket>,
}

/// Decides, for every candidate, whether `policy` keeps it and why.
///
/// Returns one [`Decision`] per candidate, newest first (ties by id), in
/// whatever order the candidates came. Buckets and calendar windows are
/// computed in `tz`. Time windows are relative to the newest snapshot that
/// is not after `now` (restic's rule), so a host that stopped backing up
/// never loses its last backups. Snapshots dated after `now` are always kept
/// (reason `"in the future"`) and do not take part in the counting rules. An
/// empty policy keeps everything with reason `"no policy"`; callers should
/// check [`RetentionPolicy::is_empty`] and refuse before getting here.
pub fn apply(policy: &RetentionPolicy, candidates: &[Candidate<'_>], now: Timestamp, tz: &TimeZone) -> Vec<Decision> {
    let mut order: Vec<&Candidate<'_>> = candidates.iter().collect();
    order.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.id.cmp(b.id)));

    let empty = policy.is_empty();
    // Sorted newest first, so the first snapshot not in the future is the
    // newest one the windows are anchored to.
    let newest = order.iter().map(|c| c.time).find(|&t| t <= now);
    let active_span = |s: Option<KeepDuration>| s.filter(|s| !s.is_zero());
    let within = newest.and_then(|newest| active_span(policy.keep_within).map(|span| (span, span.cutoff(newest, tz))));

    let mut count_rules: Vec<CountRule> = [
        (policy.keep_hourly, Granularity::Hour),
        (policy.keep_daily, Granularity::Day),
        (policy.keep_weekly, Granularity::Week),
        (policy.keep_monthly, Granularity::Month),
        (policy.keep_yearly, Granularity::Year),
    ]
    .into_iter()
    .filter_map(|(count, granularity)| {
        count.filter(|&n| n > 0).map(|remaining| CountRule {
            granularity,
            remaining,
            last: None,
        })
    })
    .collect();

    let mut within_rules: Vec<WithinRule> = match newest {
        None => Vec::new(),
        Some(newest) => [
            (policy.keep_within_hourly, Granularity::Hour),
            (policy.keep_within_daily, Granularity::Day),
            (policy.keep_within_weekly, Granularity::Week),
            (policy.keep_within_monthly, Granularity::Month),
            (policy.keep_within_yearly, Granularity::Year),
        ]
        .into_iter()
        .filter_map(|(span, granularity)| {
            active_span(span).map(|span| WithinRule {
                granularity,
                span,
                cutoff: span.cutoff(newest, tz),
                last: None,
            })
        })
        .collect(),
    };

    let keep_last = policy.keep_last.unwrap_or(0);
    let oldest_index = order.len().saturating_sub(1);
    // Position among snapshots that are not in the future.
    let mut rank: u32 = 0;
    let mut decisions = Vec::with_capacity(order.len());

    for (index, candidate) in order.into_iter().enumerate() {
        let mut reasons = Vec::new();
        let future = candidate.time > now;
        if future {
            reasons.push("in the future".to_owned());
        } else if empty {
            reasons.push("no policy".to_owned());
        }

        for tag in &policy.keep_tags {
            if candidate.tags.contains(tag) {
                reasons.push(format!("tag {tag}"));
            }
        }

        if !future && !empty {
            let is_oldest = index == oldest_index;
            let civil = tz.to_datetime(candidate.time);

            if let Some((span, cutoff)) = within
                && candidate.time >= cutoff
            {
                reasons.push(format!("within {span}"));
            }

            if rank < keep_last {
                reasons.push(format!("last {keep_last}"));
            }

            for rule in &mut count_rules {
                if rule.remaining == 0 {
                    continue;
                }
                let bucket = rule.granularity.bucket(civil);
                let name = rule.granularity.name();
                if rule.last != Some(bucket) {
                    reasons.push(format!("{name} snapshot"));
                } else if is_oldest {
                    reasons.push(format!("oldest {name} snapshot"));
                } else {
                    continue;
                }
                rule.last = Some(bucket);
                rule.remaining -= 1;
            }

            for rule in &mut within_rules {
                if candidate.time < rule.cutoff {
                    continue;
                }
                let bucket = rule.granularity.bucket(civil);
                let name = rule.granularity.name();
                if rule.last != Some(bucket) {
                    reasons.push(format!("{name} within {}", rule.span));
                } else if is_oldest {
                    reasons.push(format!("oldest {name} within {}", rule.span));
                } else {
                    continue;
                }
                rule.last = Some(bucket);
            }

            rank = rank.saturating_add(1);
        }

        decisions.push(Decision {
            id: candidate.id.to_owned(),
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("bad timestamp {s:?}: {e}"))
    }

    fn dur(s: &str) -> KeepDuration {
        s.parse().unwrap_or_else(|e| panic!("bad duration {s:?}: {e}"))
    }

    /// Central European time with its DST rules, built from a POSIX TZ string
    /// so the tests do not depend on a system tz database.
    fn berlin() -> TimeZone {
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").expect("valid POSIX TZ")
    }

    /// Owned snapshot fixture; `Candidate` borrows from it.
    struct Snap {
        id: String,
        time: Timestamp,
        tags: Vec<String>,
    }

    fn snap(id: &str, time: &str) -> Snap {
        Snap {
            id: id.to_owned(),
            time: ts(time),
            tags: Vec::new(),
        }
    }

    fn tagged(id: &str, time: &str, tags: &[&str]) -> Snap {
        Snap {
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            ..snap(id, time)
        }
    }

    fn candidates(snaps: &[Snap]) -> Vec<Candidate<'_>> {
        snaps
            .iter()
            .map(|s| Candidate {
                id: &s.id,
                time: s.time,
                tags: &s.tags,
            })
            .collect()
    }

    /// A `now` far after every fixture, so nothing counts as "in the future".
    fn late() -> Timestamp {
        ts("2100-01-01T00:00:00Z")
    }

    fn run(policy: &RetentionPolicy, snaps: &[Snap], tz: &TimeZone) -> Vec<Decision> {
        apply(policy, &candidates(snaps), late(), tz)
    }

    fn kept_ids(decisions: &[Decision]) -> Vec<&str> {
        decisions.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect()
    }

    fn reasons_of<'d>(decisions: &'d [Decision], id: &str) -> &'d [String] {
        &decisions
            .iter()
            .find(|d| d.id == id)
            .unwrap_or_else(|| panic!("no decision for {id}"))
            .reasons
    }

    fn check_invariants(decisions: &[Decision]) {
        for d in decisions {
            assert_eq!(d.keep, !d.reasons.is_empty(), "keep/reasons mismatch: {d:?}");
        }
    }

    // ---- KeepDuration parsing and display ----

    #[test]
    fn duration_parses_valid_inputs() {
        let cases: &[(&str, [u32; 5])] = &[
            ("7d", [0, 0, 0, 7, 0]),
            ("30d", [0, 0, 0, 30, 0]),
            ("1y6m", [1, 6, 0, 0, 0]),
            ("12h", [0, 0, 0, 0, 12]),
            ("2w", [0, 0, 2, 0, 0]),
            ("1y2m3w4d5h", [1, 2, 3, 4, 5]),
            ("1y4h", [1, 0, 0, 0, 4]),
            ("0d", [0, 0, 0, 0, 0]),
            ("0h", [0, 0, 0, 0, 0]),
            ("007d", [0, 0, 0, 7, 0]),
            ("19998y", [19_998, 0, 0, 0, 0]),
            ("175307616h", [0, 0, 0, 0, 175_307_616]),
        ];
        for (input, [years, months, weeks, days, hours]) in cases {
            let expected = KeepDuration {
                years: *years,
                months: *months,
                weeks: *weeks,
                days: *days,
                hours: *hours,
            };
            assert_eq!(dur(input), expected, "parsing {input:?}");
        }
    }

    #[test]
    fn duration_rejects_invalid_inputs() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("7", "missing unit"),
            ("7x", "unknown unit"),
            ("7D", "unknown unit"),
            ("7M", "unknown unit"),
            ("7s", "unknown unit"),
            ("d", "missing number"),
            ("1dd", "missing number"),
            ("1d2", "missing unit"),
            ("1d2d", "repeated or out of order"),
            ("1d1y", "repeated or out of order"),
            ("4h1d", "repeated or out of order"),
            ("-1d", "unexpected character"),
            ("+1d", "unexpected character"),
            (" 7d", "unexpected character"),
            ("7d ", "unexpected character"),
            ("7 d", "unknown unit"),
            ("1.5d", "unknown unit"),
            ("١d", "unexpected character"),
            ("4294967296d", "too large"),
            ("99999999999999999999h", "too large"),
            ("19999y", "supported range"),
            ("4294967295y", "supported range"),
            ("4294967295h", "supported range"),
        ];
        for (input, fragment) in cases {
            match input.parse::<KeepDuration>() {
                Ok(d) => panic!("{input:?} parsed as {d:?}, expected an error"),
                Err(RetentionError::BadDuration { input: got, reason }) => {
                    assert_eq!(got, *input, "error must echo the input");
                    assert!(
                        reason.contains(fragment),
                        "{input:?}: reason {reason:?} lacks {fragment:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn duration_error_message_names_input() {
        let err = "7x".parse::<KeepDuration>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"7x\""), "{msg}");
        assert!(msg.contains("unknown unit"), "{msg}");
    }

    #[test]
    fn duration_display_is_canonical_and_round_trips() {
        let cases: &[(&str, &str)] = &[
            ("7d", "7d"),
            ("30d", "30d"),
            ("1y6m", "1y6m"),
            ("12h", "12h"),
            ("2w", "2w"),
            ("1y2m3w4d5h", "1y2m3w4d5h"),
            ("0d", "0d"),
            ("0y0m0w0d0h", "0d"),
            ("1y0m7d", "1y7d"),
            ("007d", "7d"),
            ("19998y", "19998y"),
        ];
        for (input, canonical) in cases {
            let parsed = dur(input);
            let shown = parsed.to_string();
            assert_eq!(shown, *canonical, "display of {input:?}");
            assert_eq!(dur(&shown), parsed, "round trip of {input:?}");
        }
    }

    #[test]
    fn duration_is_zero() {
        assert!(dur("0d").is_zero());
        assert!(KeepDuration::default().is_zero());
        assert!(!dur("1h").is_zero());
    }

    #[test]
    fn duration_to_span_reports_out_of_range_fields() {
        let too_big = KeepDuration {
            years: u32::MAX,
            ..KeepDuration::default()
        };
        assert!(matches!(too_big.to_span(), Err(RetentionError::BadDuration { .. })));
        let span = dur("1y2m3w4d5h").to_span().expect("representable");
        assert_eq!((span.get_years(), span.get_months(), span.get_weeks()), (1, 2, 3));
        assert_eq!((span.get_days(), span.get_hours()), (4, 5));
    }

    #[test]
    fn duration_serializes_as_string() {
        let d = dur("1y6m");
        assert_eq!(serde_json::to_string(&d).expect("serialize"), "\"1y6m\"");
        let back: KeepDuration = serde_json::from_str("\"1y6m\"").expect("deserialize");
        assert_eq!(back, d);
        let err = serde_json::from_str::<KeepDuration>("\"7x\"").unwrap_err();
        assert!(err.to_string().contains("unknown unit"), "{err}");
        assert!(serde_json::from_str::<KeepDuration>("7").is_err());
    }

    // ---- RetentionPolicy basics ----

    #[test]
    fn plan_default_values() {
        let p = RetentionPolicy::plan_default();
        assert_eq!(p.keep_within_hourly, Some(dur("7d")));
        assert_eq!(p.keep_within_daily, Some(dur("30d")));
        assert_eq!(
            RetentionPolicy {
                keep_within_hourly: None,
                keep_within_daily: None,
                ..p.clone()
            },
            RetentionPolicy::default()
        );
        assert!(!p.is_empty());
    }

    #[test]
    fn is_empty_table() {
        let zero = Some(dur("0d"));
        let cases: Vec<(&str, RetentionPolicy, bool)> = vec![
            ("default", RetentionPolicy::default(), true),
            (
                "zero counts and spans",
                RetentionPolicy {
                    keep_last: Some(0),
                    keep_hourly: Some(0),
                    keep_daily: Some(0),
                    keep_weekly: Some(0),
                    keep_monthly: Some(0),
                    keep_yearly: Some(0),
                    keep_within: zero,
                    keep_within_hourly: zero,
                    keep_within_daily: zero,
                    keep_within_weekly: zero,
                    keep_within_monthly: zero,
                    keep_within_yearly: zero,
                    keep_tags: Vec::new(),
                },
                true,
            ),
            ("plan default", RetentionPolicy::plan_default(), false),
            (
                "keep_last",
                RetentionPolicy {
                    keep_last: Some(1),
                    ..RetentionPolicy::default()
                },
                false,
            ),
            (
                "keep_hourly",
                RetentionPolicy {
                    keep_hourly: Some(1),
                    ..RetentionPolicy::default()
                },
                false,
            ),
            (
                "keep_daily",
                RetentionPolicy {
                    keep_daily: Some(1),
                    ..RetentionPolicy::default()
                },
                false,
            ),
            (
                "keep_weekly",
                RetentionPolicy {
                    keep_weekly: Some(1),
                    ..RetentionPolicy::default()
                },
                false,
            ),
            (
                "keep_monthly",
                RetentionPolicy {
                    keep_monthly: Some(1),
                    ..RetentionPolicy::default()
                },
                false,
            ),
            (
                "keep_yearly",
                RetentionPolicy {
                    keep_yearly: Some(1),
                    ..RetentionPolicy::default()
                },
                false,
            ),
            (
                "keep_within",
                RetentionPolicy {
                    keep_within: Some(dur("1h")),
                    ..RetentionPolicy::default()
                },
                false,
            ),
            (
                "keep_within_weekly",
                RetentionPolicy {
                    keep_within_weekly: Some(dur("1w")),
                    ..RetentionPolicy::default()
                },
                false,
            ),
            (
                "keep_within_monthly",
                RetentionPolicy {
                    keep_within_monthly: Some(dur("1m")),
                    ..RetentionPolicy::default()
                },
                false,
            ),
            (
                "keep_within_yearly",
                RetentionPolicy {
                    keep_within_yearly: Some(dur("1y")),
                    ..RetentionPolicy::default()
                },
                false,
            ),
            (
                "keep_tags",
                RetentionPolicy {
                    keep_tags: vec!["config".into()],
                    ..RetentionPolicy::default()
                },
                false,
            ),
        ];
        for (name, policy, expected) in cases {
            assert_eq!(policy.is_empty(), expected, "{name}");
        }
    }

    #[test]
    fn policy_serde_round_trip_and_strictness() {
        let p = RetentionPolicy {
            keep_last: Some(3),
            keep_daily: Some(7),
            keep_within: Some(dur("1y6m")),
            keep_tags: vec!["config".into()],
            ..RetentionPolicy::plan_default()
        };
        let json = serde_json::to_string(&p).expect("serialize");
        assert!(json.contains("\"keep_within_daily\":\"30d\""), "{json}");
        assert!(!json.contains("keep_hourly"), "absent rules are omitted: {json}");
        let back: RetentionPolicy = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, p);

        let partial: RetentionPolicy = serde_json::from_str(r#"{"keep_daily": 7}"#).expect("partial config");
        assert_eq!(
            partial,
            RetentionPolicy {
                keep_daily: Some(7),
                ..RetentionPolicy::default()
            }
        );

        let typo = serde_json::from_str::<RetentionPolicy>(r#"{"keep_dayly": 7}"#);
        assert!(typo.is_err(), "unknown fields must be rejected");

        let bad = serde_json::from_str::<RetentionPolicy>(r#"{"keep_within": "7"}"#);
        assert!(bad.unwrap_err().to_string().contains("missing unit"));
    }

    // ---- apply ----

    #[test]
    fn no_candidates_no_decisions() {
        let d = apply(&RetentionPolicy::plan_default(), &[], late(), &TimeZone::UTC);
        assert!(d.is_empty());
    }

    #[test]
    fn output_sorted_newest_first_whatever_the_input_order() {
        let snaps = [
            snap("b", "2024-01-02T00:00:00Z"),
            snap("d", "2024-01-04T00:00:00Z"),
            snap("a", "2024-01-01T00:00:00Z"),
            snap("c", "2024-01-03T00:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        let d = run(&policy, &snaps, &TimeZone::UTC);
        let ids: Vec<&str> = d.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d", "c", "b", "a"]);
        assert_eq!(kept_ids(&d), ["d"]);
        check_invariants(&d);
    }

    #[test]
    fn keep_last_table() {
        let snaps = [
            snap("s3", "2024-05-03T10:00:00Z"),
            snap("s1", "2024-05-01T10:00:00Z"),
            snap("s5", "2024-05-05T10:00:00Z"),
            snap("s2", "2024-05-02T10:00:00Z"),
            snap("s4", "2024-05-04T10:00:00Z"),
        ];
        let cases: &[(u32, &[&str])] = &[
            (1, &["s5"]),
            (3, &["s5", "s4", "s3"]),
            (5, &["s5", "s4", "s3", "s2", "s1"]),
            (100, &["s5", "s4", "s3", "s2", "s1"]),
        ];
        for (n, expected) in cases {
            let policy = RetentionPolicy {
                keep_last: Some(*n),
                ..RetentionPolicy::default()
            };
            let d = run(&policy, &snaps, &TimeZone::UTC);
            check_invariants(&d);
            assert_eq!(kept_ids(&d), *expected, "keep_last {n}");
            for id in *expected {
                assert_eq!(reasons_of(&d, id), [format!("last {n}")], "keep_last {n}");
            }
        }
    }

    #[test]
    fn ties_are_broken_by_id() {
        let snaps = [
            snap("b", "2024-05-01T10:00:00Z"),
            snap("a", "2024-05-01T10:00:00Z"),
            snap("c", "2024-05-01T09:00:00Z"),
        ];
        let cases: Vec<(&str, RetentionPolicy, &[&str])> = vec![
            (
                "last",
                RetentionPolicy {
                    keep_last: Some(1),
                    ..RetentionPolicy::default()
                },
                &["a"],
            ),
            (
                "hourly",
                RetentionPolicy {
                    keep_hourly: Some(1),
                    ..RetentionPolicy::default()
                },
                &["a"],
            ),
            (
                "daily",
                RetentionPolicy {
                    keep_daily: Some(1),
                    ..RetentionPolicy::default()
                },
                &["a"],
            ),
        ];
        for (name, policy, expected) in cases {
            let d = run(&policy, &snaps, &TimeZone::UTC);
            let ids: Vec<&str> = d.iter().map(|d| d.id.as_str()).collect();
            assert_eq!(ids, ["a", "b", "c"], "{name}: order");
            assert_eq!(kept_ids(&d), expected, "{name}");
        }
    }

    #[test]
    fn hourly_buckets_utc() {
        let snaps = [
            snap("h10a", "2024-05-01T10:05:00Z"),
            snap("h10b", "2024-05-01T10:30:00Z"),
            snap("h10c", "2024-05-01T10:55:00Z"),
            snap("h11a", "2024-05-01T11:10:00Z"),
            snap("h11b", "2024-05-01T11:59:59Z"),
            snap("h13a", "2024-05-01T13:00:00Z"),
        ];
        let cases: &[(u32, &[&str])] = &[
            (1, &["h13a"]),
            (2, &["h13a", "h11b"]),
            (3, &["h13a", "h11b", "h10c"]),
            // Budget left at the oldest snapshot: it is kept as well.
            (4, &["h13a", "h11b", "h10c", "h10a"]),
        ];
        for (n, expected) in cases {
            let policy = RetentionPolicy {
                keep_hourly: Some(*n),
                ..RetentionPolicy::default()
            };
            let d = run(&policy, &snaps, &TimeZone::UTC);
            check_invariants(&d);
            assert_eq!(kept_ids(&d), *expected, "keep_hourly {n}");
        }
        let policy = RetentionPolicy {
            keep_hourly: Some(4),
            ..RetentionPolicy::default()
        };
        let d = run(&policy, &snaps, &TimeZone::UTC);
        assert_eq!(reasons_of(&d, "h13a"), ["hourly snapshot"]);
        assert_eq!(reasons_of(&d, "h10a"), ["oldest hourly snapshot"]);
    }

    #[test]
    fn daily_buckets_depend_on_time_zone() {
        // 22:30Z and 23:30Z are the same UTC day but different days in
        // Berlin (UTC+1 in early March) and at a fixed +01:00 offset.
        let snaps = [
            snap("late", "2024-03-10T23:30:00Z"),
            snap("evening", "2024-03-10T22:30:00Z"),
            snap("morning", "2024-03-10T08:00:00Z"),
            snap("prev", "2024-03-09T12:00:00Z"),
        ];
        let plus_one = TimeZone::fixed(jiff::tz::offset(1));
        let minus_ten = TimeZone::fixed(jiff::tz::offset(-10));
        let cases: Vec<(&str, TimeZone, u32, &[&str])> = vec![
            ("utc", TimeZone::UTC, 2, &["late", "prev"]),
            ("berlin", berlin(), 2, &["late", "evening"]),
            ("fixed +1", plus_one.clone(), 2, &["late", "evening"]),
            ("berlin", berlin(), 3, &["late", "evening", "prev"]),
            ("fixed +1", plus_one, 3, &["late", "evening", "prev"]),
            // At -10 the 08:00Z snapshot falls on the 9th, with "prev".
            ("fixed -10", minus_ten, 2, &["late", "morning"]),
        ];
        for (name, tz, n, expected) in cases {
            let policy = RetentionPolicy {
                keep_daily: Some(n),
                ..RetentionPolicy::default()
            };
            let d = run(&policy, &snaps, &tz);
            check_invariants(&d);
            assert_eq!(kept_ids(&d), expected, "{name} keep_daily {n}");
        }
    }

    #[test]
    fn hourly_buckets_follow_civil_time_across_dst_fall_back() {
        // 2024-10-27 in Berlin: 02:00-03:00 happens twice. 00:30Z is 02:30
        // CEST and 01:30Z is 02:30 CET: the same civil hour, one bucket.
        let snaps = [
            snap("cet", "2024-10-27T01:30:00Z"),
            snap("cest", "2024-10-27T00:30:00Z"),
            snap("before", "2024-10-26T23:30:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_hourly: Some(2),
            ..RetentionPolicy::default()
        };
        let d = run(&policy, &snaps, &berlin());
        assert_eq!(kept_ids(&d), ["cet", "before"], "berlin");
        let d = run(&policy, &snaps, &TimeZone::UTC);
        assert_eq!(kept_ids(&d), ["cet", "cest"], "utc");
    }

    #[test]
    fn weekly_buckets_use_iso_weeks_across_year_turnover() {
        // ISO weeks: 2025-01-06 (Mon) is 2025-W02; 2025-01-05 (Sun),
        // 2025-01-01 and 2024-12-30 (Mon) are 2025-W01; 2024-12-29 (Sun) and
        // 2024-12-23 (Mon) are 2024-W52; 2024-12-22 (Sun) is 2024-W51.
        let snaps = [
            snap("w02", "2025-01-06T12:00:00Z"),
            snap("w01-sun", "2025-01-05T12:00:00Z"),
            snap("w01-newyear", "2025-01-01T12:00:00Z"),
            snap("w01-mon", "2024-12-30T12:00:00Z"),
            snap("w52-sun", "2024-12-29T12:00:00Z"),
            snap("w52-mon", "2024-12-23T12:00:00Z"),
            snap("w51-sun", "2024-12-22T12:00:00Z"),
        ];
        let cases: &[(u32, &[&str])] = &[
            (1, &["w02"]),
            (2, &["w02", "w01-sun"]),
            (3, &["w02", "w01-sun", "w52-sun"]),
            (4, &["w02", "w01-sun", "w52-sun", "w51-sun"]),
        ];
        for (n, expected) in cases {
            let policy = RetentionPolicy {
                keep_weekly: Some(*n),
                ..RetentionPolicy::default()
            };
            let d = run(&policy, &snaps, &TimeZone::UTC);
            check_invariants(&d);
            assert_eq!(kept_ids(&d), *expected, "keep_weekly {n}");
        }
    }

    #[test]
    fn weekly_bucket_edge_in_non_utc_zone() {
        // Sunday 23:30Z is already Monday 00:30 in Berlin: a new ISO week.
        let snaps = [
            snap("sun-late", "2024-12-29T23:30:00Z"),
            snap("sun-noon", "2024-12-29T12:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_weekly: Some(1),
            ..RetentionPolicy::default()
        };
        // With a budget of 1 the oldest extra never applies.
        assert_eq!(kept_ids(&run(&policy, &snaps, &TimeZone::UTC)), ["sun-late"]);
        let policy = RetentionPolicy {
            keep_weekly: Some(2),
            ..RetentionPolicy::default()
        };
        let d = run(&policy, &snaps, &berlin());
        assert_eq!(reasons_of(&d, "sun-noon"), ["weekly snapshot"], "berlin");
        let d = run(&policy, &snaps, &TimeZone::UTC);
        assert_eq!(reasons_of(&d, "sun-noon"), ["oldest weekly snapshot"], "utc");
    }

    #[test]
    fn monthly_buckets_skip_months_without_snapshots() {
        let snaps = [
            snap("jun30", "2024-06-30T12:00:00Z"),
            snap("jun01", "2024-06-01T12:00:00Z"),
            snap("mar03", "2024-03-03T12:00:00Z"),
            snap("jan20", "2024-01-20T12:00:00Z"),
            snap("jan05", "2024-01-05T12:00:00Z"),
            snap("dec31", "2023-12-31T12:00:00Z"),
        ];
        let cases: &[(u32, &[&str])] = &[
            (1, &["jun30"]),
            (2, &["jun30", "mar03"]),
            (3, &["jun30", "mar03", "jan20"]),
            (4, &["jun30", "mar03", "jan20", "dec31"]),
        ];
        for (n, expected) in cases {
            let policy = RetentionPolicy {
                keep_monthly: Some(*n),
                ..RetentionPolicy::default()
            };
            let d = run(&policy, &snaps, &TimeZone::UTC);
            check_invariants(&d);
            assert_eq!(kept_ids(&d), *expected, "keep_monthly {n}");
        }
    }

    #[test]
    fn yearly_buckets() {
        let snaps = [
            snap("2024b", "2024-11-01T00:00:00Z"),
            snap("2024a", "2024-01-01T00:00:00Z"),
            snap("2021", "2021-06-01T00:00:00Z"),
            snap("2020b", "2020-12-31T23:00:00Z"),
            snap("2020a", "2020-02-01T00:00:00Z"),
        ];
        let cases: Vec<(&str, TimeZone, u32, &[&str])> = vec![
            ("utc", TimeZone::UTC, 1, &["2024b"]),
            ("utc", TimeZone::UTC, 3, &["2024b", "2021", "2020b"]),
            ("utc", TimeZone::UTC, 4, &["2024b", "2021", "2020b", "2020a"]),
            // In Berlin 2020-12-31T23:00Z is already 2021: it shares a bucket
            // with "2021", and the year 2020 is represented by "2020a".
            ("berlin", berlin(), 3, &["2024b", "2021", "2020a"]),
        ];
        for (name, tz, n, expected) in cases {
            let policy = RetentionPolicy {
                keep_yearly: Some(n),
                ..RetentionPolicy::default()
            };
            let d = run(&policy, &snaps, &tz);
            check_invariants(&d);
            assert_eq!(kept_ids(&d), expected, "{name} keep_yearly {n}");
        }
    }

    #[test]
    fn oldest_extra_only_while_budget_remains() {
        let snaps = [
            snap("d3", "2024-05-03T12:00:00Z"),
            snap("d2", "2024-05-02T12:00:00Z"),
            snap("d1-late", "2024-05-01T18:00:00Z"),
            snap("d1-early", "2024-05-01T06:00:00Z"),
        ];
        let cases: &[(u32, &[&str])] = &[
            (2, &["d3", "d2"]),
            (3, &["d3", "d2", "d1-late"]),
            (4, &["d3", "d2", "d1-late", "d1-early"]),
            (10, &["d3", "d2", "d1-late", "d1-early"]),
        ];
        for (n, expected) in cases {
            let policy = RetentionPolicy {
                keep_daily: Some(*n),
                ..RetentionPolicy::default()
            };
            let d = run(&policy, &snaps, &TimeZone::UTC);
            assert_eq!(kept_ids(&d), *expected, "keep_daily {n}");
        }
        let policy = RetentionPolicy {
            keep_daily: Some(10),
            ..RetentionPolicy::default()
        };
        let d = run(&policy, &snaps, &TimeZone::UTC);
        assert_eq!(reasons_of(&d, "d1-early"), ["oldest daily snapshot"]);
    }

    #[test]
    fn keep_within_is_relative_to_newest_snapshot_not_now() {
        // The host stopped backing up a year before `now`.
        let now = ts("2025-06-01T00:00:00Z");
        let snaps = [
            snap("newest", "2024-06-01T00:00:00Z"),
            snap("at-cutoff", "2024-05-25T00:00:00Z"),
            snap("just-before", "2024-05-24T23:59:59Z"),
            snap("old", "2024-01-01T00:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_within: Some(dur("7d")),
            ..RetentionPolicy::default()
        };
        let d = apply(&policy, &candidates(&snaps), now, &TimeZone::UTC);
        check_invariants(&d);
        assert_eq!(kept_ids(&d), ["newest", "at-cutoff"]);
        assert_eq!(reasons_of(&d, "at-cutoff"), ["within 7d"]);
    }

    #[test]
    fn keep_within_table() {
        let cases: Vec<(&str, &str, TimeZone, &str, &str, bool)> = vec![
            // (name, span, tz, newest, candidate, kept)
            (
                "hours",
                "12h",
                TimeZone::UTC,
                "2024-06-01T12:00:00Z",
                "2024-06-01T00:00:00Z",
                true,
            ),
            (
                "hours",
                "12h",
                TimeZone::UTC,
                "2024-06-01T12:00:00Z",
                "2024-05-31T23:59:59Z",
                false,
            ),
            (
                "weeks",
                "2w",
                TimeZone::UTC,
                "2024-06-15T00:00:00Z",
                "2024-06-01T00:00:00Z",
                true,
            ),
            (
                "weeks",
                "2w",
                TimeZone::UTC,
                "2024-06-15T00:00:00Z",
                "2024-05-31T23:59:59Z",
                false,
            ),
            // One month before 31 March is 29 February (clamped; leap year).
            (
                "month clamp",
                "1m",
                TimeZone::UTC,
                "2024-03-31T12:00:00Z",
                "2024-02-29T12:00:00Z",
                true,
            ),
            (
                "month clamp",
                "1m",
                TimeZone::UTC,
                "2024-03-31T12:00:00Z",
                "2024-02-29T11:59:59Z",
                false,
            ),
            (
                "years",
                "1y6m",
                TimeZone::UTC,
                "2024-06-01T00:00:00Z",
                "2022-12-01T00:00:00Z",
                true,
            ),
            (
                "years",
                "1y6m",
                TimeZone::UTC,
                "2024-06-01T00:00:00Z",
                "2022-11-30T23:59:59Z",
                false,
            ),
            // Calendar units first, then hours: 2024-06-01T00:00 - 1d = 05-31
            // 00:00, - 1h = 05-30T23:00.
            (
                "mixed",
                "1d1h",
                TimeZone::UTC,
                "2024-06-01T00:00:00Z",
                "2024-05-30T23:00:00Z",
                true,
            ),
            (
                "mixed",
                "1d1h",
                TimeZone::UTC,
                "2024-06-01T00:00:00Z",
                "2024-05-30T22:59:59Z",
                false,
            ),
            // Berlin springs forward on 2024-03-31, so "1d" back from noon
            // CEST is noon CET the day before: only 23 hours.
            (
                "dst day",
                "1d",
                berlin(),
                "2024-03-31T10:00:00Z",
                "2024-03-30T11:00:00Z",
                true,
            ),
            (
                "dst day",
                "1d",
                berlin(),
                "2024-03-31T10:00:00Z",
                "2024-03-30T10:30:00Z",
                false,
            ),
            (
                "utc day",
                "1d",
                TimeZone::UTC,
                "2024-03-31T10:00:00Z",
                "2024-03-30T10:30:00Z",
                true,
            ),
            // Hours are elapsed time even across DST.
            (
                "dst hours",
                "24h",
                berlin(),
                "2024-03-31T10:00:00Z",
                "2024-03-30T10:00:00Z",
                true,
            ),
            // A window reaching past the representable range keeps all.
            (
                "huge",
                "19998y",
                TimeZone::UTC,
                "2024-06-01T00:00:00Z",
                "-009000-01-01T00:00:00Z",
                true,
            ),
        ];
        for (name, span, tz, newest, candidate, expected) in cases {
            let snaps = [snap("newest", newest), snap("candidate", candidate)];
            let policy = RetentionPolicy {
                keep_within: Some(dur(span)),
                ..RetentionPolicy::default()
            };
            let d = run(&policy, &snaps, &tz);
            check_invariants(&d);
            assert_eq!(
                reasons_of(&d, "candidate") == [format!("within {span}")],
                expected,
                "{name}: {span} from {newest} keeps {candidate}? got {d:?}"
            );
        }
    }

    #[test]
    fn unrepresentable_window_keeps_everything() {
        let snaps = [snap("a", "2024-06-01T00:00:00Z"), snap("b", "1970-01-01T00:00:00Z")];
        let policy = RetentionPolicy {
            keep_within: Some(KeepDuration {
                years: u32::MAX,
                ..KeepDuration::default()
            }),
            keep_within_daily: Some(KeepDuration {
                hours: u32::MAX,
                ..KeepDuration::default()
            }),
            ..RetentionPolicy::default()
        };
        let d = run(&policy, &snaps, &TimeZone::UTC);
        assert_eq!(kept_ids(&d), ["a", "b"]);
    }

    #[test]
    fn within_buckets_keep_newest_per_bucket_inside_window_only() {
        let snaps = [
            snap("d10-b", "2024-05-10T18:00:00Z"),
            snap("d10-a", "2024-05-10T06:00:00Z"),
            snap("d9-b", "2024-05-09T18:00:00Z"),
            snap("d9-a", "2024-05-09T06:00:00Z"),
            snap("d8-b", "2024-05-08T18:00:00Z"),
            snap("d8-a", "2024-05-08T06:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_within_daily: Some(dur("2d")),
            ..RetentionPolicy::default()
        };
        // Cutoff 2024-05-08T18:00Z: d8-b is exactly at it and kept, d8-a is
        // outside and not; the oldest extra does not apply outside.
        let d = run(&policy, &snaps, &TimeZone::UTC);
        check_invariants(&d);
        assert_eq!(kept_ids(&d), ["d10-b", "d9-b", "d8-b"]);
        assert_eq!(reasons_of(&d, "d9-b"), ["daily within 2d"]);
    }

    #[test]
    fn within_buckets_keep_oldest_when_window_covers_everything() {
        let snaps = [
            snap("d2-b", "2024-05-02T18:00:00Z"),
            snap("d2-a", "2024-05-02T06:00:00Z"),
            snap("d1-b", "2024-05-01T18:00:00Z"),
            snap("d1-a", "2024-05-01T06:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_within_daily: Some(dur("30d")),
            ..RetentionPolicy::default()
        };
        let d = run(&policy, &snaps, &TimeZone::UTC);
        assert_eq!(kept_ids(&d), ["d2-b", "d1-b", "d1-a"]);
        assert_eq!(reasons_of(&d, "d1-a"), ["oldest daily within 30d"]);
    }

    #[test]
    fn within_bucket_kinds() {
        let snaps = [
            snap("a", "2024-06-30T12:00:00Z"),
            snap("b", "2024-06-30T11:00:00Z"),
            snap("c", "2024-06-24T11:00:00Z"),
            snap("d", "2024-06-23T11:00:00Z"),
            snap("e", "2024-05-20T11:00:00Z"),
            snap("f", "2023-05-20T11:00:00Z"),
            snap("g", "2022-05-20T11:00:00Z"),
        ];
        type Setter = fn(&mut RetentionPolicy, KeepDuration);
        let cases: &[(&str, Setter, &str, &[&str])] = &[
            ("hourly", |p, d| p.keep_within_hourly = Some(d), "1d", &["a", "b"]),
            ("weekly", |p, d| p.keep_within_weekly = Some(d), "2w", &["a", "d"]),
            ("monthly", |p, d| p.keep_within_monthly = Some(d), "3m", &["a", "e"]),
            ("yearly", |p, d| p.keep_within_yearly = Some(d), "1y6m", &["a", "f"]),
        ];
        for (name, set, span, expected) in cases {
            let mut policy = RetentionPolicy::default();
            set(&mut policy, dur(span));
            let d = run(&policy, &snaps, &TimeZone::UTC);
            check_invariants(&d);
            assert_eq!(kept_ids(&d), *expected, "{name} within {span}");
            assert_eq!(reasons_of(&d, "a"), [format!("{name} within {span}")]);
        }
    }

    #[test]
    fn plan_default_over_sixty_days_of_four_daily_backups() {
        let start = ts("2024-01-01T00:00:00Z");
        let mut snaps = Vec::new();
        for day in 0..60_i64 {
            for slot in 0..4_i64 {
                let time = start
                    .checked_add(jiff::SignedDuration::from_hours(day * 24 + slot * 6))
                    .expect("in range");
                snaps.push(Snap {
                    id: format!("d{day:02}-s{slot}"),
                    time,
                    tags: Vec::new(),
                });
            }
        }
        // Newest: day 59 at 18:00 (2024-02-29T18:00Z). `now` is one hour on.
        let newest = ts("2024-02-29T18:00:00Z");
        let now = ts("2024-02-29T19:00:00Z");
        let cutoff_7d = ts("2024-02-22T18:00:00Z");
        let cutoff_30d = ts("2024-01-30T18:00:00Z");
        let d = apply(
            &RetentionPolicy::plan_default(),
            &candidates(&snaps),
            now,
            &TimeZone::UTC,
        );
        check_invariants(&d);
        assert_eq!(d.len(), 240);
        assert_eq!(d[0].id, "d59-s3");
        assert_eq!(snaps.iter().map(|s| s.time).max(), Some(newest));

        for s in &snaps {
            let decision = d.iter().find(|d| d.id == s.id).expect("decided");
            let expected = if s.time >= cutoff_7d {
                true // everything within the last 7 days
            } else if s.time >= cutoff_30d {
                s.id.ends_with("-s3") // one per day: the day's newest
            } else {
                false
            };
            assert_eq!(decision.keep, expected, "{decision:?}");
        }
        // 1 (day 52 18:00) + 7 * 4 in the hourly window, plus one a day for
        // days 29..=51 (day 29's 18:00 snapshot sits exactly at the cutoff).
        assert_eq!(kept_ids(&d).len(), 29 + 23);
        assert_eq!(reasons_of(&d, "d29-s3"), ["daily within 30d"]);
        assert!(reasons_of(&d, "d29-s2").is_empty());
        assert_eq!(reasons_of(&d, "d55-s3"), ["hourly within 7d", "daily within 30d"]);
        assert_eq!(reasons_of(&d, "d55-s1"), ["hourly within 7d"]);
        assert!(reasons_of(&d, "d00-s0").is_empty(), "oldest is outside");
    }

    #[test]
    fn keep_tags() {
        let snaps = [
            tagged("t-new", "2024-05-05T00:00:00Z", &[]),
            tagged("t-config", "2024-05-04T00:00:00Z", &["config"]),
            tagged("t-other", "2024-05-03T00:00:00Z", &["other"]),
            tagged("t-both", "2024-05-02T00:00:00Z", &["manual", "config"]),
            tagged("t-none", "2024-05-01T00:00:00Z", &[]),
        ];
        let policy = RetentionPolicy {
            keep_last: Some(1),
            keep_tags: vec!["config".into(), "manual".into()],
            ..RetentionPolicy::default()
        };
        let d = run(&policy, &snaps, &TimeZone::UTC);
        check_invariants(&d);
        assert_eq!(kept_ids(&d), ["t-new", "t-config", "t-both"]);
        assert_eq!(reasons_of(&d, "t-config"), ["tag config"]);
        assert_eq!(reasons_of(&d, "t-both"), ["tag config", "tag manual"]);
        assert_eq!(reasons_of(&d, "t-new"), ["last 1"]);

        // Tags alone are a valid policy: untagged snapshots may go.
        let only_tags = RetentionPolicy {
            keep_tags: vec!["other".into()],
            ..RetentionPolicy::default()
        };
        let d = run(&only_tags, &snaps, &TimeZone::UTC);
        assert_eq!(kept_ids(&d), ["t-other"]);
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let snaps = [
            snap("a", "2024-05-02T00:00:00Z"),
            snap("b", "2024-05-01T00:00:00Z"),
            snap("future", "2200-01-01T00:00:00Z"),
        ];
        let zero = RetentionPolicy {
            keep_last: Some(0),
            keep_within: Some(dur("0d")),
            ..RetentionPolicy::default()
        };
        for policy in [RetentionPolicy::default(), zero] {
            assert!(policy.is_empty());
            let d = run(&policy, &snaps, &TimeZone::UTC);
            check_invariants(&d);
            assert_eq!(kept_ids(&d), ["future", "a", "b"]);
            assert_eq!(reasons_of(&d, "a"), ["no policy"]);
            assert_eq!(reasons_of(&d, "future"), ["in the future"]);
        }
    }

    #[test]
    fn future_snapshots_are_kept_and_do_not_shift_rules() {
        let now = ts("2024-06-01T12:00:00Z");
        let snaps = [
            tagged("future", "2099-01-01T00:00:00Z", &["config"]),
            snap("at-now", "2024-06-01T12:00:00Z"),
            snap("recent", "2024-06-01T06:00:00Z"),
            snap("week-ago", "2024-05-25T12:00:00Z"),
            snap("old", "2024-05-01T00:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_last: Some(1),
            keep_within: Some(dur("7d")),
            keep_tags: vec!["config".into()],
            ..RetentionPolicy::default()
        };
        let d = apply(&policy, &candidates(&snaps), now, &TimeZone::UTC);
        check_invariants(&d);
        assert_eq!(kept_ids(&d), ["future", "at-now", "recent", "week-ago"]);
        assert_eq!(reasons_of(&d, "future"), ["in the future", "tag config"]);
        // The future snapshot neither used up keep_last nor anchored the window.
        assert_eq!(reasons_of(&d, "at-now"), ["within 7d", "last 1"]);
        assert_eq!(reasons_of(&d, "week-ago"), ["within 7d"]);
    }

    #[test]
    fn all_snapshots_in_the_future() {
        let now = ts("2024-01-01T00:00:00Z");
        let snaps = [snap("a", "2024-01-02T00:00:00Z"), snap("b", "2024-01-01T00:00:01Z")];
        let d = apply(
            &RetentionPolicy::plan_default(),
            &candidates(&snaps),
            now,
            &TimeZone::UTC,
        );
        assert_eq!(kept_ids(&d), ["a", "b"]);
        assert!(d.iter().all(|d| d.reasons == ["in the future"]));
    }

    #[test]
    fn reasons_accumulate_across_rules() {
        let snaps = [
            tagged("a", "2024-06-30T12:00:00Z", &["config"]),
            snap("b", "2024-06-29T12:00:00Z"),
            snap("c", "2024-06-01T12:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_last: Some(1),
            keep_hourly: Some(1),
            keep_daily: Some(2),
            keep_weekly: Some(1),
            keep_monthly: Some(1),
            keep_yearly: Some(1),
            keep_within: Some(dur("1d")),
            keep_within_hourly: Some(dur("1h")),
            keep_within_daily: Some(dur("1w")),
            keep_within_weekly: Some(dur("1w")),
            keep_within_monthly: Some(dur("1m")),
            keep_within_yearly: Some(dur("1y")),
            keep_tags: vec!["config".into()],
        };
        let d = run(&policy, &snaps, &TimeZone::UTC);
        check_invariants(&d);
        assert_eq!(
            reasons_of(&d, "a"),
            [
                "tag config",
                "within 1d",
                "last 1",
                "hourly snapshot",
                "daily snapshot",
                "weekly snapshot",
                "monthly snapshot",
                "yearly snapshot",
                "hourly within 1h",
                "daily within 1w",
                "weekly within 1w",
                "monthly within 1m",
                "yearly within 1y",
            ]
        );
        assert_eq!(reasons_of(&d, "b"), ["within 1d", "daily snapshot", "daily within 1w"]);
        // c: weekly/monthly/yearly budgets are spent; it is the oldest, in
        // the same month/year as "a", and inside the 1m/1y windows.
        assert_eq!(
            reasons_of(&d, "c"),
            ["oldest monthly within 1m", "oldest yearly within 1y"]
        );
    }

    #[test]
    fn decision_serializes() {
        let d = Decision {
            id: "abc".into(),
            keep: true,
            reasons: vec!["last 1".into()],
        };
        assert_eq!(
            serde_json::to_string(&d).expect("serialize"),
            r#"{"id":"abc","keep":true,"reasons":["last 1"]}"#
        );
    }

    #[test]
    fn longest_time_span_of_the_plan_is_thirty_days() {
        let d = RetentionPolicy::plan_default().longest_time_span().unwrap();
        assert_eq!(d.as_secs(), 30 * 86_400);
        let p = RetentionPolicy {
            keep_last: Some(3),
            keep_monthly: Some(2),
            ..RetentionPolicy::default()
        };
        assert_eq!(p.longest_time_span().unwrap().as_secs(), 62 * 86_400);
        let only_last = RetentionPolicy {
            keep_last: Some(3),
            ..RetentionPolicy::default()
        };
        assert_eq!(only_last.longest_time_span(), None);
    }
}

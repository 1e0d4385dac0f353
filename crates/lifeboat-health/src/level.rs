//! The plan's three alert levels.

use serde::{Deserialize, Serialize};

/// How bad a failing check is. Ordered: `High < Urgent < Critical`, so the worst of a run is
/// the maximum. The plan's monitoring section defines exactly these three; a passing check has
/// no level at all (an `Option<Level>` of `None`), which keeps "healthy" out of the alert scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Act within the working day: a certificate expiring within 7 days, backups failing or
    /// older than the RPO.
    High,
    /// Act now: error rate over 10 %, responses over 5 s, disk under 5 % free, memory over 95 %.
    Urgent,
    /// The service is down: unreachable, database unavailable, certificate expired.
    Critical,
}

impl Level {
    /// Lower-case name, as in the config and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::High => "high",
            Level::Urgent => "urgent",
            Level::Critical => "critical",
        }
    }

    /// Parses `high`, `urgent` or `critical`.
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "high" => Some(Level::High),
            "urgent" => Some(Level::Urgent),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_is_max() {
        assert_eq!(
            [Level::High, Level::Critical, Level::Urgent].into_iter().max(),
            Some(Level::Critical)
        );
        assert!(Level::High < Level::Urgent);
        for l in [Level::High, Level::Urgent, Level::Critical] {
            assert_eq!(Level::parse(l.as_str()), Some(l));
        }
        assert_eq!(Level::parse("warning"), None);
    }
}

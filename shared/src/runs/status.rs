//! Run states and the legal transitions between them, as one table. Every state change in
//! the code is a guarded UPDATE whose `WHERE status = ANY(...)` comes from [`RunStatus::sources`],
//! so an illegal change matches no row and is refused, never silently applied.

use serde::{Deserialize, Serialize};

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted, waiting for a worker (or, if `held`, for its agent to resume).
    Queued,
    /// A worker is executing it.
    Running,
    /// Stopped until a person approves or rejects a tool call.
    WaitingApproval,
    /// Finished well.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Ran past its agent's max duration.
    TimedOut,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::WaitingApproval,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::TimedOut,
    ];

    /// The string form shared by SQL and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::WaitingApproval => "waiting_approval",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::TimedOut => "timed_out",
        }
    }

    /// Whether the run has ended for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled | RunStatus::TimedOut
        )
    }

    /// The states a run may move to this one from: the transition table.
    pub fn sources(self) -> &'static [RunStatus] {
        use RunStatus::*;
        match self {
            // A decided approval puts the run back in the queue.
            Queued => &[WaitingApproval],
            // A worker starts a queued run, or takes over one whose worker died.
            Running => &[Queued, Running],
            WaitingApproval => &[Running],
            Succeeded => &[Running],
            // Failing from waiting_approval: a rejected or expired approval under policy `fail`.
            Failed => &[Running, WaitingApproval],
            Cancelled => &[Queued, Running, WaitingApproval],
            TimedOut => &[Running],
        }
    }

    /// Whether `self → to` is legal.
    pub fn can_become(self, to: RunStatus) -> bool {
        to.sources().contains(&self)
    }

    /// [`RunStatus::sources`] as strings, to bind into `status = ANY($n)`.
    pub fn source_strs(self) -> Vec<&'static str> {
        self.sources().iter().map(|s| s.as_str()).collect()
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown status '{s}'; use one of queued, running, waiting_approval, succeeded, failed, cancelled, timed_out")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::RunStatus::{self, *};

    /// One row per legal transition; everything not listed is illegal.
    const LEGAL: &[(RunStatus, RunStatus)] = &[
        (Queued, Running),
        (Queued, Cancelled),
        (Running, Running),
        (Running, WaitingApproval),
        (Running, Succeeded),
        (Running, Failed),
        (Running, Cancelled),
        (Running, TimedOut),
        (WaitingApproval, Queued),
        (WaitingApproval, Failed),
        (WaitingApproval, Cancelled),
    ];

    #[test]
    fn the_table_allows_exactly_the_legal_transitions() {
        for from in RunStatus::ALL {
            for to in RunStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    LEGAL.contains(&(from, to)),
                    "{from} → {to}"
                );
            }
        }
    }

    #[test]
    fn terminal_states_go_nowhere() {
        for from in RunStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(
                RunStatus::ALL.iter().all(|to| !from.can_become(*to)),
                "{from}"
            );
        }
    }

    #[test]
    fn strings_round_trip() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}

//! Run states and the legal transitions between them, as one table. Every state change in
//! the code is a guarded UPDATE whose `WHERE status = ANY(...)` comes from [`RunStatus::sources`],
//! so an illegal change matches no row and is refused, never silently applied.

crate::text_enum! {
    /// Where a run is in its life.
    pub enum RunStatus {
        /// Accepted, waiting for a worker (or, if `held`, for its agent to resume).
        Queued = "queued",
        /// A worker is executing it.
        Running = "running",
        /// Stopped until a person approves or rejects a tool call.
        WaitingApproval = "waiting_approval",
        /// Finished well.
        Succeeded = "succeeded",
        /// Finished with an error.
        Failed = "failed",
        /// Stopped on request.
        Cancelled = "cancelled",
        /// Ran past its agent's max duration.
        TimedOut = "timed_out",
    }
}

impl RunStatus {
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

    /// The `status = ANY($n)` guard of a transition to `self` that only some of its legal
    /// sources may take (e.g. a cancel that applies at once only to runs not executing).
    /// Asking for an illegal source is a bug: it panics in tests and is dropped otherwise.
    pub fn guard(self, from: &[RunStatus]) -> Vec<&'static str> {
        debug_assert!(
            from.iter().all(|f| f.can_become(self)),
            "{from:?} → {self} is not in the transition table"
        );
        from.iter()
            .filter(|f| f.can_become(self))
            .map(|f| f.as_str())
            .collect()
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
        for &from in RunStatus::ALL {
            for &to in RunStatus::ALL {
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
        for &from in RunStatus::ALL.iter().filter(|s| s.is_terminal()) {
            assert!(
                RunStatus::ALL.iter().all(|to| !from.can_become(*to)),
                "{from}"
            );
        }
    }

    #[test]
    fn strings_round_trip() {
        for &s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}

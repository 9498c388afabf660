//! The `scripted` runtime: the config's steps, in order. Deterministic, so a run resumed on
//! another worker continues at the next step index that was persisted.

use agentq_shared::agents::config::ScriptedConfig;

use super::{action_of, Action, Progress, Runtime, RuntimeError};

pub(crate) struct Scripted {
    config: ScriptedConfig,
}

impl Scripted {
    pub(crate) fn new(config: ScriptedConfig) -> Self {
        Self { config }
    }
}

impl Runtime for Scripted {
    async fn next(&mut self, p: &Progress<'_>) -> Result<Action, RuntimeError> {
        Ok(match self.config.steps.get(p.position) {
            Some(step) => action_of(step, p, true),
            None => Action::Done { output: None },
        })
    }
}

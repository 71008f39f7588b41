//! Warnings about a background step that fails on every turn of its loop.
//!
//! The delivery worker claims work for each provider every `poll_interval` and the notifier
//! does so on its own loop, so while the ledger is unreachable each would log the same
//! warning several times a second — thousands of lines in an outage of minutes, burying
//! the one line that says when it began. A [`FailureLog`] logs the first failure at once,
//! then at most one line per [`FailureLog::every`] carrying how many failures it did not
//! log, and one line when the step works again, so the log still says when the outage began,
//! that it lasted, and when it ended. Each context (a provider) is followed on its own: one
//! provider failing while another works must not log "failed" and "works again" in turn.

use std::{
    fmt::Display,
    sync::Mutex,
    time::{Duration, Instant},
};

/// At most one warning per this long while a step keeps failing.
pub const QUIET_FOR: Duration = Duration::from_secs(30);

/// The failures of one background step (see the module's documentation), per context.
/// Contexts are the gateway's own names (its providers), never a client's input, so the map
/// stays as small as they are.
#[derive(Debug)]
pub struct FailureLog {
    step: &'static str,
    every: Duration,
    state: Mutex<std::collections::HashMap<String, Failing>>,
}

/// A context that is failing: it has an entry from its first failure to its next success.
#[derive(Debug, Default)]
struct Failing {
    /// Failures in a row so far.
    in_a_row: u64,
    /// Failures since the last line logged.
    unlogged: u64,
    last_logged: Option<Instant>,
}

/// What a failure or a success should log, decided under the lock and logged outside it.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Nothing,
    Failed { unlogged: u64 },
    Recovered { failures: u64 },
}

impl FailureLog {
    /// `step` names what failed, as the warning's message ("claiming due deliveries").
    pub fn new(step: &'static str) -> FailureLog {
        FailureLog::every(step, QUIET_FOR)
    }

    /// As [`FailureLog::new`], at most one warning per `every`.
    pub fn every(step: &'static str, every: Duration) -> FailureLog {
        FailureLog {
            step,
            every,
            state: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The step failed with `error`; `context` names what it failed for (a provider).
    pub fn failed(&self, context: &str, error: &dyn Display) {
        if let Line::Failed { unlogged } = self.note_failure(context, Instant::now()) {
            tracing::warn!(
                context,
                error = %error,
                not_logged_since_last = unlogged,
                "{} failed",
                self.step
            );
        }
    }

    /// The step worked for `context`: after failures, one line says it recovered.
    pub fn succeeded(&self, context: &str) {
        if let Line::Recovered { failures } = self.note_success(context) {
            tracing::info!(context, failures, "{} works again", self.step);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Failing>> {
        // The state is a few counters: one left half-updated by a panic is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note_failure(&self, context: &str, now: Instant) -> Line {
        let mut all = self.lock();
        let state = all.entry(context.to_owned()).or_default();
        state.in_a_row += 1;
        // A first failure has logged nothing yet, so it is due at once.
        let due = state
            .last_logged
            .is_none_or(|at| now.saturating_duration_since(at) >= self.every);
        if due {
            let unlogged = state.unlogged;
            state.unlogged = 0;
            state.last_logged = Some(now);
            Line::Failed { unlogged }
        } else {
            state.unlogged += 1;
            Line::Nothing
        }
    }

    fn note_success(&self, context: &str) -> Line {
        // Only a context that failed has an entry; the usual success costs a lookup.
        match self.lock().remove(context) {
            Some(state) => Line::Recovered {
                failures: state.in_a_row,
            },
            None => Line::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_logs_its_start_then_once_per_period_then_its_end() {
        let log = FailureLog::every("claiming", Duration::from_secs(30));
        let start = Instant::now();
        assert_eq!(
            log.note_failure("taler", start),
            Line::Failed { unlogged: 0 }
        );
        // Two polls a second for 29 s: nothing more.
        for tick in 1..58 {
            let at = start + Duration::from_millis(500 * tick);
            assert_eq!(log.note_failure("taler", at), Line::Nothing, "tick {tick}");
        }
        assert_eq!(
            log.note_failure("taler", start + Duration::from_secs(30)),
            Line::Failed { unlogged: 57 }
        );
        assert_eq!(log.note_success("taler"), Line::Recovered { failures: 59 });
        assert_eq!(log.note_success("taler"), Line::Nothing);
        // The next outage is logged at its start again, however soon it comes.
        assert_eq!(
            log.note_failure("taler", start + Duration::from_secs(31)),
            Line::Failed { unlogged: 0 }
        );
    }

    #[test]
    fn one_provider_failing_beside_one_that_works_logs_once() {
        let log = FailureLog::every("claiming", Duration::from_secs(30));
        let start = Instant::now();
        assert_eq!(
            log.note_failure("sila", start),
            Line::Failed { unlogged: 0 }
        );
        for tick in 1..10 {
            assert_eq!(log.note_success("taler"), Line::Nothing);
            let at = start + Duration::from_millis(500 * tick);
            assert_eq!(log.note_failure("sila", at), Line::Nothing);
        }
        // Another provider's outage starting meanwhile is logged at once.
        assert_eq!(
            log.note_failure("taler", start + Duration::from_secs(5)),
            Line::Failed { unlogged: 0 }
        );
    }
}

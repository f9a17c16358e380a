//! The circuit breaker in front of an LLM server.
//!
//! A pure state machine: every method takes the current instant, nothing
//! here reads a clock or sleeps, so tests drive it with made-up instants.
//!
//! # States and invariants
//! - **Closed**: every call is admitted. Each outcome enters a window of the
//!   last `window` outcomes. The breaker trips when the window holds at least
//!   `min-calls` outcomes and the share of failures in it is above
//!   `error-rate`, or when `slow-calls` calls in a row took longer than
//!   `slow-call` (a slow success counts; a fast failure ends the run).
//! - **Open** until `opened + cooldown`: every call is refused with the time
//!   left. Tripping clears the window and the slow run.
//! - **Half-open** once the cooldown has passed: exactly one probe is
//!   admitted at a time and every other call is refused (with a whole
//!   cooldown as the hint, since the probe's outcome is not known yet). A
//!   probe that succeeds within `slow-call` closes the breaker with an empty
//!   window; a probe that fails or is slow opens it for another cooldown. A
//!   probe dropped before its outcome (its caller was cancelled) frees the
//!   slot for the next caller.
//! - An outcome of a call admitted while closed that arrives after the trip
//!   is ignored: it tells nothing about the server since.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// When the circuit breaker opens and for how long (part of
/// [`OpenAiConfig`](crate::OpenAiConfig)).
///
/// In files the keys are kebab-case and durations are milliseconds
/// (`slow-call-ms`, `cooldown-ms`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct BreakerConfig {
    /// How many recent calls the error rate is computed over. Default 20;
    /// at least 1.
    pub window: usize,
    /// The fewest calls in the window before the error rate may trip the
    /// breaker. Default 5; 1 to `window`.
    pub min_calls: usize,
    /// The share of failed calls in the window above which the breaker
    /// opens. Default 0.5; 0.0 to 1.0 (1.0 never trips on errors).
    pub error_rate: f64,
    /// A call slower than this is slow. Default 30 s.
    #[serde(rename = "slow-call-ms", with = "crate::serde_ms")]
    pub slow_call: Duration,
    /// How many slow calls in a row open the breaker. Default 5; 0 never
    /// trips on latency.
    pub slow_calls: u32,
    /// How long the breaker stays open before it lets a probe through.
    /// Default 30 s.
    #[serde(rename = "cooldown-ms", with = "crate::serde_ms")]
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            window: 20,
            min_calls: 5,
            error_rate: 0.5,
            slow_call: Duration::from_secs(30),
            slow_calls: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// What the circuit breaker lets through now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Every call goes through.
    Closed,
    /// Calls fail fast with [`LlmError::CircuitOpen`](crate::LlmError).
    Open {
        /// Time left until a probe is allowed.
        retry_in: Duration,
    },
    /// The cooldown has passed: the next call is a probe whose outcome
    /// closes or re-opens the breaker.
    HalfOpen,
}

/// Why a call was let through: an ordinary call while closed or the probe
/// while half-open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Call,
    Probe,
}

/// How an admitted call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The call failed in a way that counts against the server.
    pub(crate) failed: bool,
    /// How long it took.
    pub(crate) latency: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The state machine; the provider keeps it behind a mutex held only for
/// the duration of one method call.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
    /// Outcomes of the last calls while closed: `true` for a failure.
    window: VecDeque<bool>,
    failures: usize,
    slow_run: u32,
    opened: u64,
}

impl CircuitBreaker {
    pub(crate) fn new(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            window: VecDeque::with_capacity(config.window.max(1)),
            config,
            state: State::Closed,
            failures: 0,
            slow_run: 0,
            opened: 0,
        }
    }

    /// Admits a call, or returns how long until a probe may be tried.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> Result<Admission, Duration> {
        self.advance(now);
        match self.state {
            State::Closed => Ok(Admission::Call),
            State::Open { until } => Err(until.saturating_duration_since(now)),
            State::HalfOpen { probing: true } => Err(self.config.cooldown),
            State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Ok(Admission::Probe)
            }
        }
    }

    /// Records how an admitted call ended.
    pub(crate) fn record(&mut self, now: Instant, admission: Admission, outcome: Outcome) {
        let slow = outcome.latency > self.config.slow_call;
        match (admission, self.state) {
            (Admission::Call, State::Closed) => self.record_closed(now, outcome.failed, slow),
            (Admission::Probe, State::HalfOpen { probing: true }) => {
                if outcome.failed || slow {
                    self.trip(now);
                } else {
                    self.state = State::Closed;
                }
            }
            // Stale: admitted before a trip (or a probe after a forced trip).
            _ => {}
        }
    }

    /// Forgets an admitted call whose outcome will never come.
    pub(crate) fn abandon(&mut self, admission: Admission) {
        if admission == Admission::Probe && self.state == (State::HalfOpen { probing: true }) {
            self.state = State::HalfOpen { probing: false };
        }
    }

    /// Opens the breaker for a cooldown whatever its state.
    pub(crate) fn trip(&mut self, now: Instant) {
        self.state = State::Open {
            until: now + self.config.cooldown,
        };
        self.window.clear();
        self.failures = 0;
        self.slow_run = 0;
        self.opened += 1;
    }

    pub(crate) fn state(&mut self, now: Instant) -> BreakerState {
        self.advance(now);
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } => BreakerState::Open {
                retry_in: until.saturating_duration_since(now),
            },
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How many times the breaker has opened.
    pub(crate) fn opened(&self) -> u64 {
        self.opened
    }

    fn advance(&mut self, now: Instant) {
        if let State::Open { until } = self.state {
            if now >= until {
                self.state = State::HalfOpen { probing: false };
            }
        }
    }

    fn record_closed(&mut self, now: Instant, failed: bool, slow: bool) {
        self.window.push_back(failed);
        self.failures += usize::from(failed);
        if self.window.len() > self.config.window.max(1) {
            let oldest_failed = self.window.pop_front() == Some(true);
            self.failures -= usize::from(oldest_failed);
        }
        self.slow_run = if slow { self.slow_run + 1 } else { 0 };

        let calls = self.window.len();
        let rate = self.failures as f64 / calls as f64;
        let too_many_errors = calls >= self.config.min_calls && rate > self.config.error_rate;
        let too_slow = self.config.slow_calls > 0 && self.slow_run >= self.config.slow_calls;
        if too_many_errors || too_slow {
            self.trip(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn config() -> BreakerConfig {
        BreakerConfig {
            window: 4,
            min_calls: 3,
            error_rate: 0.5,
            slow_call: 100 * MS,
            slow_calls: 3,
            cooldown: 1000 * MS,
        }
    }

    fn ok(latency_ms: u64) -> Outcome {
        Outcome {
            failed: false,
            latency: Duration::from_millis(latency_ms),
        }
    }

    fn err() -> Outcome {
        Outcome {
            failed: true,
            latency: MS,
        }
    }

    /// Admits one ordinary call at `now` and records `outcome`.
    fn call(b: &mut CircuitBreaker, now: Instant, outcome: Outcome) {
        assert_eq!(b.try_acquire(now), Ok(Admission::Call));
        b.record(now, Admission::Call, outcome);
    }

    #[test]
    fn breaker_opens_when_error_rate_exceeds_threshold() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        call(&mut b, t0, err());
        call(&mut b, t0, err());
        // Two calls are below min-calls: still closed despite 100% errors.
        assert_eq!(b.state(t0), BreakerState::Closed);
        call(&mut b, t0, ok(1));
        // 2 of 3 failed: 0.67 > 0.5.
        assert_eq!(
            b.state(t0),
            BreakerState::Open {
                retry_in: 1000 * MS
            }
        );
        assert_eq!(b.try_acquire(t0 + 400 * MS), Err(600 * MS));
        assert_eq!(b.opened(), 1);
    }

    #[test]
    fn breaker_error_rate_at_threshold_does_not_trip() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        for outcome in [ok(1), err(), ok(1), err()] {
            call(&mut b, t0, outcome);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn breaker_window_slides_old_failures_out() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        call(&mut b, t0, err());
        for _ in 0..4 {
            call(&mut b, t0, ok(1));
        }
        // The window (4) now holds only successes; one failure is 1 of 4.
        call(&mut b, t0, err());
        call(&mut b, t0, ok(1));
        assert_eq!(b.state(t0), BreakerState::Closed);
        // Two failures of the last four: at the threshold, not above.
        call(&mut b, t0, err());
        assert_eq!(b.state(t0), BreakerState::Closed);
        call(&mut b, t0, err());
        assert!(matches!(b.state(t0), BreakerState::Open { .. }));
    }

    #[test]
    fn breaker_opens_after_a_run_of_slow_calls() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        call(&mut b, t0, ok(150));
        call(&mut b, t0, ok(150));
        call(&mut b, t0, ok(50)); // breaks the run
        call(&mut b, t0, ok(150));
        call(&mut b, t0, ok(150));
        assert_eq!(b.state(t0), BreakerState::Closed);
        call(&mut b, t0, ok(150));
        assert!(matches!(b.state(t0), BreakerState::Open { .. }));
    }

    #[test]
    fn breaker_latency_trip_disabled_with_zero_slow_calls() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            slow_calls: 0,
            ..config()
        });
        for _ in 0..10 {
            call(&mut b, t0, ok(10_000));
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    fn open_breaker(t0: Instant) -> CircuitBreaker {
        let mut b = CircuitBreaker::new(config());
        b.trip(t0);
        b
    }

    #[test]
    fn breaker_half_open_admits_one_probe_and_success_closes() {
        let t0 = Instant::now();
        let mut b = open_breaker(t0);
        let later = t0 + 1000 * MS;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(later), Ok(Admission::Probe));
        // Only one probe at a time.
        assert_eq!(b.try_acquire(later), Err(1000 * MS));
        b.record(later, Admission::Probe, ok(10));
        assert_eq!(b.state(later), BreakerState::Closed);
        // The window starts empty: one failure is not enough to re-open.
        call(&mut b, later, err());
        assert_eq!(b.state(later), BreakerState::Closed);
    }

    #[test]
    fn breaker_failed_or_slow_probe_reopens() {
        let t0 = Instant::now();
        let mut b = open_breaker(t0);
        let t1 = t0 + 1000 * MS;
        assert_eq!(b.try_acquire(t1), Ok(Admission::Probe));
        b.record(t1, Admission::Probe, err());
        assert_eq!(
            b.state(t1),
            BreakerState::Open {
                retry_in: 1000 * MS
            }
        );

        let t2 = t1 + 1000 * MS;
        assert_eq!(b.try_acquire(t2), Ok(Admission::Probe));
        b.record(t2, Admission::Probe, ok(500));
        assert!(matches!(b.state(t2), BreakerState::Open { .. }));
        assert_eq!(b.opened(), 3);
    }

    #[test]
    fn breaker_abandoned_probe_frees_the_slot() {
        let t0 = Instant::now();
        let mut b = open_breaker(t0);
        let t1 = t0 + 1000 * MS;
        assert_eq!(b.try_acquire(t1), Ok(Admission::Probe));
        b.abandon(Admission::Probe);
        assert_eq!(b.try_acquire(t1), Ok(Admission::Probe));
    }

    #[test]
    fn breaker_ignores_outcomes_admitted_before_the_trip() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        assert_eq!(b.try_acquire(t0), Ok(Admission::Call));
        b.trip(t0);
        let t1 = t0 + 1000 * MS;
        assert_eq!(b.try_acquire(t1), Ok(Admission::Probe));
        // The old call's success must not close the breaker in the probe's place.
        b.record(t1, Admission::Call, ok(1));
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(t1), Err(1000 * MS));
    }
}

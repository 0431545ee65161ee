//! What the attempts of one client request share: how many were made of how many allowed,
//! which keys were tried in this pass, what the candidates were waiting on (cooling keys, open
//! breakers), and the error to answer when no candidate delivered.
//! Invariants: a key is tried at most once per pass over the plan; a new pass only re-opens
//! keys whose failure may not repeat (`classify::may_repeat`), so the passes end; every 503
//! rotor answers itself carries a `Retry-After` of at least one second.

use smallvec::SmallVec;

use super::classify::{settle, Penalty, Subject, Verdict};
use super::error::{ErrorKind, ProxyError, Side};
use super::RequestContext;
use crate::config::Retry;
use crate::health::{now_ms, KeyState};

#[derive(Default)]
pub(super) struct Attempts {
    pub max: usize,
    pub made: usize,
    /// Tokens reserved against TPM windows for each attempt.
    pub tokens: u64,
    /// Earliest moment a cooling candidate key frees up (health clock).
    pub soonest_cool: Option<u64>,
    /// A candidate provider was skipped because its breaker is open.
    pub breaker_open: bool,
    /// `[cluster]`: a key was skipped for want of a lease (one is being drawn).
    pub leasing: bool,
    /// `[cluster]`: a key's shared windows were refused (Redis down, `on_redis_down = "refuse"`).
    pub cluster_down: bool,
    pub last_error: Option<ProxyError>,
    pub last_penalty: Option<Penalty>,
    tried: SmallVec<[Tried; 4]>,
}

struct Tried {
    provider: usize,
    key: usize,
    /// Its failure may not repeat: eligible again in the next pass.
    again: bool,
}

impl Attempts {
    pub fn new(max: usize, tokens: u64) -> Self {
        Attempts {
            max,
            tokens,
            ..Default::default()
        }
    }

    pub fn note_cooling(&mut self, until: u64) {
        self.soonest_cool = Some(self.soonest_cool.map_or(until, |s| s.min(until)));
    }

    /// Applies a verdict to the key and provider health (`classify::settle`) and notes what the
    /// request learned; `repeat`: the key may be tried again in a later pass. Inlined into its
    /// callers (`attempt::judge`), so a delivered answer's judging is one frame.
    #[inline(always)]
    pub fn judge(&mut self, subject: &Subject<'_>, provider: usize, verdict: Verdict, repeat: bool, retry: &Retry) {
        if let Some(until) = settle(subject, verdict, retry, now_ms()) {
            self.note_cooling(until);
        }
        if let Verdict::Retry(penalty) = verdict {
            self.last_penalty = Some(penalty);
            self.mark_tried(provider, subject.key, repeat);
        }
    }

    /// Keys of `provider` already tried in this pass.
    pub fn tried_keys(&self, provider: usize) -> SmallVec<[usize; 4]> {
        if self.tried.is_empty() {
            // A request's first attempt: nothing to collect.
            return SmallVec::new();
        }
        self.tried
            .iter()
            .filter(|t| t.provider == provider)
            .map(|t| t.key)
            .collect()
    }

    pub fn mark_tried(&mut self, provider: usize, key: usize, again: bool) {
        match self.tried.iter_mut().find(|t| t.provider == provider && t.key == key) {
            Some(t) => t.again = again,
            None => self.tried.push(Tried { provider, key, again }),
        }
    }

    /// Starts another pass over the plan in which keys whose failure may not repeat (a
    /// transient 5xx, a timeout) are eligible again. False when there are none.
    pub fn next_pass(&mut self) -> bool {
        let before = self.tried.len();
        self.tried.retain(|t| !t.again);
        self.tried.len() != before
    }

    /// The error when no candidate delivered: 429 when keys are only cooling, 503 when none is
    /// usable at all (with `Retry-After` from `usable_in`), else the last upstream failure.
    pub fn exhausted(self, model: &str, usable_in: impl FnOnce() -> u64) -> ProxyError {
        let cooling_only = self.made == 0 || matches!(self.last_penalty, Some(Penalty::Cool(_)));
        if let (true, Some(until)) = (cooling_only, self.soonest_cool) {
            let seconds = until.saturating_sub(now_ms()).div_ceil(1000).max(1);
            let message = format!("every key for model '{model}' is rate limited; retry in {seconds} s");
            return ProxyError::new(ErrorKind::RateLimited, Side::Upstream, message)
                .with_code("rate_limit_exceeded")
                .with_retry_after(seconds);
        }
        if let Some(error) = self.last_error {
            // Every 503 rotor answers itself says when to come back.
            if error.status() == 503 && error.retry_after().is_none() {
                return error.with_retry_after(usable_in());
            }
            return error;
        }
        if self.cluster_down {
            let message = format!(
                "the keys for model '{model}' have shared limits and the cluster's Redis is unreachable (cluster.on_redis_down = \"refuse\"); retry in 1 s"
            );
            return ProxyError::new(ErrorKind::NoUsableKey, Side::Upstream, message)
                .with_code("cluster_unavailable")
                .with_retry_after(1);
        }
        let seconds = usable_in();
        let message = if self.breaker_open {
            format!("the providers for model '{model}' are failing (circuit open); retry in {seconds} s")
        } else {
            format!("no usable upstream key for model '{model}' (all quarantined or disabled); retry in {seconds} s")
        };
        ProxyError::new(ErrorKind::NoUsableKey, Side::Upstream, message)
            .with_code("no_usable_key")
            .with_retry_after(seconds)
    }
}

/// Seconds (at least 1) until one of `providers` may take a request again: the soonest of
/// their breakers' probe times and their keys' cooling ends and quarantine probes. Only
/// computed on the way to a 503.
pub(super) fn usable_in(ctx: &RequestContext, providers: impl Iterator<Item = usize>) -> u64 {
    let now = now_ms();
    let table = &ctx.generation.key_health;
    let mut soonest: Option<u64> = None;
    let mut note = |at: u64| soonest = Some(soonest.map_or(at, |s| s.min(at)));
    for index in providers {
        if let Some(until) = table.provider_health(index).and_then(|p| p.open_until()) {
            note(until);
            continue;
        }
        for key in table.provider(index) {
            match key.state(now) {
                KeyState::Active => note(now),
                KeyState::Cooling(until) | KeyState::Quarantined(until) => note(until),
            }
        }
    }
    soonest.map_or(1, |at| at.saturating_sub(now).div_ceil(1000).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pass_reopens_only_keys_whose_failure_may_not_repeat() {
        let mut a = Attempts::new(3, 0);
        a.mark_tried(0, 0, true);
        a.mark_tried(0, 1, false);
        a.mark_tried(1, 0, false);
        assert_eq!(a.tried_keys(0).as_slice(), &[0, 1]);
        assert!(a.next_pass());
        assert_eq!(a.tried_keys(0).as_slice(), &[1]);
        assert!(!a.next_pass(), "nothing left to re-open: the passes end");
    }

    #[test]
    fn a_503_without_a_usable_key_says_when_to_retry() {
        let a = Attempts::new(3, 0);
        let e = a.exhausted("m", || 7);
        assert_eq!(e.status(), 503);
        assert_eq!(e.retry_after(), Some(7));
    }
}

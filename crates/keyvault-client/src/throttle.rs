//! Per-vault pacing shared by every mount of the process (issue 7).
//!
//! Key Vault limits requests per vault across all of its callers (documented: 4,000 GETs of
//! secrets, software keys and certificates per 10 s per vault and region) and answers the excess
//! with `429` and `Retry-After`. Upstream lets every mount retry on its own, so a burst of mounts
//! keeps the vault throttled for everyone. Here each vault gets one [`Pacer`] per process:
//!
//! - a token bucket (rate and burst from [`PacingOptions`]) in front of every request;
//! - on a `429`, a gate: every request to that vault, from any mount, waits until the
//!   `Retry-After` has passed, and the rate halves (at most once per gate);
//! - on success the rate climbs back linearly, to the configured rate in about 20 s (AIMD, as
//!   TCP congestion control), so many nodes sharing one vault settle below its limit.
//!
//! Waiting is first come, first served: each caller reserves the next free slot.
//!
//! Written by hand rather than with `governor`: governor's quota is fixed when it is built, and
//! this limiter changes its rate and closes its gate at run time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use entra_auth::retry::MAX_RETRY_AFTER;
use tokio::time::Instant;

/// Pacing of the requests of one process to one vault.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PacingOptions {
    /// Requests per second per vault (the ceiling the rate recovers to); 0 turns pacing and the
    /// shared `Retry-After` gate off, as upstream.
    pub rate: f64,
    /// Requests that may go at once after a quiet period.
    pub burst: u32,
    /// The rate never drops below this (requests per second).
    pub min_rate: f64,
}

impl Default for PacingOptions {
    /// Key Vault's documented limit for one vault: 4,000 requests per 10 s.
    fn default() -> Self {
        Self {
            rate: 400.0,
            burst: 4000,
            min_rate: 1.0,
        }
    }
}

impl PacingOptions {
    /// No pacing and no shared gate.
    pub fn off() -> Self {
        Self {
            rate: 0.0,
            ..Self::default()
        }
    }

    /// Whether pacing is on.
    pub fn enabled(&self) -> bool {
        self.rate > 0.0 && self.rate.is_finite()
    }
}

/// Assumed `Retry-After` when a 429 carries none.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Time for the rate to climb from its floor back to the configured rate.
const RECOVERY: f64 = 20.0;

#[derive(Debug)]
struct State {
    rate: f64,
    /// The next free slot (virtual time of the token bucket).
    next: Instant,
    /// No request goes before this (the last 429's `Retry-After`).
    blocked_until: Instant,
    /// When the rate was last raised.
    last_raise: Instant,
}

/// The pacer of one vault.
#[derive(Debug)]
pub struct Pacer {
    options: PacingOptions,
    state: Mutex<State>,
}

impl Pacer {
    /// A pacer at full rate with a full bucket.
    pub fn new(options: PacingOptions) -> Self {
        let now = Instant::now();
        let rate = options.rate.max(options.min_rate);
        // A full bucket: the first `burst` slots are due now.
        let full = secs_f64(f64::from(options.burst.max(1) - 1) / rate);
        let past = now.checked_sub(full).unwrap_or(now);
        Self {
            options,
            state: Mutex::new(State {
                rate,
                next: past,
                blocked_until: past,
                last_raise: now,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain numbers, valid even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves the next slot; returns when it is due.
    fn reserve(&self, now: Instant) -> Instant {
        let mut s = self.lock();
        let interval = secs_f64(1.0 / s.rate);
        // At most `burst` slots may be due at once: the bucket's credit reaches back that far.
        let credit = secs_f64(interval.as_secs_f64() * f64::from(self.options.burst.max(1) - 1));
        let earliest = now.checked_sub(credit).unwrap_or(now);
        let slot = s.next.max(earliest).max(s.blocked_until);
        s.next = later(slot, interval);
        slot
    }

    /// Waits for a slot (and for an open gate); returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        let mut slept = false;
        loop {
            let now = Instant::now();
            let slot = self.reserve(now);
            if slot > now {
                tokio::time::sleep_until(slot).await;
                slept = true;
            }
            // A 429 may have closed the gate while this caller slept on an earlier slot.
            if self.lock().blocked_until <= Instant::now() {
                return if slept {
                    start.elapsed()
                } else {
                    Duration::ZERO
                };
            }
        }
    }

    /// The vault answered 429: close the gate for `retry_after` and halve the rate (once per
    /// gate: the other answers of the same burst say the same thing).
    pub fn throttled(&self, retry_after: Option<Duration>) {
        let now = Instant::now();
        let until = later(now, retry_after.unwrap_or(DEFAULT_RETRY_AFTER));
        let mut s = self.lock();
        if s.blocked_until <= now {
            s.rate = (s.rate / 2.0).max(self.options.min_rate);
            s.last_raise = until;
        }
        s.blocked_until = s.blocked_until.max(until);
        // No burst credit right after a 429: pace from the reopened gate.
        s.next = s.next.max(s.blocked_until);
    }

    /// The vault answered: let the rate climb back.
    pub fn succeeded(&self) {
        let now = Instant::now();
        let mut s = self.lock();
        let ceiling = self.options.rate.max(self.options.min_rate);
        if s.rate < ceiling && now > s.last_raise {
            let dt = now.duration_since(s.last_raise).as_secs_f64();
            s.rate = (s.rate + ceiling / RECOVERY * dt).min(ceiling);
            s.last_raise = now;
        }
    }

    /// The current rate (requests per second).
    pub fn rate(&self) -> f64 {
        self.lock().rate
    }
}

/// `secs` seconds as a `Duration`; `Duration::from_secs_f64` panics on infinite, NaN or too large
/// values (a rate near zero from a library caller), which become `Duration::MAX` (NaN: zero).
fn secs_f64(secs: f64) -> Duration {
    if secs.is_nan() {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

/// `at + d`, at most [`MAX_RETRY_AFTER`] later (a server's `Retry-After` is clamped there too),
/// never an `Instant` overflow panic.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d.min(MAX_RETRY_AFTER)).unwrap_or(at)
}

/// What one process shares about one vault across all mounts and credentials.
#[derive(Debug)]
pub(crate) struct VaultShared {
    /// `None` when pacing is off.
    pub(crate) pacer: Option<Pacer>,
    /// The token scope from the vault's last verified challenge: later clients of the vault ask
    /// for a token first instead of sending an unauthenticated probe.
    scope: Mutex<Option<String>>,
    /// The vault's own HTTP/2 connection (when the connector opens them).
    pub(crate) conn: Arc<crate::direct::Slot>,
}

impl VaultShared {
    pub(crate) fn new(pacing: PacingOptions) -> Self {
        Self {
            pacer: pacing.enabled().then(|| Pacer::new(pacing)),
            scope: Mutex::new(None),
            conn: Arc::default(),
        }
    }

    pub(crate) fn scope(&self) -> Option<String> {
        self.scope
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_scope(&self, scope: &str) {
        *self.scope.lock().unwrap_or_else(PoisonError::into_inner) = Some(scope.to_owned());
    }

    /// Sets the scope unless one is known (a scope learnt from the vault's challenge wins over
    /// the configured one).
    pub(crate) fn set_scope_if_unknown(&self, scope: &str) {
        self.scope
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| scope.to_owned());
    }
}

/// Vaults seen by one connector, bounded: beyond this many, entries no client holds are dropped.
const MAX_VAULTS: usize = 1024;

/// The per-vault state of one connector.
#[derive(Debug, Default)]
pub(crate) struct VaultRegistry {
    vaults: Mutex<HashMap<String, Arc<VaultShared>>>,
}

impl VaultRegistry {
    pub(crate) fn get(&self, vault: &str, pacing: PacingOptions) -> Arc<VaultShared> {
        let mut map = self.vaults.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = map.get(vault) {
            return v.clone();
        }
        if map.len() >= MAX_VAULTS {
            map.retain(|_, v| Arc::strong_count(v) > 1);
        }
        let v = Arc::new(VaultShared::new(pacing));
        map.insert(vault.to_owned(), v.clone());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(rate: f64, burst: u32) -> PacingOptions {
        PacingOptions {
            rate,
            burst,
            min_rate: 1.0,
        }
    }

    /// `Instant::now() + retry_after` panicked for a `Retry-After` past the clock's range (a
    /// vault's header, parsed to `u64::MAX` seconds before it was clamped), and
    /// `Duration::from_secs_f64` for a rate near zero. Both are bounded now.
    #[tokio::test(start_paused = true)]
    async fn absurd_delays_and_rates_are_not_a_panic() {
        let p = Pacer::new(opts(10.0, 5));
        p.throttled(Some(Duration::MAX));
        p.throttled(Some(Duration::from_secs(u64::MAX)));
        let blocked = p.lock().blocked_until;
        assert!(blocked <= Instant::now() + MAX_RETRY_AFTER);
        let tiny = Pacer::new(PacingOptions {
            rate: 1e-300,
            burst: 4000,
            min_rate: 0.0,
        });
        let slot = tiny.reserve(Instant::now());
        assert!(tiny.lock().next >= slot);
        assert_eq!(secs_f64(f64::NAN), Duration::ZERO);
        assert_eq!(secs_f64(f64::INFINITY), Duration::MAX);
        assert_eq!(secs_f64(-1.0), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_goes_at_once_then_requests_are_paced() {
        let p = Pacer::new(opts(10.0, 5));
        for _ in 0..5 {
            assert_eq!(p.acquire().await, Duration::ZERO);
        }
        let waited = p.acquire().await;
        assert!(
            waited >= Duration::from_millis(99) && waited <= Duration::from_millis(101),
            "{waited:?}"
        );
        // after a quiet second the bucket is full again
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..5 {
            assert_eq!(p.acquire().await, Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_closes_the_gate_for_everyone_and_halves_the_rate_once() {
        let p = Arc::new(Pacer::new(opts(100.0, 100)));
        p.acquire().await;
        // a burst of 429s from one wave: one halving
        for _ in 0..10 {
            p.throttled(Some(Duration::from_secs(2)));
        }
        assert_eq!(p.rate(), 50.0);
        let start = Instant::now();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.acquire().await })
            })
            .collect();
        for w in waiters {
            w.await.unwrap();
        }
        let e = start.elapsed();
        // all three waited for the gate, then went paced at 50/s (no burst credit)
        assert!(
            e >= Duration::from_millis(2040) && e <= Duration::from_millis(2041),
            "{e:?}"
        );
        // a 429 in the next gate halves again
        p.throttled(None);
        assert_eq!(p.rate(), 25.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleeper_on_an_earlier_slot_rechecks_the_gate() {
        let p = Arc::new(Pacer::new(opts(1.0, 1)));
        p.acquire().await;
        let start = Instant::now();
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move { p.acquire().await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.throttled(Some(Duration::from_secs(5)));
        waiter.await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_recovers_linearly_and_never_leaves_its_bounds() {
        let p = Pacer::new(opts(40.0, 1));
        for _ in 0..20 {
            p.throttled(Some(Duration::from_millis(10)));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(p.rate(), 1.0, "floor");
        tokio::time::sleep(Duration::from_secs(10)).await;
        p.succeeded();
        // 10 s of a 20 s recovery to 40/s: +20
        assert!((p.rate() - 21.0).abs() < 0.5, "{}", p.rate());
        tokio::time::sleep(Duration::from_secs(60)).await;
        p.succeeded();
        assert_eq!(p.rate(), 40.0, "ceiling");
    }

    #[test]
    fn registry_shares_one_state_per_vault_and_stays_bounded() {
        let r = VaultRegistry::default();
        let a = r.get("https://a/", PacingOptions::default());
        assert!(Arc::ptr_eq(
            &a,
            &r.get("https://a/", PacingOptions::default())
        ));
        assert!(a.pacer.is_some());
        assert!(
            r.get("https://b/", PacingOptions::off()).pacer.is_none(),
            "rate 0 = off"
        );
        a.set_scope("https://vault.azure.net/.default");
        assert_eq!(
            r.get("https://a/", PacingOptions::default())
                .scope()
                .as_deref(),
            Some("https://vault.azure.net/.default")
        );
        for i in 0..(MAX_VAULTS + 10) {
            r.get(&format!("https://v{i}/"), PacingOptions::default());
        }
        let n = r.vaults.lock().unwrap().len();
        assert!(n <= MAX_VAULTS, "{n}");
        assert!(
            Arc::ptr_eq(&a, &r.get("https://a/", PacingOptions::default())),
            "a held vault survives the trim"
        );
    }
}

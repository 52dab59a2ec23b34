//! Bounded retries with jitter that honour the server's requested delay, shared by the token
//! sources and the Key Vault client.
//!
//! Shape as azcore's default policy: delay = (2^try − 1) × base × jitter[0.8, 1.3), capped; a
//! server-requested delay (`retry-after-ms`, `x-ms-retry-after-ms`, `Retry-After` seconds or
//! HTTP-date) is used
//! instead when present, and a request to wait longer than `max_server_delay` is not retried.

use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;

/// Retry limits.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Base of the exponential back-off.
    pub base_delay: Duration,
    /// Cap of the computed back-off.
    pub max_delay: Duration,
    /// Longest server-requested delay that is still honoured (longer → give up now).
    pub max_server_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(800),
            max_delay: Duration::from_secs(60),
            max_server_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The delay before retry number `attempt` (1-based), or `None` to give up.
    pub fn delay(&self, attempt: u32, server_requested: Option<Duration>) -> Option<Duration> {
        if attempt > self.max_retries {
            return None;
        }
        if let Some(d) = server_requested {
            return (d <= self.max_server_delay).then_some(d);
        }
        let factor = (1u64 << attempt.min(20)) - 1;
        let jitter: f64 = rand::rng().random_range(0.8..1.3);
        let ms = (self.base_delay.as_millis() as f64) * factor as f64 * jitter;
        Some(Duration::from_millis(ms as u64).min(self.max_delay))
    }
}

/// The longest server-requested delay [`retry_after`] reports: a larger (or absurd) value is
/// clamped to this, so callers can add it to a clock reading without overflow. It is far above
/// any `max_server_delay`, so such a request is still not retried.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Statuses worth retrying (as azcore): 408, 429, 500, 502, 503, 504.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// The server-requested delay, if any, at most [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    requested_delay(headers).map(|d| d.min(MAX_RETRY_AFTER))
}

fn requested_delay(headers: &HeaderMap) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    let v = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // HTTP-date (IMF-fixdate), e.g. `Wed, 21 Oct 2015 07:28:00 GMT`: the delay until then.
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(v, &fmt).ok()?.assume_utc();
    let now = time::OffsetDateTime::now_utc();
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_bounded_and_honours_server_delay() {
        let p = RetryPolicy::default();
        let d1 = p.delay(1, None).unwrap();
        assert!(
            d1 >= Duration::from_millis(640) && d1 < Duration::from_millis(1040),
            "{d1:?}"
        );
        let d3 = p.delay(3, None).unwrap();
        assert!(d3 >= Duration::from_millis(4480), "{d3:?}");
        assert_eq!(p.delay(4, None), None);
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(p.delay(1, Some(Duration::from_secs(61))), None);
    }

    #[test]
    fn parses_retry_after_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("x-ms-retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        h.insert("retry-after", later.format(&fmt).unwrap().parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(27) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a date in the past: retry now"
        );
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    /// A server may send any number: `Retry-After: 18446744073709551615` used to come back as
    /// `u64::MAX` seconds, and the Key Vault pacer's `Instant::now() + delay` then panicked.
    #[test]
    fn absurd_delays_are_clamped() {
        for (name, value) in [
            ("retry-after", "18446744073709551615"),
            ("retry-after-ms", "18446744073709551615"),
            ("x-ms-retry-after-ms", "18446744073709551615"),
            ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, value.parse().unwrap());
            let d = retry_after(&h);
            assert_eq!(d, Some(MAX_RETRY_AFTER), "{name}: {value}");
            assert_eq!(RetryPolicy::default().delay(1, d), None, "not retried");
            assert!(
                std::time::Instant::now()
                    .checked_add(MAX_RETRY_AFTER)
                    .is_some()
            );
        }
    }
}

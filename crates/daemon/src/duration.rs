//! Go's `time.ParseDuration`, for flags such as `--rotation-poll-interval=2m`.
//!
//! Written by hand because the common Rust parsers accept a different syntax (`2min`, spaces) and
//! reject Go's. Integer arithmetic throughout, every step checked: a duration too large for
//! [`Duration`] is an error, never a panic or a silently rounded value.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A flag value that is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (examples: 30s, 2m, 1h30m, 1.5s, 250ms)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses a Go duration: a sequence of decimal numbers, each with an optional fraction and a
/// unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), as in `300ms`, `1.5h` or `2h45m`; `0` alone needs
/// no unit. Surrounding whitespace is ignored, a leading `+` is allowed (as in Go); negative
/// durations are refused (no flag takes one).
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.starts_with('-') {
        return Err(err("negative durations are not allowed"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let overflow = || err("too large");
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        // The integer part.
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_digits, after) = rest.split_at(int_len);
        rest = after;
        let mut int: u128 = 0;
        for d in int_digits.bytes() {
            int = int
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(d - b'0')))
                .ok_or_else(overflow)?;
        }
        // The fraction: digits past the 19th are below a nanosecond of any unit and are ignored.
        let mut frac: u128 = 0;
        let mut frac_scale: u128 = 1;
        let mut frac_len = 0;
        if let Some(after_dot) = rest.strip_prefix('.') {
            frac_len = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            for d in after_dot[..frac_len].bytes().take(19) {
                frac = frac * 10 + u128::from(d - b'0');
                frac_scale *= 10;
            }
            rest = &after_dot[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(err("expected a number"));
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, after) = rest.split_at(unit_len);
        rest = after;
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        let nanos = int
            .checked_mul(unit_nanos)
            .and_then(|v| v.checked_add(frac * unit_nanos / frac_scale))
            .ok_or_else(overflow)?;
        total = total.checked_add(nanos).ok_or_else(overflow)?;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| overflow())?;
    // Below one second: always fits.
    let sub = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_go_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn go_syntax() {
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("5.s"), Duration::from_secs(5));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("0.1s"), Duration::from_millis(100));
        assert_eq!(ok("1.000000001s"), Duration::new(1, 1));
        assert_eq!(
            ok("1.0000000019s"),
            Duration::new(1, 1),
            "below 1ns is dropped"
        );
        assert_eq!(ok("10us"), Duration::from_micros(10));
        assert_eq!(ok("10µs"), Duration::from_micros(10));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("1h1m1s1ms1us1ns"), Duration::new(3661, 1_001_001));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("+5s"), Duration::from_secs(5));
        assert_eq!(ok(" 30s "), Duration::from_secs(30), "the provider trimmed");
    }

    #[test]
    fn refuses_what_go_refuses() {
        for bad in [
            "", " ", "5", "x", "m", "2min", "1d", "1.2.3s", ".s", "s5", "-5s", "5 s", ".",
        ] {
            let e = parse_go_duration(bad).expect_err(bad).to_string();
            assert!(e.starts_with("invalid duration"), "{bad}: {e}");
        }
    }

    /// The provider's copy computed in f64 and called `Duration::from_secs_f64`, which panics on
    /// values past `u64::MAX` seconds; the driver's copy returned an error for those. Both must
    /// be errors, and the arithmetic must not wrap.
    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let max = Duration::MAX;
        assert_eq!(
            ok(&format!("{}s", max.as_secs())),
            Duration::from_secs(max.as_secs())
        );
        for huge in [
            "18446744073709551616s",                      // u64::MAX + 1 seconds
            "5124095576030432h",                          // > u64::MAX seconds in hours
            "99999999999999999999999999999999999999999h", // > u128 before scaling
            "340282366920938463463374607431768211456ns",  // u128::MAX + 1
            "18446744073709551615s1s",                    // sum overflows
            "9999999999999999999999999999h9999999999999999999999999999h",
        ] {
            let e = parse_go_duration(huge).expect_err(huge).to_string();
            assert!(e.contains("too large"), "{huge}: {e}");
        }
    }
}

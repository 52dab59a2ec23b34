//! Go `flag` syntax on top of clap.

/// Go-style argv: `-endpoint=x` → `--endpoint=x` (Go's `flag` package accepts one or two dashes
/// for every flag). Single-letter flags (`-h`, `-v`, `-v=5`, `-v5`) stay as they are, and the
/// program name (the first item) is left alone.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && a.starts_with('-') && !a.starts_with("--") && a.len() > 2 && !is_v(&a) {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// `-v=5` or `-v5`: klog's short verbosity flag, which clap reads as `-v`.
fn is_v(a: &str) -> bool {
    a.strip_prefix("-v").is_some_and(|rest| {
        let n = rest.strip_prefix('=').unwrap_or(rest);
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn single_dash_long_flags_get_two() {
        assert_eq!(
            norm(&[
                "-prog",
                "-endpoint=unix:///a.sock",
                "--v=2",
                "-v=5",
                "-v4",
                "-v",
                "-h",
                "--x",
                "value"
            ]),
            [
                "-prog",
                "--endpoint=unix:///a.sock",
                "--v=2",
                "-v=5",
                "-v4",
                "-v",
                "-h",
                "--x",
                "value"
            ]
        );
        assert_eq!(
            norm(&["p", "-version", "-v=x", "-cache-ttl=30s"]),
            ["p", "--version", "--v=x", "--cache-ttl=30s"]
        );
    }
}

//! Logging setup: text or JSON lines (`--log-format-json`) on stderr, klog-style `-v`.
//!
//! One JSON layout for both binaries: one object per line with `timestamp`, `level`, `target`,
//! the message as `message`, and the event's fields at the top level (as klog's JSON lines carry
//! their key/value pairs), so a log query reads `.pod` or `.error` in either binary's output.
//! Log lines carry names and versions, never values, tokens or credentials.

use tracing_subscriber::EnvFilter;

/// How `-v` maps to a level: below `debug_from` info, below `trace_from` debug, else trace.
/// Each binary documents its thresholds in its `-v` help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verbosity {
    /// The first `-v` that logs debug lines.
    pub debug_from: u8,
    /// The first `-v` that logs trace lines.
    pub trace_from: u8,
}

impl Verbosity {
    /// The level `-v=v` turns on.
    pub fn level(&self, v: u8) -> &'static str {
        if v >= self.trace_from {
            "trace"
        } else if v >= self.debug_from {
            "debug"
        } else {
            "info"
        }
    }
}

/// Libraries whose debug output is noise at our debug level (connection and frame events), kept
/// at info unless `RUST_LOG` asks for them.
const QUIET: &str =
    "h2=info,hyper=info,hyper_util=info,tower=info,reqwest=info,rustls=info,kube_client=info";

/// The filter `-v=v` gives, unless `RUST_LOG` is set (which then wins).
pub fn filter(verbosity: Verbosity, v: u8) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},{QUIET}", verbosity.level(v))))
}

/// Installs the global subscriber (once, from `main`). `RUST_LOG` overrides `-v`.
pub fn init(json: bool, verbosity: Verbosity, v: u8) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(verbosity, v))
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        let v = Verbosity {
            debug_from: 2,
            trace_from: 5,
        };
        let got: Vec<_> = (0..=6).map(|n| v.level(n)).collect();
        assert_eq!(
            got,
            ["info", "info", "debug", "debug", "debug", "trace", "trace"]
        );
    }
}

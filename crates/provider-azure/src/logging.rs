//! Logging setup: text or JSON (`--log-format-json`), klog-style verbosity. Log lines carry pod,
//! namespace, class, object names and versions — never values, tokens or credentials.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (call once, from `main`). `RUST_LOG` overrides `-v`.
pub fn init(json: bool, verbosity: u8) {
    let level = match verbosity {
        0 | 1 => "info",
        2..=4 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},h2=info,hyper=info,hyper_util=info,tower=info,reqwest=info,rustls=info"
        ))
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}

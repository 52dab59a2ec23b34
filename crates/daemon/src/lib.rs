//! Plumbing shared by the two daemons (`secrets-store-csi-driver` and
//! `secrets-store-provider-azure`), so that both accept the same Go-style command lines and
//! set themselves up the same way:
//!
//! - [`args::normalize_args`]: Go `flag` syntax (`-name=value` as well as `--name=value`);
//! - [`duration::parse_go_duration`]: Go's `time.ParseDuration`, with checked arithmetic;
//! - [`error::render`]: an error and its causes as one line, for statuses, events and logs;
//! - [`endpoint::parse_endpoint`]: `unix://` / `tcp://` endpoints, by upstream's rules;
//! - [`logging::init`]: text or JSON lines on stderr, klog-style `-v`;
//! - [`runtime::build`]: the tokio runtime, a few workers whatever the core count;
//! - [`http::serve`]: the `/metrics` and `/healthz` servers, drained on shutdown;
//! - [`signal::shutdown`]: resolves on SIGTERM or SIGINT;
//! - [`uds::bind_private`]: a unix socket only its owner can connect to;
//! - [`uds::channel`] / [`uds::channel_lazy`] / [`uds::channel_to`]: the gRPC client side.

pub mod args;
pub mod duration;
pub mod endpoint;
pub mod error;
pub mod http;
pub mod logging;
pub mod runtime;
pub mod signal;
pub mod uds;

pub use args::normalize_args;
pub use duration::parse_go_duration;
pub use endpoint::{Endpoint, EndpointError, parse_endpoint};

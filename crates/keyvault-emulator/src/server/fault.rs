//! The one fault check every route goes through: the data plane, Entra ID (`Token`,
//! `InstanceDiscovery`, `OpenIdConfiguration`, `Jwks`), IMDS (`Imds`) and NMI (`Nmi`). Latency
//! applies to every request of the route as it arrives ([`delay`]); counted faults
//! ([`apply`]) once the request is a well-formed call (on the data plane: authenticated), so they
//! are consumed by real calls and never by a probe the client expects to fail.

use super::http::set_header;
use super::{DropConnection, Resp};
use crate::admin::{FaultAction, Telemetry};

/// Waits the latency injected on `op` (and `vault`, empty outside the data plane). Every request
/// of a route pays it, a probe the client expects to fail included: it is a round trip too.
pub(super) async fn delay(telemetry: &Telemetry, op: &str, vault: &str) {
    wait(telemetry.latency(op, vault)).await;
}

/// Waits `latency`, to within ~0.2 ms. tokio's timer has millisecond ticks and wakes a sleep on
/// the tick after its deadline: a 20 ms `tokio::time::sleep` took 21.2 ms (p50) on a 2-core
/// machine, 6 % more round trip than the fault asks for, on every request. So the timer sleeps
/// all but the last 2 ms and a blocking thread sleeps the rest (nanosleep: 20.2 ms p50, also
/// with 200 concurrent waits); a blocking thread is held for at most those 2 ms.
pub(super) async fn wait(latency: std::time::Duration) {
    const SLACK: std::time::Duration = std::time::Duration::from_millis(2);
    if latency.is_zero() {
        return;
    }
    let deadline = std::time::Instant::now() + latency;
    if latency > SLACK {
        tokio::time::sleep(latency - SLACK).await;
    }
    let rest = deadline.saturating_duration_since(std::time::Instant::now());
    if !rest.is_zero() {
        // A join error means the runtime is shutting down: nothing left to wait for.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

/// Applies the counted faults injected on `op` (and `vault`) to a well-formed call (its latency
/// was waited by [`delay`] when the request arrived): either lets the request proceed
/// (`Ok(None)`), answers it with `render(status)` plus `Retry-After` when throttled
/// (`Ok(Some(..))`, counted), or drops the connection (`Err`, counted with status 0).
pub(super) fn apply(
    telemetry: &Telemetry,
    op: &'static str,
    vault: &str,
    render: impl FnOnce(u16) -> Resp,
) -> Result<Option<Resp>, DropConnection> {
    let (_, action) = telemetry.check(op, vault);
    match action {
        FaultAction::None => Ok(None),
        FaultAction::Drop => {
            telemetry.count(op, vault, 0);
            Err(DropConnection)
        }
        FaultAction::Respond {
            status,
            retry_after,
        } => {
            telemetry.count(op, vault, status);
            let mut r = render(status);
            if let Some(s) = retry_after {
                set_header(&mut r, "retry-after", &s.to_string());
            }
            Ok(Some(r))
        }
    }
}

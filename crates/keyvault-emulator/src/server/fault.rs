//! The one fault check every route goes through: the data plane (after authentication), Entra ID
//! (`Token`, `InstanceDiscovery`, `OpenIdConfiguration`, `Jwks`), IMDS (`Imds`) and NMI (`Nmi`),
//! each once the request is a well-formed call of its route, so a counted fault is consumed by a
//! real call and never by a probe the client expects to fail.

use super::http::set_header;
use super::{DropConnection, Resp};
use crate::admin::{FaultAction, Telemetry};

/// Applies the faults injected on `op` (and `vault`, empty outside the data plane): waits the
/// injected latency, then either lets the request proceed (`Ok(None)`), answers it with
/// `render(status)` plus `Retry-After` when throttled (`Ok(Some(..))`, counted), or drops the
/// connection (`Err`, counted with status 0).
pub(super) async fn apply(
    telemetry: &Telemetry,
    op: &'static str,
    vault: &str,
    render: impl FnOnce(u16) -> Resp,
) -> Result<Option<Resp>, DropConnection> {
    let (latency, action) = telemetry.check(op, vault);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
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

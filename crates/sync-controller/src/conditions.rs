//! Condition types, reasons and messages, as the upstream sync controller reports them
//! (`status.conditions` of a SecretSync), and the `meta.SetStatusCondition` rule for updating
//! them: the transition time moves only when the status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use secrets_store_api::secretsync::StatusCondition;

pub const TYPE_CREATE: &str = "SecretCreated";
pub const TYPE_UPDATE: &str = "SecretUpdated";

pub const REASON_PROVIDER_ERROR: &str = "ProviderError";
pub const REASON_INVALID_LABEL: &str = "InvalidClusterSecretLabelError";
pub const REASON_INVALID_ANNOTATION: &str = "InvalidClusterSecretAnnotationError";
pub const REASON_SYNC_ERROR: &str = "ControllerSyncError";
pub const REASON_PATCH_ERROR: &str = "ControllerPatchError";
pub const REASON_SPC_ERROR: &str = "SecretProviderClassMisconfigured";
pub const REASON_FETCH_FAILED: &str = "RemoteSecretStoreFetchFailed";
pub const REASON_SYNC_STARTING: &str = "SyncStarting";
pub const REASON_NO_UPDATE_YET: &str = "NoUpdatesAttemptedYet";
pub const REASON_UP_TO_DATE: &str = "SecretUpToDate";
pub const REASON_CREATE_SUCCESSFUL: &str = "CreateSuccessful";

pub const MESSAGE_CREATE_SUCCESSFUL: &str = "Secret created successfully.";
pub const MESSAGE_UPDATE_SUCCESSFUL: &str = "Secret contains last observed values.";

/// Reasons of a failed attempt: a SecretSync carrying one is synced again even when nothing
/// changed.
pub const FAILED_REASONS: &[&str] = &[
    REASON_SPC_ERROR,
    REASON_INVALID_ANNOTATION,
    REASON_INVALID_LABEL,
    REASON_PROVIDER_ERROR,
    REASON_FETCH_FAILED,
    REASON_PATCH_ERROR,
    REASON_SYNC_ERROR,
];

/// Sets (adds or replaces) the condition of `type_`; `lastTransitionTime` is `now` when the
/// condition is new or its status changed, else kept.
pub fn set(
    conditions: &mut Vec<StatusCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let new = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: now.clone(),
        observed_generation: None,
    };
    match conditions.iter_mut().find(|c| c.0.type_ == type_) {
        Some(existing) => {
            let time = if existing.0.status == status {
                existing.0.last_transition_time.clone()
            } else {
                now.clone()
            };
            existing.0 = Condition {
                last_transition_time: time,
                ..new
            };
        }
        None => conditions.push(StatusCondition(new)),
    }
}

/// Whether the last attempt left a failure reason on any condition.
pub fn has_failure(conditions: &[StatusCondition]) -> bool {
    conditions
        .iter()
        .any(|c| FAILED_REASONS.contains(&c.0.reason.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Time {
        Time(
            k8s_openapi::jiff::Timestamp::from_second(s)
                .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        )
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut c = Vec::new();
        set(
            &mut c,
            TYPE_CREATE,
            "Unknown",
            REASON_SYNC_STARTING,
            "",
            &t(1),
        );
        set(
            &mut c,
            TYPE_CREATE,
            "False",
            REASON_PROVIDER_ERROR,
            "x",
            &t(2),
        );
        assert_eq!(c[0].0.last_transition_time, t(2));
        set(&mut c, TYPE_CREATE, "False", REASON_PATCH_ERROR, "y", &t(3));
        assert_eq!(c[0].0.last_transition_time, t(2));
        assert_eq!(c[0].0.reason, REASON_PATCH_ERROR);
        assert!(has_failure(&c));
        set(
            &mut c,
            TYPE_CREATE,
            "True",
            REASON_CREATE_SUCCESSFUL,
            "",
            &t(4),
        );
        assert_eq!(c.len(), 1);
        assert!(!has_failure(&c));
    }
}

//! Kubelet's volume context for an inline `secrets-store.csi.k8s.io` volume, typed.

use std::collections::BTreeMap;

use crate::error::PublishError;
use sensitive::SecretString;

/// User attribute naming the SecretProviderClass (required).
pub const SECRET_PROVIDER_CLASS: &str = "secretProviderClass";
/// Legacy user attribute; only a metrics label upstream.
pub const PROVIDER_NAME: &str = "providerName";
pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
pub const SERVICE_ACCOUNT_NAME: &str = "csi.storage.k8s.io/serviceAccount.name";
pub const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";
pub const SERVICE_ACCOUNT_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
/// Attribute the driver adds while rotation is on: the oldest a cached "latest" answer may be
/// (a Go duration, e.g. `60000ms`). Our provider serves such answers from its cache only if
/// fetched within that time; providers that do not know it ignore it, as every unknown key.
pub const MAX_AGE: &str = "secrets-store.csi.k8s.io/maxAge";

/// What the driver needs from the volume context, plus every key (they are all forwarded to the
/// provider). The tokens are kept out of `raw` and out of `Debug`.
#[derive(Debug, Clone)]
pub struct VolumeContext {
    pub secret_provider_class: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub service_account_name: String,
    pub ephemeral: bool,
    /// `csi.storage.k8s.io/serviceAccount.tokens` (from `secrets` when kubelet put it there,
    /// else from the volume context), a JSON object `{audience: {token, expirationTimestamp}}`.
    pub tokens: Option<SecretString>,
    /// Every volume-context key except the tokens, in key order.
    raw: BTreeMap<String, String>,
}

impl VolumeContext {
    /// Parse kubelet's map. `secrets` is consulted only for the tokens key (KEP-5538 puts it
    /// there when `serviceAccountTokenInSecrets` is on).
    pub fn parse(
        context: &std::collections::HashMap<String, String>,
        secrets: &std::collections::HashMap<String, String>,
    ) -> Result<Self, PublishError> {
        let get = |k: &str| context.get(k).cloned().unwrap_or_default();
        let secret_provider_class = get(SECRET_PROVIDER_CLASS);
        if secret_provider_class.trim().is_empty() {
            return Err(PublishError::InvalidArgument(format!(
                "volume attribute {SECRET_PROVIDER_CLASS} is not set: add \
                 `volumeAttributes: {{secretProviderClass: <name>}}` to the pod's csi volume"
            )));
        }
        for key in [POD_NAME, POD_NAMESPACE, POD_UID] {
            if context.get(key).is_none_or(|v| v.is_empty()) {
                return Err(PublishError::InvalidArgument(format!(
                    "volume context key {key} is missing: the CSIDriver object \
                     secrets-store.csi.k8s.io must have `podInfoOnMount: true`"
                )));
            }
        }
        let tokens = secrets
            .get(SERVICE_ACCOUNT_TOKENS)
            .or_else(|| context.get(SERVICE_ACCOUNT_TOKENS))
            .filter(|t| !t.is_empty())
            .map(|t| SecretString::new(t.clone()));
        let raw = context
            .iter()
            .filter(|(k, _)| k.as_str() != SERVICE_ACCOUNT_TOKENS)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self {
            secret_provider_class,
            pod_name: get(POD_NAME),
            pod_namespace: get(POD_NAMESPACE),
            pod_uid: get(POD_UID),
            service_account_name: get(SERVICE_ACCOUNT_NAME),
            ephemeral: get(EPHEMERAL).eq_ignore_ascii_case("true"),
            tokens,
            raw,
        })
    }

    /// The provider's `attributes`: the class parameters, every volume-context key laid over
    /// them, then the tokens (upstream §3.2), then [`MAX_AGE`] when given. Returned as a JSON
    /// object string with sorted keys.
    pub fn provider_attributes(
        &self,
        parameters: &BTreeMap<String, String>,
        max_age: Option<std::time::Duration>,
    ) -> Result<SecretString, PublishError> {
        let max_age = max_age.map(|m| format!("{}ms", m.as_millis()));
        let mut attrs: BTreeMap<&str, &str> = parameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for (k, v) in &self.raw {
            attrs.insert(k, v);
        }
        if let Some(t) = &self.tokens {
            attrs.insert(SERVICE_ACCOUNT_TOKENS, t.expose());
        }
        if let Some(m) = &max_age {
            attrs.insert(MAX_AGE, m);
        }
        serde_json::to_string(&attrs)
            .map(SecretString::new)
            .map_err(|e| PublishError::internal("encoding provider attributes", e))
    }
}

/// The provider's `secrets`: JSON of the request secrets, `null` when kubelet sent none (as Go
/// marshals a nil map).
pub fn provider_secrets(
    secrets: &std::collections::HashMap<String, String>,
) -> Result<SecretString, PublishError> {
    if secrets.is_empty() {
        return Ok(SecretString::new("null"));
    }
    let sorted: BTreeMap<&String, &String> = secrets.iter().collect();
    serde_json::to_string(&sorted)
        .map(SecretString::new)
        .map_err(|e| PublishError::internal("encoding provider secrets", e))
}

/// The provider's `permission`: JSON of file mode 0644, i.e. `420`.
pub const PROVIDER_PERMISSION: &str = "420";

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn kubelet_context() -> HashMap<String, String> {
        [
            (SECRET_PROVIDER_CLASS, "kv"),
            (POD_NAME, "web"),
            (POD_NAMESPACE, "default"),
            (POD_UID, "1234"),
            (SERVICE_ACCOUNT_NAME, "default"),
            (EPHEMERAL, "true"),
            (SERVICE_ACCOUNT_TOKENS, r#"{"api://AzureADTokenExchange":{"token":"t0k","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#),
            ("keyvaultName", "override"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn parses_kubelet_context_and_layers_attributes() -> anyhow::Result<()> {
        let vc = VolumeContext::parse(&kubelet_context(), &HashMap::new())?;
        assert_eq!(vc.pod_namespace, "default");
        assert!(vc.ephemeral);
        assert!(!format!("{vc:?}").contains("t0k"));
        let params = BTreeMap::from([
            ("keyvaultName".to_string(), "kv1".to_string()),
            ("objects".to_string(), "array: []".to_string()),
        ]);
        let attrs: BTreeMap<String, String> =
            serde_json::from_str(vc.provider_attributes(&params, None)?.expose())?;
        assert_eq!(
            attrs["keyvaultName"], "override",
            "volume context wins over parameters"
        );
        assert_eq!(attrs["objects"], "array: []");
        assert_eq!(attrs[POD_UID], "1234");
        assert!(attrs[SERVICE_ACCOUNT_TOKENS].contains("t0k"));
        assert!(!attrs.contains_key(MAX_AGE));

        // Rotation on: the driver's freshness bound, over any user value of the same key.
        let params = BTreeMap::from([(MAX_AGE.to_string(), "1h".to_string())]);
        let attrs: BTreeMap<String, String> = serde_json::from_str(
            vc.provider_attributes(&params, Some(std::time::Duration::from_secs(60)))?
                .expose(),
        )?;
        assert_eq!(attrs[MAX_AGE], "60000ms");
        Ok(())
    }

    #[test]
    fn tokens_from_secrets_win() -> anyhow::Result<()> {
        let secrets = HashMap::from([(
            SERVICE_ACCOUNT_TOKENS.to_string(),
            "from-secrets".to_string(),
        )]);
        let vc = VolumeContext::parse(&kubelet_context(), &secrets)?;
        assert_eq!(vc.tokens.as_ref().map(|t| t.expose()), Some("from-secrets"));
        Ok(())
    }

    #[test]
    fn missing_class_and_pod_info_name_the_key() {
        let mut ctx = kubelet_context();
        ctx.remove(SECRET_PROVIDER_CLASS);
        let err = VolumeContext::parse(&ctx, &HashMap::new())
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("secretProviderClass")));
        let mut ctx = kubelet_context();
        ctx.remove(POD_UID);
        let err = VolumeContext::parse(&ctx, &HashMap::new())
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("podInfoOnMount")));
    }

    #[test]
    fn secrets_json_is_null_when_empty() -> anyhow::Result<()> {
        assert_eq!(provider_secrets(&HashMap::new())?.expose(), "null");
        let s = HashMap::from([("clientid".to_string(), "a".to_string())]);
        assert_eq!(provider_secrets(&s)?.expose(), r#"{"clientid":"a"}"#);
        Ok(())
    }
}

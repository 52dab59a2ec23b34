//! The Key Vault bearer challenge: the first request goes out without a token, the vault answers
//! `401` with `WWW-Authenticate: Bearer authorization="<authority>/<tenant>", resource="<res>"`
//! (or `scope="…"`), and the token is then requested for `<res>/.default`. As the Azure SDKs do, the
//! resource must be a parent domain of the vault host, so a vault cannot ask for a token for an
//! unrelated resource.

/// A parsed challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `authorization` / `authorization_uri` parameter, if any.
    pub authorization: Option<String>,
    /// `resource` or `scope` parameter as sent.
    pub resource: String,
}

/// The challenge is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChallengeError {
    /// No `Bearer` challenge with a resource or scope.
    #[error("the vault's 401 response carries no usable Bearer challenge")]
    Missing,
    /// The resource's host is not a parent domain of the vault host.
    #[error("challenge resource \"{resource}\" doesn't match the requested domain \"{host}\"")]
    DomainMismatch {
        /// The challenge's resource.
        resource: String,
        /// The vault host.
        host: String,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` header value.
    pub fn parse(header: &str) -> Result<Self, ChallengeError> {
        let rest = header.trim();
        let rest = match rest.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("bearer ") => &rest[7..],
            _ => return Err(ChallengeError::Missing),
        };
        let mut authorization = None;
        let mut resource = None;
        let mut scope = None;
        for part in split_params(rest) {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" | "authorization_uri" => authorization = Some(v),
                "resource" => resource = Some(v),
                "scope" => scope = Some(v),
                _ => {}
            }
        }
        let resource = scope
            .or(resource)
            .filter(|s| !s.is_empty())
            .ok_or(ChallengeError::Missing)?;
        Ok(Self {
            authorization,
            resource,
        })
    }

    /// The token scope: the resource with `/.default` appended unless already there.
    pub fn scope(&self) -> String {
        if self.resource.ends_with("/.default") {
            self.resource.clone()
        } else {
            format!("{}/.default", self.resource)
        }
    }

    /// Checks that `vault_host` (no port) is a sub-domain of the resource's host.
    pub fn verify(&self, vault_host: &str) -> Result<(), ChallengeError> {
        let res_host = url::Url::parse(&self.resource)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_default();
        let host = vault_host.to_ascii_lowercase();
        if !res_host.is_empty() && host.ends_with(&format!(".{res_host}")) {
            Ok(())
        } else {
            Err(ChallengeError::DomainMismatch {
                resource: self.resource.clone(),
                host,
            })
        }
    }
}

/// Splits `a="x, y", b=z` on commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_key_vault_challenge() {
        let c = Challenge::parse(
            r#"Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net""#,
        )
        .unwrap();
        assert_eq!(c.scope(), "https://vault.azure.net/.default");
        assert!(c.verify("myvault.vault.azure.net").is_ok());
        assert!(c.verify("evil.example.com").is_err());
        assert!(c.verify("vault.azure.net").is_err(), "must be a sub-domain");
    }

    #[test]
    fn scope_parameter_and_errors() {
        let c = Challenge::parse(r#"Bearer scope="https://vault.test/.default""#).unwrap();
        assert_eq!(c.scope(), "https://vault.test/.default");
        assert_eq!(
            Challenge::parse("Basic realm=x"),
            Err(ChallengeError::Missing)
        );
        assert_eq!(Challenge::parse("Bearer"), Err(ChallengeError::Missing));
        assert_eq!(
            Challenge::parse(r#"Bearer authorization="x""#),
            Err(ChallengeError::Missing)
        );
    }
}

//! Data-plane routing: which Key Vault operation a method and path name, the operation's name for
//! counters, faults and 403 messages, and the dispatch to the handler of its concern.

use super::data_plane::{OpCtx, OpResult};
use super::http::path_segments;
use super::{certificates, deleted, keys, objects, secrets};
use crate::error::ObjectKind;
use crate::store::{Cert, Key, Secret};
use hyper::Method;

/// One data-plane operation, decided from method and path before authentication.
#[derive(Debug, Clone)]
pub(super) enum Route {
    ListSecrets,
    SetSecret(String),
    GetSecret(String, Option<String>),
    UpdateSecret(String, Option<String>),
    DeleteSecret(String),
    ListSecretVersions(String),
    ListKeys,
    CreateKey(String),
    ImportKey(String),
    GetKey(String, Option<String>),
    UpdateKey(String, Option<String>),
    DeleteKey(String),
    ListKeyVersions(String),
    ListCertificates,
    ImportCertificate(String),
    CreateCertificate(String),
    GetPending(String),
    GetPolicy(String),
    GetCertificate(String, Option<String>),
    UpdateCertificate(String, Option<String>),
    DeleteCertificate(String),
    ListCertificateVersions(String),
    GetDeleted(ObjectKind, String),
    Purge(ObjectKind, String),
    Recover(ObjectKind, String),
}

impl Route {
    pub(super) fn op(&self) -> &'static str {
        match self {
            Route::ListSecrets => "ListSecrets",
            Route::SetSecret(_) => "SetSecret",
            Route::GetSecret(..) => "GetSecret",
            Route::UpdateSecret(..) => "UpdateSecret",
            Route::DeleteSecret(_) => "DeleteSecret",
            Route::ListSecretVersions(_) => "ListSecretVersions",
            Route::ListKeys => "ListKeys",
            Route::CreateKey(_) => "CreateKey",
            Route::ImportKey(_) => "ImportKey",
            Route::GetKey(..) => "GetKey",
            Route::UpdateKey(..) => "UpdateKey",
            Route::DeleteKey(_) => "DeleteKey",
            Route::ListKeyVersions(_) => "ListKeyVersions",
            Route::ListCertificates => "ListCertificates",
            Route::ImportCertificate(_) => "ImportCertificate",
            Route::CreateCertificate(_) => "CreateCertificate",
            Route::GetPending(_) => "GetCertificateOperation",
            Route::GetPolicy(_) => "GetCertificatePolicy",
            Route::GetCertificate(..) => "GetCertificate",
            Route::UpdateCertificate(..) => "UpdateCertificate",
            Route::DeleteCertificate(_) => "DeleteCertificate",
            Route::ListCertificateVersions(_) => "ListCertificateVersions",
            Route::GetDeleted(ObjectKind::Secret, _) => "GetDeletedSecret",
            Route::GetDeleted(ObjectKind::Key, _) => "GetDeletedKey",
            Route::GetDeleted(ObjectKind::Certificate, _) => "GetDeletedCertificate",
            Route::Purge(ObjectKind::Secret, _) => "PurgeDeletedSecret",
            Route::Purge(ObjectKind::Key, _) => "PurgeDeletedKey",
            Route::Purge(ObjectKind::Certificate, _) => "PurgeDeletedCertificate",
            Route::Recover(ObjectKind::Secret, _) => "RecoverDeletedSecret",
            Route::Recover(ObjectKind::Key, _) => "RecoverDeletedKey",
            Route::Recover(ObjectKind::Certificate, _) => "RecoverDeletedCertificate",
        }
    }

    pub(super) fn parse(method: &Method, path: &str) -> Option<Route> {
        let segs = path_segments(path);
        let s = |i: usize| segs.get(i).map(|x| x.to_string());
        let ver = |i: usize| segs.get(i).filter(|v| !v.is_empty()).map(|v| v.to_string());
        let m = method.as_str();
        Some(match (segs.as_slice(), m) {
            (["secrets"] | ["secrets", ""], "GET") => Route::ListSecrets,
            (["secrets", _], "PUT") => Route::SetSecret(s(1)?),
            (["secrets", _], "DELETE") => Route::DeleteSecret(s(1)?),
            (["secrets", _, "versions"], "GET") => Route::ListSecretVersions(s(1)?),
            (["secrets", _] | ["secrets", _, _], "GET") => Route::GetSecret(s(1)?, ver(2)),
            (["secrets", _] | ["secrets", _, _], "PATCH") => Route::UpdateSecret(s(1)?, ver(2)),
            (["keys"] | ["keys", ""], "GET") => Route::ListKeys,
            (["keys", _, "create"], "POST") => Route::CreateKey(s(1)?),
            (["keys", _], "PUT") => Route::ImportKey(s(1)?),
            (["keys", _], "DELETE") => Route::DeleteKey(s(1)?),
            (["keys", _, "versions"], "GET") => Route::ListKeyVersions(s(1)?),
            (["keys", _] | ["keys", _, _], "GET") => Route::GetKey(s(1)?, ver(2)),
            (["keys", _] | ["keys", _, _], "PATCH") => Route::UpdateKey(s(1)?, ver(2)),
            (["certificates"] | ["certificates", ""], "GET") => Route::ListCertificates,
            (["certificates", _, "import"], "POST") => Route::ImportCertificate(s(1)?),
            (["certificates", _, "create"], "POST") => Route::CreateCertificate(s(1)?),
            (["certificates", _, "pending"], "GET") => Route::GetPending(s(1)?),
            (["certificates", _, "policy"], "GET") => Route::GetPolicy(s(1)?),
            (["certificates", _, "versions"], "GET") => Route::ListCertificateVersions(s(1)?),
            (["certificates", _], "DELETE") => Route::DeleteCertificate(s(1)?),
            (["certificates", _] | ["certificates", _, _], "GET") => {
                Route::GetCertificate(s(1)?, ver(2))
            }
            (["certificates", _] | ["certificates", _, _], "PATCH") => {
                Route::UpdateCertificate(s(1)?, ver(2))
            }
            ([c, _], "GET") if deleted_kind(c).is_some() => {
                Route::GetDeleted(deleted_kind(c)?, s(1)?)
            }
            ([c, _], "DELETE") if deleted_kind(c).is_some() => {
                Route::Purge(deleted_kind(c)?, s(1)?)
            }
            ([c, _, "recover"], "POST") if deleted_kind(c).is_some() => {
                Route::Recover(deleted_kind(c)?, s(1)?)
            }
            _ => return None,
        })
    }
    /// Runs the operation (authentication, api-version and faults already passed).
    pub(super) async fn execute(self, body: &[u8], ctx: &OpCtx<'_>) -> OpResult {
        use objects::{delete, list, list_versions};
        match self {
            Route::ListSecrets => list::<Secret>(ctx),
            Route::SetSecret(name) => secrets::set(ctx, &name, body).await,
            Route::GetSecret(name, ver) => secrets::get(ctx, &name, ver.as_deref()),
            Route::UpdateSecret(name, ver) => {
                secrets::update(ctx, &name, ver.as_deref(), body).await
            }
            Route::DeleteSecret(name) => delete::<Secret>(ctx, &name).await,
            Route::ListSecretVersions(name) => list_versions::<Secret>(ctx, &name),
            Route::ListKeys => list::<Key>(ctx),
            Route::CreateKey(name) => keys::create(ctx, &name, body).await,
            Route::ImportKey(name) => keys::import(ctx, &name, body).await,
            Route::GetKey(name, ver) => keys::get(ctx, &name, ver.as_deref()),
            Route::UpdateKey(name, ver) => keys::update(ctx, &name, ver.as_deref(), body).await,
            Route::DeleteKey(name) => delete::<Key>(ctx, &name).await,
            Route::ListKeyVersions(name) => list_versions::<Key>(ctx, &name),
            Route::ListCertificates => list::<Cert>(ctx),
            Route::ImportCertificate(name) => certificates::import(ctx, &name, body).await,
            Route::CreateCertificate(name) => certificates::create(ctx, &name, body).await,
            Route::GetPending(name) => certificates::pending(ctx, &name),
            Route::GetPolicy(name) => certificates::policy(ctx, &name),
            Route::GetCertificate(name, ver) => certificates::get(ctx, &name, ver.as_deref()),
            Route::UpdateCertificate(name, ver) => {
                certificates::update(ctx, &name, ver.as_deref(), body).await
            }
            Route::DeleteCertificate(name) => delete::<Cert>(ctx, &name).await,
            Route::ListCertificateVersions(name) => list_versions::<Cert>(ctx, &name),
            Route::GetDeleted(kind, name) => deleted::get(ctx, kind, &name),
            Route::Purge(kind, name) => deleted::purge(ctx, kind, &name).await,
            Route::Recover(kind, name) => deleted::recover(ctx, kind, &name).await,
        }
    }
}

fn deleted_kind(collection: &str) -> Option<ObjectKind> {
    match collection {
        "deletedsecrets" => Some(ObjectKind::Secret),
        "deletedkeys" => Some(ObjectKind::Key),
        "deletedcertificates" => Some(ObjectKind::Certificate),
        _ => None,
    }
}
pub(super) fn permission_name(op: &str) -> &'static str {
    match op {
        "GetSecret" => "secrets get",
        "SetSecret" => "secrets set",
        "ListSecrets" | "ListSecretVersions" => "secrets list",
        "GetKey" => "keys get",
        "ListKeys" | "ListKeyVersions" => "keys list",
        "CreateKey" => "keys create",
        "ImportKey" => "keys import",
        "GetCertificate" | "GetCertificatePolicy" | "GetCertificateOperation" => "certificates get",
        "ListCertificates" | "ListCertificateVersions" => "certificates list",
        "ImportCertificate" => "certificates import",
        "CreateCertificate" => "certificates create",
        _ => "the required",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_like_key_vault_paths() {
        let get = Method::GET;
        assert!(
            matches!(Route::parse(&get, "/secrets/a/"), Some(Route::GetSecret(n, None)) if n == "a")
        );
        assert!(
            matches!(Route::parse(&get, "/secrets/a"), Some(Route::GetSecret(n, None)) if n == "a")
        );
        assert!(
            matches!(Route::parse(&get, "/secrets/a/v1"), Some(Route::GetSecret(_, Some(v))) if v == "v1")
        );
        assert!(matches!(
            Route::parse(&get, "/secrets/a/versions"),
            Some(Route::ListSecretVersions(_))
        ));
        assert!(matches!(
            Route::parse(&get, "/secrets"),
            Some(Route::ListSecrets)
        ));
        assert!(matches!(
            Route::parse(&Method::POST, "/keys/k/create"),
            Some(Route::CreateKey(_))
        ));
        assert!(matches!(
            Route::parse(&Method::PUT, "/keys/k"),
            Some(Route::ImportKey(_))
        ));
        assert!(matches!(
            Route::parse(&Method::POST, "/certificates/c/import"),
            Some(Route::ImportCertificate(_))
        ));
        assert!(Route::parse(&get, "/secrets/a/b/c").is_none());
        assert!(Route::parse(&Method::POST, "/secrets/a").is_none());
    }
}

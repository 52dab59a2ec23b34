//! `Debug` and `Drop` for the generated messages that carry secrets.
//!
//! `MountRequest.attributes` holds service-account tokens, `MountRequest.secrets` the
//! nodePublishSecretRef values, `File.contents` the secret itself: `Debug` shows their size only,
//! and dropping a message zeroes them (prost gives plain `String` / `Vec<u8>` fields). The
//! transport's own buffers are outside our reach; what this covers is every copy our code holds.

use std::fmt;

use zeroize::Zeroize;

use crate::v1alpha1::{File, MountRequest};

impl fmt::Debug for MountRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountRequest")
            .field("attributes", &Redacted(self.attributes.len()))
            .field("secrets", &Redacted(self.secrets.len()))
            .field("target_path", &self.target_path)
            .field("permission", &self.permission)
            .field("current_object_version", &self.current_object_version)
            .finish()
    }
}

impl Drop for MountRequest {
    fn drop(&mut self) {
        self.attributes.zeroize();
        self.secrets.zeroize();
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("contents", &Redacted(self.contents.len()))
            .finish()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        self.contents.zeroize();
    }
}

/// Prints `<N bytes redacted>`.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0)
    }
}

#[cfg(test)]
mod tests {
    use crate::v1alpha1::{File, MountRequest, MountResponse};

    #[test]
    fn debug_shows_no_secret() {
        let req = MountRequest {
            attributes: r#"{"csi.storage.k8s.io/serviceAccount.tokens":"eyJtoken"}"#.into(),
            secrets: r#"{"clientsecret":"hunter2"}"#.into(),
            target_path: "/var/lib/kubelet/pods/x/volumes/v".into(),
            permission: "420".into(),
            current_object_version: Vec::new(),
        };
        let resp = MountResponse {
            files: vec![File {
                path: "db-password".into(),
                mode: 0o644,
                contents: b"hunter2".to_vec(),
            }],
            ..Default::default()
        };
        let out = format!("{req:?} {resp:?}");
        assert!(!out.contains("hunter2") && !out.contains("eyJ"), "{out}");
        assert!(
            out.contains("db-password") && out.contains("/var/lib/kubelet"),
            "{out}"
        );
        assert!(out.contains("7 bytes redacted"), "{out}");
    }
}

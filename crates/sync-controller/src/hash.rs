//! `status.syncHash`: the upstream controller's keyed digest of what a sync wrote, computed the
//! same way so a SecretSync moved from the upstream controller is not rewritten needlessly.
//!
//! Input: the Secret data as Go's `json.Marshal(map[string][]byte)` writes it (keys sorted,
//! values standard base64), prefixed with its length and `:`, then
//! `<class uid>|<class generation>|<SecretSync uid>|<SecretSync generation>|<forceSynchronization>`.
//! PBKDF2-HMAC-SHA512, 100,000 rounds, salt = the SecretSync's UID, 32 bytes, hex, prefix `v1:`.
//! Key derivation rather than a plain hash: the data may have little entropy and the rest of
//! the input is public, so a fast hash would let a reader of the status guess the values.

use std::collections::BTreeMap;

use base64::Engine;
use sensitive::SecretBytes;

/// The identities the digest binds the data to.
#[derive(Debug, Clone, Copy)]
pub struct HashInputs<'a> {
    pub class_uid: &'a str,
    pub class_generation: i64,
    pub sync_uid: &'a str,
    pub sync_generation: i64,
    pub force_synchronization: &'a str,
}

/// `v1:<64 hex digits>`.
pub fn sync_hash(data: &BTreeMap<String, SecretBytes>, inputs: HashInputs<'_>) -> String {
    // Go's encoding of map[string][]byte; keys match `^[-._a-zA-Z0-9/]+$` (CRD pattern), so no
    // character needs escaping in either encoder.
    let mut json = Vec::new();
    json.push(b'{');
    for (i, (k, v)) in data.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(
            serde_json::to_string(k)
                .unwrap_or_else(|_| format!("\"{k}\""))
                .as_bytes(),
        );
        json.push(b':');
        json.push(b'"');
        json.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(v.expose())
                .as_bytes(),
        );
        json.push(b'"');
    }
    json.push(b'}');
    let json = SecretBytes::new(json);
    let mut input = Vec::with_capacity(json.len() + 128);
    input.extend_from_slice(format!("{}:", json.len()).as_bytes());
    input.extend_from_slice(json.expose());
    input.extend_from_slice(
        format!(
            "{}|{}|{}|{}|{}",
            inputs.class_uid,
            inputs.class_generation,
            inputs.sync_uid,
            inputs.sync_generation,
            inputs.force_synchronization
        )
        .as_bytes(),
    );
    let input = SecretBytes::new(input);
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(
        input.expose(),
        inputs.sync_uid.as_bytes(),
        100_000,
        &mut out,
    );
    format!("v1:{}", hex::encode(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(force: &str) -> HashInputs<'_> {
        HashInputs {
            class_uid: "spc-uid",
            class_generation: 1,
            sync_uid: "ss-uid",
            sync_generation: 2,
            force_synchronization: force,
        }
    }

    #[test]
    fn changes_with_data_and_force_and_is_stable() {
        let mut d = BTreeMap::new();
        d.insert("a".to_string(), SecretBytes::new(b"one".to_vec()));
        let h1 = sync_hash(&d, inputs(""));
        assert!(h1.starts_with("v1:") && h1.len() == 3 + 64, "{h1}");
        assert_eq!(h1, sync_hash(&d, inputs("")));
        assert_ne!(h1, sync_hash(&d, inputs("1")));
        d.insert("a".to_string(), SecretBytes::new(b"two".to_vec()));
        assert_ne!(h1, sync_hash(&d, inputs("")));
    }

    /// The same construction computed independently (Python's hashlib.pbkdf2_hmac over the
    /// bytes Go's json.Marshal gives for {"a": "one"}).
    #[test]
    fn matches_an_independent_computation() {
        let mut d = BTreeMap::new();
        d.insert("a".to_string(), SecretBytes::new(b"one".to_vec()));
        assert_eq!(sync_hash(&d, inputs("")), EXPECTED);
    }

    const EXPECTED: &str = "v1:199e928d308c06cdcdd685b7941f6e4229e0bff33b6b747c1310f39ce753ba96";
}

//! Types that hold secret material: bytes and tokens that must never reach a log line, an
//! error, an event or a metric. `Debug` prints only the length; memory is zeroed on drop.

use std::fmt;

use zeroize::Zeroizing;

/// File contents or Secret data from a provider.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([redacted; {} bytes])", self.0.len())
    }
}

/// A string credential (service-account tokens JSON, nodePublishSecretRef values).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_contents() {
        let b = SecretBytes::new(b"hunter2".to_vec());
        let s = SecretString::new("eyJhbGciOi.token".into());
        let out = format!("{b:?} {s:?}");
        assert!(!out.contains("hunter2") && !out.contains("eyJ"), "{out}");
        assert!(out.contains("7 bytes"), "{out}");
    }
}

//! Secret material in memory: file contents and Secret data from providers, client secrets,
//! service-account tokens, access tokens.
//!
//! [`SecretBytes`] and [`SecretString`] zero their memory when dropped and print only their
//! length in `Debug` (there is deliberately no `Display`). Read the value with `expose()` only
//! where it goes onto the wire, into a file or into a Kubernetes Secret.
//!
//! Why not the `secrecy` crate: its boxed secrets implement neither `PartialEq` nor (for byte
//! slices) `Clone`, and the driver compares mounted contents with new ones to decide whether a
//! rotation changed anything, and hands the same bytes to the file writer and the Secret sync.

use std::fmt;

use zeroize::Zeroizing;

/// Secret bytes: zeroed on drop, redacted in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes` (no copy is left behind).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The bytes, for writing them where they belong.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretBytes {
    fn from(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }
}

impl From<SecretString> for SecretBytes {
    fn from(s: SecretString) -> Self {
        // Moves the buffer: `String::into_bytes` reuses the allocation.
        let mut s = s;
        Self::new(std::mem::take(&mut *s.0).into_bytes())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// Secret text: zeroed on drop, redacted in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Takes ownership of `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The text, for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_contents() {
        let b = SecretBytes::new(b"hunter2".to_vec());
        let s = SecretString::new("eyJhbGciOi.token");
        let out = format!("{b:?} {s:?} {:?}", Some(&s));
        assert!(!out.contains("hunter2") && !out.contains("eyJ"), "{out}");
        assert!(out.contains("7 bytes"), "{out}");
        assert_eq!(b.expose(), b"hunter2");
        assert_eq!(s.expose(), "eyJhbGciOi.token");
    }

    #[test]
    fn string_to_bytes_keeps_the_value() {
        let b = SecretBytes::from(SecretString::new("abc"));
        assert_eq!(b.expose(), b"abc");
        assert_eq!(b.len(), 3);
    }
}

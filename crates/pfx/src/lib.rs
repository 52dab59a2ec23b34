//! The workspace's one PKCS#12 (PFX) reader and writer: the Azure provider (PFX → PEM) and the
//! driver (`kubernetes.io/tls` sync from a PFX object) read Key Vault's PFX with it, and the Key
//! Vault emulator imports user PFX files and writes its certificates' backing secrets with it.
//!
//! Why not a high-level crate: Key Vault's PFX use the *zero-length* password without the BMP NUL
//! terminator, which p12-keystore and p12 cannot express (they always append the terminator and
//! fail the MAC), and imports must read legacy files (RC2-40 from Windows and `openssl pkcs12
//! -legacy`). So this crate takes the ASN.1 types and the KDF from RustCrypto's `pkcs12`, `cms`
//! and `x509-cert`, and does the small rest itself:
//!
//! - reading ([`decode_with_password`]; [`decode`] for the empty password): the MAC (HMAC with
//!   SHA-1, SHA-256, SHA-384 or SHA-512) chooses the password encoding, then the bags are
//!   decrypted: pbeWithSHAAnd3-KeyTripleDES-CBC, pbeWithSHAAnd40BitRC2-CBC,
//!   pbeWithSHAAnd128BitRC2-CBC, or PBES2 with PBKDF2 (HMAC-SHA1/256/384/512) and
//!   AES-128/192/256-CBC or DES-EDE3-CBC. The empty password is tried as zero-length (Key Vault, Windows, Java), then
//!   as the terminated empty BMP string (OpenSSL, Go); any other password is UTF-16BE with a NUL
//!   for the PKCS#12 KDF and its UTF-8 bytes for PBKDF2, as OpenSSL does.
//! - writing ([`encode_keyvault`]): Key Vault's own export form.
//!
//! Input is bounded (1 MiB, 600 000 KDF iterations, 256 bags); malformed input yields an error,
//! never a panic. Key bytes are zeroized on drop and never appear in `Debug` or error text.

mod decode;
mod encode;
mod oid;
mod pbe;

pub use decode::{decode, decode_split, decode_split_with_password, decode_with_password};
pub use encode::encode_keyvault;

use zeroize::Zeroizing;

/// Input larger than this is refused (Key Vault PFX are a few KiB).
const MAX_PFX_BYTES: usize = 1 << 20;
/// KDF iteration cap (Key Vault uses 2000, OpenSSL 2048, PBKDF2 guidance up to 600 000): bounds
/// the CPU a hostile file can take.
const MAX_ITERATIONS: i32 = 600_000;
/// Bag count cap.
const MAX_BAGS: usize = 256;

/// Keys and certificates of a PFX, each list in bag order.
#[derive(Default)]
pub struct Decoded {
    /// PKCS#8 `PrivateKeyInfo` DER, as stored.
    pub keys: Vec<Zeroizing<Vec<u8>>>,
    /// X.509 certificate DER.
    pub certs: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Decoded {{ keys: <{} redacted>, certs: {} }}",
            self.keys.len(),
            self.certs.len()
        )
    }
}

/// One item of the PFX, in bag order.
pub enum Pkcs12Item {
    /// A PKCS#8 `PrivateKeyInfo` DER (as stored, attributes included).
    Key(Zeroizing<Vec<u8>>),
    /// An X.509 certificate DER.
    Cert(Vec<u8>),
}

impl std::fmt::Debug for Pkcs12Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(k) => write!(f, "Key(<{} bytes redacted>)", k.len()),
            Self::Cert(c) => write!(f, "Cert({} bytes)", c.len()),
        }
    }
}

/// Why a PFX could not be read or written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Pkcs12Error {
    /// Not DER of a PFX (or of one of its parts).
    #[error("pkcs12: malformed {what}: {reason}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// Parser message.
        reason: String,
    },
    /// The MAC did not verify with the password given.
    #[error(
        "pkcs12: wrong password: the PFX's integrity MAC does not verify with the password given \
         (an empty password is tried both zero-length and NUL-terminated); give the password the \
         PFX was exported with"
    )]
    BadPassword,
    /// An algorithm this crate does not implement.
    #[error("pkcs12: unsupported {what} algorithm {oid}; supported: {supported}")]
    Unsupported {
        /// MAC / encryption / …
        what: &'static str,
        /// The OID.
        oid: String,
        /// What is supported instead.
        supported: &'static str,
    },
    /// A limit was exceeded.
    #[error("pkcs12: {0}")]
    TooLarge(&'static str),
    /// A bag did not decrypt although the MAC verified.
    #[error(
        "pkcs12: a bag does not decrypt (bad padding) although the MAC verified: the file is \
         corrupt, or its bags use another password than its MAC"
    )]
    Decrypt,
    /// The writer could not encode a part.
    #[error("pkcs12: cannot encode {what}: {reason}")]
    Encode {
        /// Which part.
        what: &'static str,
        /// Encoder message.
        reason: String,
    },
}

fn malformed(what: &'static str) -> impl Fn(der::Error) -> Pkcs12Error {
    move |e| Pkcs12Error::Malformed {
        what,
        reason: e.to_string(),
    }
}

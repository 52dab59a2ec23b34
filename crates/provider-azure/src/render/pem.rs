//! PEM exactly as Go's `encoding/pem` writes it (`-----BEGIN T-----\n`, standard base64 in
//! 64-column lines, `-----END T-----\n`, headers `Proc-Type` first then sorted), and a tolerant
//! block reader in the same spirit as Go's `pem.Decode` (skips text between blocks, accepts
//! headers). Hand-written because the strict RFC 7468 crates reject headers and surrounding text,
//! which Key Vault's stored PEM values may carry.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// One PEM block.
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    /// e.g. `CERTIFICATE`, `PRIVATE KEY`.
    pub label: String,
    /// Headers in file order.
    pub headers: Vec<(String, String)>,
    /// Decoded bytes.
    pub der: Vec<u8>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Block({}, {} bytes)", self.label, self.der.len())
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.der);
    }
}

/// Encodes one block without headers.
pub fn encode(label: &str, der: &[u8]) -> String {
    encode_with_headers(label, &[], der)
}

/// Encodes one block as Go's `pem.Encode`.
pub fn encode_with_headers(label: &str, headers: &[(String, String)], der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    if !headers.is_empty() {
        let mut hs: Vec<&(String, String)> = headers.iter().collect();
        hs.sort_by(|a, b| (a.0 != "Proc-Type", &a.0).cmp(&(b.0 != "Proc-Type", &b.0)));
        for (k, v) in hs {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push('\n');
        }
        out.push('\n');
    }
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Every decodable block in `text`, in order. Text outside blocks and malformed blocks are
/// skipped (Go's `pem.Decode` loop behaves the same way).
pub fn decode_all(text: &[u8]) -> Vec<Block> {
    let Ok(s) = std::str::from_utf8(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = find_begin(rest) {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(line_end) = after.find('\n') else {
            break;
        };
        let type_line = after[..line_end].trim_end_matches('\r');
        let Some(label) = type_line.strip_suffix("-----") else {
            rest = &after[line_end..];
            continue;
        };
        let body_start = &after[line_end + 1..];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = body_start.find(&end_marker) else {
            rest = body_start;
            continue;
        };
        let body = &body_start[..end];
        rest = &body_start[end + end_marker.len()..];
        let mut headers = Vec::new();
        let mut b64 = String::new();
        let mut in_headers = true;
        for line in body.lines() {
            let line = line.trim_end_matches('\r');
            if in_headers {
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                    continue;
                }
                in_headers = false;
                if line.trim().is_empty() {
                    continue;
                }
            }
            b64.extend(line.chars().filter(|c| !c.is_ascii_whitespace()));
        }
        if let Ok(der) = STANDARD.decode(b64.as_bytes()) {
            out.push(Block {
                label: label.to_owned(),
                headers,
                der,
            });
        }
        zeroize::Zeroize::zeroize(&mut b64);
    }
    out
}

fn find_begin(s: &str) -> Option<usize> {
    if s.starts_with("-----BEGIN ") {
        return Some(0);
    }
    s.find("\n-----BEGIN ").map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_compatible_encoding() {
        assert_eq!(
            encode("CERTIFICATE", b"test"),
            "-----BEGIN CERTIFICATE-----\ndGVzdA==\n-----END CERTIFICATE-----\n"
        );
        let long = encode("X", &[0u8; 60]);
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 16);
    }

    #[test]
    fn decodes_blocks_with_text_and_headers_round_trip() {
        let text = format!(
            "junk\n{}Bag Attributes\n{}",
            encode("PRIVATE KEY", b"k"),
            encode_with_headers(
                "CERTIFICATE",
                &[("friendlyName".into(), "x".into())],
                b"cert"
            )
        );
        let blocks = decode_all(text.as_bytes());
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "PRIVATE KEY");
        assert_eq!(blocks[1].der, b"cert");
        assert_eq!(
            blocks[1].headers,
            vec![("friendlyName".to_owned(), "x".to_owned())]
        );
        assert!(decode_all(b"-----BEGIN X-----\nnot base64!!\n-----END X-----\n").is_empty());
        assert!(decode_all(b"-----BEGIN X-----\nAAAA\n").is_empty());
        assert!(decode_all(&[0xff, 0xfe]).is_empty());
    }
}

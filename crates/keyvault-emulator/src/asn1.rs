//! A tiny DER writer and reader, just enough for PKCS#12 and PKCS#8 framing.
//!
//! Written by hand on purpose: the RustCrypto `pkcs12` crate is a pre-release (`0.2.0-pre.0`) with
//! no encoder for the bag structures, and the PFX shape Key Vault produces (legacy PBE, encrypted
//! cert bags, MAC over the exact authSafe bytes) is easiest to pin byte by byte with plain TLVs.

// === writer ===

pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const SET: u8 = 0x31;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const OID: u8 = 0x06;
pub(crate) const BMP_STRING: u8 = 0x1e;
/// `[0] EXPLICIT` (constructed, context-specific 0).
pub(crate) const CTX0: u8 = 0xa0;
/// `[0] IMPLICIT OCTET STRING` (primitive, context-specific 0).
pub(crate) const CTX0_PRIM: u8 = 0x80;

pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

pub(crate) fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(SEQUENCE, &parts.concat())
}

pub(crate) fn int(v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut content = bytes[skip..].to_vec();
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    tlv(INTEGER, &content)
}

/// Encodes a dotted OID string known at compile time (all ours are); arcs must be valid.
pub(crate) fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').filter_map(|a| a.parse().ok()).collect();
    let mut content = Vec::new();
    if arcs.len() >= 2 {
        push_base128(&mut content, arcs[0] * 40 + arcs[1]);
        for arc in &arcs[2..] {
            push_base128(&mut content, *arc);
        }
    }
    tlv(OID, &content)
}

fn push_base128(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = vec![(v & 0x7f) as u8];
    v >>= 7;
    while v > 0 {
        tmp.push(0x80 | (v & 0x7f) as u8);
        v >>= 7;
    }
    tmp.reverse();
    out.extend_from_slice(&tmp);
}

pub(crate) fn bmp_string(s: &str) -> Vec<u8> {
    let content: Vec<u8> = s.encode_utf16().flat_map(u16::to_be_bytes).collect();
    tlv(BMP_STRING, &content)
}

// === reader ===

#[derive(Debug, thiserror::Error)]
#[error("malformed DER: {0}")]
pub(crate) struct DerError(pub(crate) &'static str);

/// One decoded TLV: tag, contents, and the whole encoding (for MAC / re-emission).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    pub(crate) content: &'a [u8],
}

/// Reads one TLV from the front of `input`; returns it and the rest.
pub(crate) fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError("unexpected end"))?;
    if tag & 0x1f == 0x1f {
        return Err(DerError("multi-byte tags are not supported"));
    }
    let (&first, rest) = rest.split_first().ok_or(DerError("missing length"))?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 {
            return Err(DerError("indefinite length (BER) is not supported"));
        }
        if n > 4 || rest.len() < n {
            return Err(DerError("length too long"));
        }
        let mut len = 0usize;
        for b in &rest[..n] {
            len = (len << 8) | *b as usize;
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(DerError("length exceeds input"));
    }
    Ok((
        Tlv {
            tag,
            content: &rest[..len],
        },
        &rest[len..],
    ))
}

/// Reads one TLV and checks its tag.
pub(crate) fn expect(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), DerError> {
    let (t, rest) = read(input)?;
    if t.tag != tag {
        return Err(DerError("unexpected tag"));
    }
    Ok((t.content, rest))
}

/// All TLVs inside a constructed value.
pub(crate) fn children(mut content: &[u8]) -> Result<Vec<Tlv<'_>>, DerError> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (t, rest) = read(content)?;
        out.push(t);
        content = rest;
    }
    Ok(out)
}

pub(crate) fn read_uint(content: &[u8]) -> Result<u64, DerError> {
    let trimmed: &[u8] = {
        let skip = content.iter().take_while(|b| **b == 0).count();
        &content[skip..]
    };
    if trimmed.len() > 8 {
        return Err(DerError("integer too large"));
    }
    Ok(trimmed.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64))
}

/// The encoded contents of an OID TLV, for comparing with [`oid`].
pub(crate) fn oid_content(dotted: &str) -> Vec<u8> {
    let full = oid(dotted);
    full[2..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_and_lengths_round_trip() {
        // sha1 = 1.3.14.3.2.26 -> 06 05 2b 0e 03 02 1a
        assert_eq!(
            oid("1.3.14.3.2.26"),
            vec![0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a]
        );
        // pkcs-12 3DES = 1.2.840.113549.1.12.1.3
        assert_eq!(
            oid("1.2.840.113549.1.12.1.3"),
            vec![
                0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03
            ]
        );
        let long = tlv(OCTET_STRING, &[7u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let (t, rest) = read(&long).expect("valid");
        assert_eq!(t.content.len(), 300);
        assert!(rest.is_empty());
        assert_eq!(int(2000), vec![0x02, 0x02, 0x07, 0xd0]);
        assert_eq!(int(128), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(int(0), vec![0x02, 0x01, 0x00]);
        assert_eq!(read_uint(&[0x07, 0xd0]).expect("small"), 2000);
    }

    #[test]
    fn reader_rejects_truncated_and_indefinite() {
        assert!(read(&[0x30]).is_err());
        assert!(read(&[0x30, 0x05, 0x01]).is_err());
        assert!(read(&[0x30, 0x80, 0x00, 0x00]).is_err());
        assert!(read(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
    }
}

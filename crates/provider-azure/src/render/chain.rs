//! Certificate chain ordering by Authority/Subject Key Identifier, as upstream's
//! `--construct-pem-chain`: leaf → intermediates → root; when the walk does not cover every
//! certificate (missing intermediate, unrelated certificates, no key identifiers) the input order
//! is kept and a warning logged. Only AKI/SKI are compared (no name matching, no signatures).

use der::Decode;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};

/// Chain construction failed outright (upstream returns these as errors).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// A certificate did not parse.
    #[error("failed to parse certificate: {0}")]
    Parse(String),
    /// Every certificate is someone's parent.
    #[error("no leaf found")]
    NoLeaf,
    /// Parent links loop.
    #[error("constructing chain resulted in cycle")]
    Cycle,
}

/// The outcome of ordering.
#[derive(Debug, PartialEq, Eq)]
pub enum Ordered {
    /// Indices into the input, leaf first.
    Chain(Vec<usize>),
    /// Not a complete chain: keep the input as it is.
    Incomplete,
}

/// Orders DER certificates.
pub fn order(certs: &[Vec<u8>]) -> Result<Ordered, ChainError> {
    let mut ids = Vec::with_capacity(certs.len());
    for der in certs {
        let c = Certificate::from_der(der).map_err(|e| ChainError::Parse(e.to_string()))?;
        let tbs = c.tbs_certificate();
        let aki = tbs
            .get_extension::<AuthorityKeyIdentifier>()
            .ok()
            .flatten()
            .and_then(|(_, a)| a.key_identifier.map(|k| k.as_bytes().to_vec()));
        let ski = tbs
            .get_extension::<SubjectKeyIdentifier>()
            .ok()
            .flatten()
            .map(|(_, s)| s.0.as_bytes().to_vec());
        ids.push((aki, ski));
    }
    let n = certs.len();
    let mut parent: Vec<Option<usize>> = vec![None; n];
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            let (aki, _) = &ids[i];
            let (_, ski) = &ids[j];
            if aki.is_none() && ski.is_none() {
                continue;
            }
            if aki == ski {
                parent[i] = Some(j);
                break;
            }
        }
    }
    let is_parent = |k: usize| parent.contains(&Some(k));
    let leaf = (0..n).find(|k| !is_parent(*k)).ok_or(ChainError::NoLeaf)?;
    let mut walk = vec![leaf];
    let mut cur = leaf;
    while let Some(p) = parent[cur] {
        if walk.len() > n {
            return Err(ChainError::Cycle);
        }
        walk.push(p);
        cur = p;
    }
    if walk.len() > n {
        return Err(ChainError::Cycle);
    }
    if walk.len() != n {
        tracing::warn!(
            "certificate chain is not complete due to missing intermediate/root certificates in the cert from key vault"
        );
        return Ok(Ordered::Incomplete);
    }
    Ok(Ordered::Chain(walk))
}

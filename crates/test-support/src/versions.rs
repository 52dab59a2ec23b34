//! The pinned peer versions, read from `scripts/versions.env` (the one place they are written).

const VERSIONS_ENV: &str = include_str!("../../../scripts/versions.env");

/// The value of `NAME=value` in `scripts/versions.env`.
///
/// # Panics
/// When the name is not in the file: that is a bug in the caller, not an input error.
pub fn get(name: &str) -> &'static str {
    VERSIONS_ENV
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("{name} is not pinned in scripts/versions.env"))
}

/// Kubernetes version of the kube-apiserver peer, e.g. `v1.34.4`.
pub fn kubernetes() -> &'static str {
    get("KUBERNETES_VERSION")
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_pin_is_readable() {
        assert!(super::kubernetes().starts_with("v1."));
        assert!(super::get("ETCD_VERSION").starts_with("v3."));
        assert!(super::get("CSI_TEST_VERSION").starts_with("v5."));
    }
}

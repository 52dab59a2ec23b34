//! `--endpoint` values: `unix://…` or `tcp://…`, by the rules both upstream binaries share
//! (`ParseEndpoint` in the Go driver and provider): the scheme is case-insensitive, the rest
//! must not be empty, and a unix path is made absolute (`unix://tmp/csi.sock` is
//! `/tmp/csi.sock`, the driver's default).

use std::fmt;
use std::path::PathBuf;

/// Where a gRPC server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket path (absolute).
    Unix(PathBuf),
    /// A TCP address as given: `host:port`, or `:port` for every address (see
    /// [`Endpoint::tcp_listen_addr`]).
    Tcp(String),
}

/// An `--endpoint` that is neither `unix://…` nor `tcp://…`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {0:?}: give unix:///path/to.sock or tcp://host:port")]
pub struct EndpointError(pub String);

/// Parses `unix://…` / `tcp://…`.
pub fn parse_endpoint(ep: &str) -> Result<Endpoint, EndpointError> {
    let err = || EndpointError(ep.to_owned());
    let (scheme, rest) = ep.split_once("://").ok_or_else(err)?;
    if rest.is_empty() {
        return Err(err());
    }
    if scheme.eq_ignore_ascii_case("unix") {
        let path = if rest.starts_with('/') {
            PathBuf::from(rest)
        } else {
            PathBuf::from(format!("/{rest}"))
        };
        return Ok(Endpoint::Unix(path));
    }
    if scheme.eq_ignore_ascii_case("tcp") {
        return Ok(Endpoint::Tcp(rest.to_owned()));
    }
    Err(err())
}

impl Endpoint {
    /// The address to bind for a TCP endpoint: `:port` (Go's "every address") becomes
    /// `0.0.0.0:port`; anything else is passed on as given.
    pub fn tcp_listen_addr(addr: &str) -> String {
        if addr.starts_with(':') {
            format!("0.0.0.0{addr}")
        } else {
            addr.to_owned()
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_binaries_inputs() {
        let unix = |p: &str| Ok(Endpoint::Unix(p.into()));
        // The driver's default and the charts' values.
        assert_eq!(parse_endpoint("unix://tmp/csi.sock"), unix("/tmp/csi.sock"));
        assert_eq!(
            parse_endpoint("unix:///csi/csi.sock"),
            unix("/csi/csi.sock")
        );
        assert_eq!(
            parse_endpoint("unix:///tmp/azure.sock"),
            unix("/tmp/azure.sock")
        );
        assert_eq!(
            parse_endpoint("unix:///provider/azure.sock"),
            unix("/provider/azure.sock")
        );
        // Upstream compares the scheme case-insensitively.
        assert_eq!(parse_endpoint("UNIX://tmp/a.sock"), unix("/tmp/a.sock"));
        assert_eq!(
            parse_endpoint("Tcp://127.0.0.1:10000"),
            Ok(Endpoint::Tcp("127.0.0.1:10000".into()))
        );
        assert_eq!(
            parse_endpoint("tcp://:7777"),
            Ok(Endpoint::Tcp(":7777".into()))
        );
        assert_eq!(
            parse_endpoint("tcp://localhost:7777"),
            Ok(Endpoint::Tcp("localhost:7777".into()))
        );
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "bad",
            "unix://",
            "tcp://",
            "udp:///provider/azure.sock",
            "/tmp/a.sock",
        ] {
            let e = parse_endpoint(bad).expect_err(bad).to_string();
            assert!(
                e.starts_with("invalid endpoint") && e.contains("unix://"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn listen_addr_and_display() {
        assert_eq!(Endpoint::tcp_listen_addr(":7777"), "0.0.0.0:7777");
        assert_eq!(
            Endpoint::tcp_listen_addr("127.0.0.1:7777"),
            "127.0.0.1:7777"
        );
        assert_eq!(
            Endpoint::Unix("/a.sock".into()).to_string(),
            "unix:///a.sock"
        );
        assert_eq!(Endpoint::Tcp(":1".into()).to_string(), "tcp://:1");
    }
}

//! Name resolution for the client: the system resolver, with failures typed
//! so they are classified as `dns_resolution` without reading messages, and
//! `.invalid` names (RFC 6761: they never resolve) refused at once, without
//! asking the network.

use std::fmt;
use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A host name that did not resolve.
#[derive(Debug)]
pub struct DnsFailure {
    /// The name.
    pub name: String,
    /// Why, as the system resolver said.
    pub reason: String,
}

impl fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot resolve {}: {}", self.name, self.reason)
    }
}

impl std::error::Error for DnsFailure {}

/// The resolver [`ResilientClient`](crate::ResilientClient) installs in its reqwest client.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let host = name.trim_end_matches('.').to_owned();
            if host == "invalid" || host.ends_with(".invalid") {
                return Err(DnsFailure {
                    name,
                    reason: "names under .invalid never resolve (RFC 6761)".into(),
                }
                .into());
            }
            let found = tokio::net::lookup_host((host.as_str(), 0)).await;
            match found {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    if addrs.is_empty() {
                        return Err(DnsFailure {
                            name,
                            reason: "no address".into(),
                        }
                        .into());
                    }
                    Ok(Box::new(addrs.into_iter()) as Addrs)
                }
                Err(e) => Err(DnsFailure {
                    name,
                    reason: e.to_string(),
                }
                .into()),
            }
        })
    }
}

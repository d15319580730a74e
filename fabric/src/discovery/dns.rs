//! DNS discovery: the A/AAAA records of a name (a Kubernetes headless Service lists one per
//! ready pod) with a configured port, or SRV records (each target's addresses with the
//! record's port), resolved again every `interval_ms` without caching. A name with no
//! records in two answers in a row means no workers (one empty answer, from a nameserver
//! restarting, drains nothing); a resolution that fails (timeout, SERVFAIL) keeps the last
//! set.

use std::future::Future;
use std::net::SocketAddr;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use tracing::{info, warn};

use super::Discovered;
use crate::config::{DiscoveryKind, DiscoverySource, DnsTarget};

/// A resolver for `nameserver`, or the system's; answers are never cached (every round asks).
fn resolver(nameserver: Option<SocketAddr>) -> Result<TokioResolver, NetError> {
    let mut builder = match nameserver {
        Some(ns) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = ns.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = ns.port();
            let server = NameServerConfig::new(ns.ip(), true, vec![udp, tcp]);
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![server]),
                TokioRuntimeProvider::default(),
            )
        }
        None => Resolver::builder_tokio()?,
    };
    builder.options_mut().cache_size = 0;
    builder.build()
}

/// The addresses `target` resolves to now, sorted; empty when the name has no records.
async fn resolve(r: &TokioResolver, target: &DnsTarget) -> Result<Vec<SocketAddr>, NetError> {
    let none = |e: NetError| {
        if e.is_no_records_found() || e.is_nx_domain() {
            Ok(Vec::new())
        } else {
            Err(e)
        }
    };
    let mut out = Vec::new();
    match target {
        DnsTarget::Host { host, port } => match r.lookup_ip(host.as_str()).await {
            Ok(ips) => out.extend(ips.iter().map(|ip| SocketAddr::new(ip, *port))),
            Err(e) => return none(e),
        },
        DnsTarget::Srv(name) => {
            let srv = match r.srv_lookup(name.as_str()).await {
                Ok(l) => l,
                Err(e) => return none(e),
            };
            for record in srv.answers() {
                let RData::SRV(s) = &record.data else {
                    continue;
                };
                match r.lookup_ip(s.target.clone()).await {
                    Ok(ips) => out.extend(ips.iter().map(|ip| SocketAddr::new(ip, s.port))),
                    Err(e) if e.is_no_records_found() || e.is_nx_domain() => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Resolves `source` every `interval` and hands each new result to `found` (which says
/// whether it was applied; a set not applied is sent again); runs until dropped.
pub(super) async fn run<F, Fut>(source: &DiscoverySource, found: F)
where
    F: Fn(Vec<Discovered>) -> Fut,
    Fut: Future<Output = bool>,
{
    let DiscoveryKind::Dns {
        target,
        resolver: ns,
    } = &source.kind
    else {
        return;
    };
    let r = super::retrying(&source.name, "set up a DNS resolver", || async {
        resolver(*ns)
    })
    .await;
    let region = source.region.clone().unwrap_or_default();
    let mut failing = false;
    let mut last: Option<Vec<SocketAddr>> = None;
    // Empty answers in a row: a set is emptied only on the second (a nameserver restarting
    // can answer NXDOMAIN once; one answer must not drain a whole pool).
    let mut empties = 0u32;
    loop {
        match resolve(&r, target).await {
            Ok(addrs) => {
                if failing {
                    info!(source = %source.name, "discovery: DNS answers again");
                    failing = false;
                }
                empties = if addrs.is_empty() { empties + 1 } else { 0 };
                let had = last.as_ref().is_some_and(|l| !l.is_empty());
                if empties == 1 && had {
                    warn!(source = %source.name, "discovery: DNS answered no records; emptying the set if the next answer agrees");
                    tokio::time::sleep(source.interval).await;
                    continue;
                }
                if last.as_ref() != Some(&addrs) {
                    info!(source = %source.name, workers = addrs.len(), "discovery: DNS set changed");
                    let workers = (addrs.iter())
                        .map(|a| {
                            Discovered::new(source, &a.to_string(), &region, &source.models, *a)
                        })
                        .collect();
                    if found(workers).await {
                        last = Some(addrs);
                    }
                }
            }
            Err(e) => {
                if !failing {
                    warn!(source = %source.name, "discovery: DNS resolution failed, keeping the last set: {e}");
                    failing = true;
                }
            }
        }
        tokio::time::sleep(source.interval).await;
    }
}

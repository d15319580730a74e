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

/// What one DNS answer does to a source's set.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Keep the set: a failed resolution, or the first empty answer after a non-empty set.
    Hold,
    /// The answer is the set already applied.
    Same,
    /// Apply the answer.
    Apply,
}

/// The DNS source's debounce: a set is emptied only on the second empty answer in a row (a
/// nameserver restarting can answer NXDOMAIN once; one answer must not drain a whole pool),
/// and a failed resolution keeps the last set.
#[derive(Debug, Default)]
struct Debounce {
    empties: u32,
}

impl Debounce {
    /// What `answer` (`None`: the resolution failed) does, the set last applied being `last`.
    fn step(&mut self, last: Option<&Vec<SocketAddr>>, answer: Option<&Vec<SocketAddr>>) -> Step {
        let Some(addrs) = answer else {
            return Step::Hold;
        };
        self.empties = if addrs.is_empty() {
            self.empties + 1
        } else {
            0
        };
        if self.empties == 1 && last.is_some_and(|l| !l.is_empty()) {
            Step::Hold
        } else if last == Some(addrs) {
            Step::Same
        } else {
            Step::Apply
        }
    }
}

/// Resolves `source` every `interval` and hands each new result to `found` (which says
/// whether it was applied; a set not applied is sent again); runs until dropped.
pub(super) async fn run<F, Fut>(source: &DiscoverySource, stats: &super::SourceStats, found: F)
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
    let r = super::retrying(&source.name, stats, "set up a DNS resolver", || async {
        resolver(*ns)
    })
    .await;
    let region = source.region.clone().unwrap_or_default();
    let mut failing = false;
    let mut last: Option<Vec<SocketAddr>> = None;
    let mut debounce = Debounce::default();
    loop {
        let answer = match resolve(&r, target).await {
            Ok(addrs) => {
                stats.answered();
                if failing {
                    info!(source = %source.name, "discovery: DNS answers again");
                    failing = false;
                }
                Some(addrs)
            }
            Err(e) => {
                stats.failed();
                if !failing {
                    warn!(source = %source.name, "discovery: DNS resolution failed, keeping the last set: {e}");
                    failing = true;
                }
                None
            }
        };
        match (debounce.step(last.as_ref(), answer.as_ref()), answer) {
            (Step::Apply, Some(addrs)) => {
                info!(source = %source.name, workers = addrs.len(), "discovery: DNS set changed");
                let workers = (addrs.iter())
                    .map(|a| Discovered::new(source, &a.to_string(), &region, &source.models, *a))
                    .collect();
                if found(workers).await {
                    last = Some(addrs);
                }
            }
            (Step::Hold, Some(_)) => {
                warn!(source = %source.name, "discovery: DNS answered no records; emptying the set if the next answer agrees");
            }
            _ => {}
        }
        tokio::time::sleep(source.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_empty_answer_or_a_failure_drains_nothing() {
        let a: Vec<SocketAddr> = vec!["10.0.0.1:5433".parse().unwrap()];
        let none = Vec::new();
        let mut d = Debounce::default();
        // The first answer, empty or not, is applied.
        assert_eq!(d.step(None, Some(&a)), Step::Apply);
        assert_eq!(d.step(Some(&a), Some(&a)), Step::Same);
        // A failed resolution keeps the set.
        assert_eq!(d.step(Some(&a), None), Step::Hold);
        // One empty answer holds; the records coming back reset the count.
        assert_eq!(d.step(Some(&a), Some(&none)), Step::Hold);
        assert_eq!(d.step(Some(&a), Some(&a)), Step::Same);
        assert_eq!(d.step(Some(&a), Some(&none)), Step::Hold);
        // A failure in between does not reset it: two empty answers in a row empty the set.
        assert_eq!(d.step(Some(&a), None), Step::Hold);
        assert_eq!(d.step(Some(&a), Some(&none)), Step::Apply);
        assert_eq!(d.step(Some(&none), Some(&none)), Step::Same);
        let mut fresh = Debounce::default();
        assert_eq!(
            fresh.step(None, Some(&none)),
            Step::Apply,
            "nothing to drain"
        );
    }
}

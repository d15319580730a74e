//! `[[discovery]]`: worker sources beside the static `[[worker]]` list. Each source keeps a
//! set of workers of one region (Kubernetes: per endpoint, from labels) up to date; the edge
//! recomposes its topology whenever a set changes (`edge::reload`).
//!
//! ```toml
//! [[discovery]]
//! name = "seoul-pool"          # prefix of the discovered workers' names
//! kind = "dns"                 # A/AAAA of `host` (with `port`), or SRV records of `srv`
//! host = "workers.seoul.svc.cluster.local"
//! port = 5433
//! region = "seoul"
//! models = ["llama-3-8b"]
//! pin = "worker-cert.pem"      # or [upstream] ca
//! # resolver = "10.96.0.10:53" # default: the system's (/etc/resolv.conf)
//! # interval_ms = 5000         # re-resolved this often
//!
//! [[discovery]]
//! name = "frankfurt-k8s"
//! kind = "kubernetes"          # EndpointSlices of a Service
//! namespace = "inference"
//! service = "meridian-workers" # label kubernetes.io/service-name
//! port_name = "meridian"       # the slice port to use (default: the first UDP port)
//! region = "frankfurt"         # slices labelled meridian.io/region otherwise are skipped
//! models = ["llama-3-8b"]      # unless the slice is labelled meridian.io/model
//! # kubeconfig = "kubeconfig.yaml" # default: in-cluster service account, then $KUBECONFIG
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ctx::Ctx;
use super::UpstreamTrust;

/// Default interval between DNS resolutions of a source.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// Shortest interval between DNS resolutions of a source, ms.
const MIN_DISCOVERY_INTERVAL_MS: u64 = 50;

/// `[[discovery]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub name: Spanned<String>,
    pub kind: Spanned<String>,
    pub region: Option<Spanned<String>>,
    pub models: Option<Spanned<Vec<String>>>,
    pub weight: Option<Spanned<u64>>,
    pub server_name: Option<String>,
    pub pin: Option<Spanned<String>>,
    pub interval_ms: Option<Spanned<u64>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<u64>>,
    pub srv: Option<Spanned<String>>,
    pub resolver: Option<Spanned<String>>,
    pub namespace: Option<Spanned<String>>,
    pub service: Option<Spanned<String>>,
    pub port_name: Option<Spanned<String>>,
    pub kubeconfig: Option<Spanned<String>>,
}

/// What DNS records a source follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsTarget {
    /// A and AAAA records of `host`, each address with `port` (a headless Service).
    Host {
        /// The name resolved.
        host: String,
        /// The workers' UDP port.
        port: u16,
    },
    /// SRV records of this name: each target's addresses with the record's port.
    Srv(String),
}

/// Where a source finds its workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryKind {
    /// DNS, re-resolved every `interval`.
    Dns {
        /// The records followed.
        target: DnsTarget,
        /// The nameserver; `None`: the system's.
        resolver: Option<SocketAddr>,
    },
    /// A Service's EndpointSlices, watched.
    Kubernetes {
        /// The namespace.
        namespace: String,
        /// The Service (slices labelled `kubernetes.io/service-name`).
        service: String,
        /// The slice port to use; `None`: the first UDP port.
        port_name: Option<String>,
        /// A kubeconfig file; `None`: in-cluster config, then `$KUBECONFIG`.
        kubeconfig: Option<PathBuf>,
    },
}

/// One validated discovery source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoverySource {
    /// Unique name; discovered workers are named `<name>/<pod or address>`.
    pub name: String,
    /// Where the workers come from.
    pub kind: DiscoveryKind,
    /// Region of the workers (Kubernetes: without it, the slices' `meridian.io/region` label;
    /// with it, slices labelled with another region are skipped).
    pub region: Option<String>,
    /// Models they serve (Kubernetes: unless labelled `meridian.io/model`).
    pub models: Vec<String>,
    /// Their weight on the ring.
    pub weight: u32,
    /// TLS server name to verify.
    pub server_name: String,
    /// How their certificates are trusted.
    pub trust: UpstreamTrust,
    /// How often DNS is resolved again.
    pub interval: Duration,
}

impl RawDiscovery {
    /// The keys of the other kind that are set (they would have no effect), with their
    /// spans.
    fn foreign_keys(&self, kind: &str) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let span = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.span());
        let keys = match kind {
            "dns" => vec![
                ("namespace", span(&self.namespace)),
                ("service", span(&self.service)),
                ("port_name", span(&self.port_name)),
                ("kubeconfig", span(&self.kubeconfig)),
            ],
            _ => vec![
                ("interval_ms", self.interval_ms.as_ref().map(|v| v.span())),
                ("host", span(&self.host)),
                ("port", self.port.as_ref().map(|v| v.span())),
                ("srv", span(&self.srv)),
                ("resolver", span(&self.resolver)),
            ],
        };
        (keys.into_iter())
            .filter_map(|(k, s)| Some((k, s?)))
            .collect()
    }
}

impl Ctx<'_> {
    /// Validates the `[[discovery]]` tables; `regions` are the configured region names,
    /// `ca` the `[upstream] ca`.
    pub(super) fn discovery(
        &mut self,
        raw: &[Spanned<RawDiscovery>],
        regions: &[String],
        ca: Option<&Spanned<String>>,
    ) -> Vec<DiscoverySource> {
        let mut names = std::collections::HashSet::new();
        let mut out = Vec::new();
        for d in raw {
            let span = d.span();
            let d = d.get_ref();
            let name = d.name.get_ref().clone();
            self.name(&d.name, "discovery name");
            if !names.insert(name.clone()) {
                self.err(Some(d.name.span()), format!("duplicate discovery `{name}`"));
            }
            let region = d.region.as_ref().map(|r| {
                if !regions.contains(r.get_ref()) {
                    self.err(
                        Some(r.span()),
                        format!("discovery `{name}` is in unknown region `{}`", r.get_ref()),
                    );
                }
                r.get_ref().clone()
            });
            let models = match &d.models {
                Some(_) => self.models(d.models.as_ref(), span.clone()),
                None => Vec::new(),
            };
            let required = |cx: &mut Self, v: Option<&Spanned<String>>, key: &str| match v {
                Some(v) => Some(v.get_ref().clone()),
                None => {
                    cx.err(
                        Some(span.clone()),
                        format!("discovery `{name}` ({}) needs `{key}`", d.kind.get_ref()),
                    );
                    None
                }
            };
            let kind_name = d.kind.get_ref().as_str();
            if matches!(kind_name, "dns" | "kubernetes") {
                for (key, at) in d.foreign_keys(kind_name) {
                    self.err(
                        Some(at),
                        format!(
                            "discovery `{name}`: `{key}` has no effect for kind = \"{kind_name}\""
                        ),
                    );
                }
            }
            let kind = match kind_name {
                "dns" => {
                    if region.is_none() {
                        self.err(
                            Some(span.clone()),
                            format!("discovery `{name}` (dns) needs `region`"),
                        );
                    }
                    if models.is_empty() {
                        self.err(
                            Some(span.clone()),
                            format!("discovery `{name}` (dns) needs `models`"),
                        );
                    }
                    let target = match (&d.srv, &d.host) {
                        (Some(srv), None) => {
                            if let Some(port) = &d.port {
                                self.err(Some(port.span()), format!("discovery `{name}`: `port` has no effect with `srv` (the records name the ports)"));
                            }
                            DnsTarget::Srv(srv.get_ref().clone())
                        }
                        (None, Some(host)) => {
                            if d.port.is_none() {
                                self.err(
                                    Some(span.clone()),
                                    format!("discovery `{name}`: `host` needs `port`"),
                                );
                            }
                            DnsTarget::Host {
                                host: host.get_ref().clone(),
                                port: self.count(d.port.as_ref(), "port", 1..65536, 0) as u16,
                            }
                        }
                        _ => {
                            self.err(Some(span.clone()), format!("discovery `{name}` (dns) needs exactly one of `host` (with `port`) and `srv`"));
                            DnsTarget::Srv(String::new())
                        }
                    };
                    let resolver = d
                        .resolver
                        .as_ref()
                        .map(|r| self.addr(Some(r), "127.0.0.1:53"));
                    DiscoveryKind::Dns { target, resolver }
                }
                "kubernetes" => DiscoveryKind::Kubernetes {
                    namespace: required(self, d.namespace.as_ref(), "namespace")
                        .unwrap_or_default(),
                    service: required(self, d.service.as_ref(), "service").unwrap_or_default(),
                    port_name: d.port_name.as_ref().map(|p| p.get_ref().clone()),
                    kubeconfig: d.kubeconfig.as_ref().map(|k| self.file(k, "kubeconfig")),
                },
                other => {
                    self.err(
                        Some(d.kind.span()),
                        format!("unknown discovery kind `{other}` (dns, kubernetes)"),
                    );
                    continue;
                }
            };
            let trust = self.trust(
                d.pin.as_ref(),
                ca,
                &format!("discovery `{name}`"),
                span.clone(),
            );
            out.push(DiscoverySource {
                name,
                kind,
                region,
                models,
                weight: self.count(d.weight.as_ref(), "weight", 1..1001, 1) as u32,
                server_name: d.server_name.clone().unwrap_or_else(|| "localhost".into()),
                trust,
                interval: self.millis_min(
                    d.interval_ms.as_ref(),
                    "interval_ms",
                    MIN_DISCOVERY_INTERVAL_MS,
                    3_600_000,
                    DEFAULT_DISCOVERY_INTERVAL,
                ),
            });
        }
        out
    }
}

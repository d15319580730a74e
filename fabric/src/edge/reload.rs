//! Hot reload of a running edge: a new, already validated config becomes the next topology
//! generation (`route::topology`), published with one RCU swap of the routing table.
//! Requests in flight keep the decisions they hold and finish; their later attempts stay
//! inside the residency they were first routed under (`route::Pinned`). Workers that left
//! are drained: no new requests, then their connections close once this edge's requests on
//! them ended. New workers are connected to. Tenants whose limits did not change keep their
//! limit state. A new certificate, or new client transport limits, apply to new client
//! connections. Settings bound at start (listen addresses, buffers, Redis, telemetry) keep
//! their running value until a restart; the report names them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::{EdgeHandle, EdgeShared, ReloadResult, H3_ALPN};
use crate::config::{Config, ConfigErrors, DiscoverySource, EdgeSettings, Members};
use crate::discovery::{Discovered, Sources};
use crate::tls::{Identity, IdentityError};
use crate::transport;

/// What a reload changed.
#[derive(Clone, Debug, Default)]
pub struct ReloadReport {
    /// The generation now running.
    pub generation: u64,
    /// Workers connected to for the first time.
    pub added: Vec<String>,
    /// Workers drained (left the topology, or changed address, trust or upstream settings).
    pub retired: Vec<String>,
    /// Workers kept with their connections and health.
    pub kept: usize,
    /// Settings that changed in the file but keep their running value until a restart.
    pub restart_required: Vec<&'static str>,
}

/// Why a validated config could not be applied; the running config stays.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new `[tls]` certificate or key is unusable: fix the files and reload again.
    #[error("the new edge certificate cannot be used: {0}")]
    Identity(#[from] IdentityError),
}

/// The quinn server config of the client-facing endpoint for `config`: its certificate,
/// ALPNs (`meridian/1`, and `h3` with the HTTP front door) and client transport tuning.
pub(super) fn server_config(
    config: &Config,
    identity: &Identity,
    h3: bool,
) -> Result<quinn::ServerConfig, IdentityError> {
    let mut t = transport::transport(config.edge.max_streams_per_connection);
    transport::client_facing(&mut t, &config.edge);
    let alpn: &[&[u8]] = if h3 {
        &[meridian_protocol::ALPN, H3_ALPN]
    } else {
        &[meridian_protocol::ALPN]
    };
    let mut server = identity.server_config(alpn, t)?;
    server.migration(config.edge.migration);
    Ok(server)
}

/// ALPN of the HTTPS front door.
pub(super) const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The HTTPS front door's TLS config for `config` (`None` without `[edge] http_tls`).
pub(super) fn http_tls(
    config: &Config,
    identity: &Identity,
) -> Result<Option<Arc<rustls::ServerConfig>>, IdentityError> {
    if !config.edge.http_tls {
        return Ok(None);
    }
    Ok(Some(Arc::new(
        identity.rustls_config(HTTP_ALPN, None, true)?,
    )))
}

/// The bytes of `config`'s certificate and key files (empty for a development identity, or
/// while a file cannot be read — which then fails the reload with the file's error). What
/// `meridian edge` watches beside its config file.
pub fn certificate_bytes(config: &Config) -> Vec<u8> {
    match &config.edge.tls {
        crate::config::ServerTls::Files { cert, key } => [cert, key]
            .iter()
            .flat_map(|f| std::fs::read(f).unwrap_or_default())
            .collect(),
        crate::config::ServerTls::Dev { .. } => Vec::new(),
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a reload from `a` to `b` applies: whether the client-facing server config must be
/// rebuilt (certificate, transport), and the changed settings that keep their running value
/// until a restart. Every `[edge]` field is named once, so a new one cannot be left out; those
/// marked live are read per request or per connection and apply at once.
fn changes(a: &Config, b: &Config) -> (bool, Vec<&'static str>) {
    let EdgeSettings {
        // Live.
        default_area: _,
        max_prompt_bytes: _,
        handshake_timeout: _,
        validate_addresses_above: _,
        intake_timeout: _,
        upstream_stall_timeout: _,
        resume_buffer_bytes: _,
        http_resumable_models: _,
        watch_config: _,
        // Live for QUIC (the accept loop); the HTTP front door's semaphore is sized at start.
        max_connections,
        // The client-facing server config.
        tls,
        max_streams_per_connection,
        send_fairness,
        gso,
        stream_receive_window,
        keep_alive,
        initial_rtt,
        ack_eliciting_threshold,
        migration,
        // Bound at start.
        listen,
        pop,
        http,
        http_tenant,
        alt_svc_port,
        http_tls,
        admin,
        admin_token_env,
        max_buffered_bytes,
        resume_buffer_total_bytes,
    } = &a.edge;
    let y = &b.edge;
    let server = *tls != y.tls
        || *max_streams_per_connection != y.max_streams_per_connection
        || *send_fairness != y.send_fairness
        || *gso != y.gso
        || *stream_receive_window != y.stream_receive_window
        || *keep_alive != y.keep_alive
        || *initial_rtt != y.initial_rtt
        || *ack_eliciting_threshold != y.ack_eliciting_threshold
        || *migration != y.migration;
    let checks = [
        (*listen != y.listen, "[edge] listen"),
        (*pop != y.pop, "[edge] pop"),
        (*http != y.http, "[edge] http"),
        (*http_tenant != y.http_tenant, "[edge] http_tenant"),
        (*alt_svc_port != y.alt_svc_port, "[edge] alt_svc_port"),
        (*http_tls != y.http_tls, "[edge] http_tls"),
        (*admin != y.admin, "[edge] admin"),
        (
            *admin_token_env != y.admin_token_env,
            "[edge] admin_token_env",
        ),
        (
            *max_buffered_bytes != y.max_buffered_bytes,
            "[edge] max_buffered_bytes",
        ),
        (
            *resume_buffer_total_bytes != y.resume_buffer_total_bytes,
            "[edge] resume_buffer_total_bytes",
        ),
        (
            *max_connections != y.max_connections && http.is_some(),
            "[edge] max_connections of the HTTP front door (QUIC connections use the new value)",
        ),
        (a.shared_limits != b.shared_limits, "[limits]"),
        (a.telemetry != b.telemetry, "[telemetry]"),
        (a.quic_lb != b.quic_lb, "[quic_lb]"),
        (
            a.upstream.connections_per_worker != b.upstream.connections_per_worker,
            "[upstream] connections_per_worker (workers added from now on get the new number)",
        ),
    ];
    let restart = (checks.into_iter())
        .filter(|(changed, _)| *changed)
        .map(|(_, name)| name)
        .collect();
    (server, restart)
}

/// Why a reload did not apply; the running config stays.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadFailure {
    /// The file is invalid: every problem with its `file:line:col`.
    #[error("invalid config, the running one stays:\n{0}")]
    Invalid(#[from] ConfigErrors),
    /// The file is valid but could not be applied.
    #[error(transparent)]
    Apply(#[from] ReloadError),
}

/// What the running topology is made of: the config file's, plus the workers each
/// discovery source found (`[[discovery]]`). Held by the edge under one lock, so file
/// reloads and discovery updates apply one at a time, each on top of the latest other.
#[derive(Debug)]
pub(crate) struct Composition {
    /// The last config file applied.
    pub base: Arc<Config>,
    /// Per discovery source, the workers it found.
    pub found: BTreeMap<String, Vec<Discovered>>,
    /// The discovery sources running (the base's `[[discovery]]`).
    pub sources: Sources,
    /// Discovered workers left out of the last composition, and why (each warned about
    /// once, not on every recomposition).
    ignored: BTreeMap<String, String>,
}

impl Composition {
    pub(crate) fn new(base: Arc<Config>) -> Self {
        Composition {
            base,
            found: BTreeMap::new(),
            sources: Sources::default(),
            ignored: BTreeMap::new(),
        }
    }

    /// The config to run: the base's static workers, then every discovered worker that
    /// joins under the rules validation applies to the static ones (`config::Members`: a
    /// static worker keeps its name and address) and whose region the base configures.
    fn compose(&mut self) -> Config {
        let mut config = (*self.base).clone();
        let mut members = Members::of(&config);
        let mut ignored = BTreeMap::new();
        for (source, workers) in &self.found {
            for w in workers {
                let why = match w.entry(&self.base) {
                    None => format!("its region `{}` is not configured", w.region),
                    Some(entry) => match members.admit(&entry) {
                        Ok(()) => {
                            config.workers.push(entry);
                            continue;
                        }
                        Err(conflict) => conflict.to_string(),
                    },
                };
                if self.ignored.get(&w.name) != Some(&why) {
                    tracing::warn!(source, worker = %w.name, "discovered worker ignored: {why}");
                }
                ignored.insert(w.name.clone(), why);
            }
        }
        self.ignored = ignored;
        config
    }

    /// Starts and stops discovery sources to match the base's list; forgets what stopped
    /// ones found.
    pub(crate) fn sync_sources(&mut self, edge: &Arc<EdgeShared>) {
        for name in self.sources.sync(&self.base.discovery, edge) {
            self.found.remove(&name);
        }
    }
}

/// Applies `config` (composed) to the running edge; the caller holds the composition lock.
/// `from_file`: a reload of the config file (SIGHUP, a changed file), which reads the
/// certificate files again so a renewed certificate is served; a discovery update does not.
async fn apply(
    shared: &Arc<EdgeShared>,
    config: Config,
    from_file: bool,
) -> Result<ReloadReport, ReloadError> {
    let old = shared.router.config();
    // Everything that can fail is done before anything is published.
    // A reload of the file reads the certificate files again (once: what is compared is
    // what is recorded), and a renewed certificate is served; unchanged files leave the
    // server config (and clients' session tickets) alone.
    let files = from_file.then(|| certificate_bytes(&config));
    let renewed = files
        .as_ref()
        .is_some_and(|f| *f != *lock(&shared.tls_files));
    let (server_changed, restart) = changes(&old, &config);
    let server = if renewed || server_changed {
        let identity = Identity::load(&config.edge.tls)?;
        // `http_tls` itself is bound at start (the listener's protocol): the running listener
        // keeps its setting and gets the new certificate.
        let listening = shared.http_tls.read(|t| t.is_some());
        let https = listening.then(|| identity.rustls_config(HTTP_ALPN, None, true));
        let https = https.transpose()?.map(Arc::new);
        Some((
            server_config(&config, &identity, shared.h3.is_some())?,
            https,
        ))
    } else {
        None
    };
    let config = Arc::new(config);
    let (topo, change) = shared.router.reload(config.clone());
    for w in &change.added {
        shared.upstreams.start(&topo, *w);
    }
    // The router already retired them (no table routes to them): their connections close
    // as their streams end (the connection tasks watch `retired`).
    for (state, entry) in &change.retired {
        tracing::info!(worker = %entry.name, in_flight = state.local_in_flight(), "worker left the topology: draining");
    }
    if let Some((server, https)) = server {
        shared.endpoint.set_server_config(Some(server));
        *lock(&shared.tls_files) = files.unwrap_or_else(|| certificate_bytes(&config));
        if https.is_some() {
            shared.http_tls.store(Arc::new(https));
        }
    }
    Ok(ReloadReport {
        generation: topo.generation,
        added: (change.added.iter())
            .map(|w| topo.config.workers[*w].name.clone())
            .collect(),
        retired: (change.retired.iter())
            .map(|(_, e)| e.name.clone())
            .collect(),
        kept: change.kept,
        restart_required: restart,
    })
}

/// Logs and counts a reload's outcome.
fn record(shared: &EdgeShared, what: &str, r: &Result<ReloadReport, ReloadFailure>) {
    match r {
        // Logged before counted: whoever sees the count finds the log line.
        Ok(report) => {
            tracing::info!(
                what,
                generation = report.generation,
                added = ?report.added,
                retired = ?report.retired,
                kept = report.kept,
                "config reloaded"
            );
            if !report.restart_required.is_empty() {
                tracing::warn!(settings = ?report.restart_required, "changed settings keep their running value until a restart");
            }
            shared.stats.reload(ReloadResult::Applied);
        }
        Err(e) => {
            tracing::error!(what, "reload rejected, the running config stays: {e}");
            shared.stats.reload(ReloadResult::Rejected);
        }
    }
}

/// A discovery source found `workers` (its whole current set): the running topology is
/// recomposed with them. Counted like a reload.
pub(crate) async fn discovered(
    shared: &Arc<EdgeShared>,
    source: &DiscoverySource,
    workers: Vec<Discovered>,
) -> Result<ReloadReport, ReloadFailure> {
    let mut comp = shared.composition.lock().await;
    // A source stopped (or changed) by a reload may still report once: only the running
    // config's own sources count.
    let running = comp.base.discovery.contains(source);
    if !running || comp.found.get(&source.name) == Some(&workers) {
        return Ok(ReloadReport::default());
    }
    let previous = comp.found.insert(source.name.clone(), workers);
    let r = apply(shared, comp.compose(), false)
        .await
        .map_err(ReloadFailure::from);
    if r.is_err() {
        // Not applied: the next report of the same set tries again.
        match previous {
            Some(p) => comp.found.insert(source.name.clone(), p),
            None => comp.found.remove(&source.name),
        };
    }
    record(shared, &source.name, &r);
    r
}

impl EdgeHandle {
    /// Applies `config` (validated by `parse_config`/`load_config`) as the new config file
    /// of the running edge, with the workers discovery found; see the module docs. An error
    /// leaves the running config in place.
    pub async fn reload(&self, config: Config) -> Result<ReloadReport, ReloadFailure> {
        let shared = &self.shared;
        let mut comp = shared.composition.lock().await;
        let base = Arc::new(config);
        let previous = std::mem::replace(&mut comp.base, base);
        // What removed sources found leaves the topology with this reload; a changed source
        // that still follows the same pool keeps its set, restamped with its new settings,
        // until its restarted task reports (a pool changed wholesale is dropped).
        let found = comp.found.clone();
        let (old, new) = (previous.clone(), comp.base.clone());
        comp.found.retain(|name, set| {
            let find = |c: &Config| c.discovery.iter().find(|s| &s.name == name).cloned();
            match (find(&old), find(&new)) {
                (Some(o), Some(n)) if o == n => true,
                (Some(o), Some(n)) if o.kind == n.kind && o.region == n.region => {
                    set.iter_mut().for_each(|d| d.restamp(&o, &n));
                    true
                }
                _ => false,
            }
        });
        let r = apply(shared, comp.compose(), true)
            .await
            .map_err(ReloadFailure::from);
        match r {
            Ok(_) => comp.sync_sources(shared),
            Err(_) => {
                comp.base = previous;
                comp.found = found;
            }
        }
        record(shared, "config", &r);
        r
    }

    /// Reads, validates and applies the config file at `path` (SIGHUP, a changed watched
    /// file). An invalid file is rejected with every error's location; the running config
    /// stays.
    pub async fn reload_file(&self, path: &Path) -> Result<ReloadReport, ReloadFailure> {
        match crate::config::load_config(path) {
            Ok(config) => self.reload(config).await,
            Err(errors) => {
                let r = Err(ReloadFailure::Invalid(errors));
                record(&self.shared, "config", &r);
                r
            }
        }
    }
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;

//! Topology and node configuration (TOML), parsed then validated into typed configs.
//!
//! `RawConfig` mirrors the file; `TryFrom` turns it into [`Config`] (edge/topology) or
//! [`WorkerConfig`], collecting **every** problem with its `file:line:col` before failing.

mod auth;
mod ctx;
mod discovery;
mod health;
mod link;
mod members;
mod raw;
mod telemetry;
mod validate;
mod worker;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use auth::{ApiKey, AuthSettings, SharedLimitSettings, SigningKey, TenantLimits};
pub use discovery::{DiscoveryKind, DiscoverySource, DnsTarget, DEFAULT_DISCOVERY_INTERVAL};
pub use health::{HealthSettings, Objective, Weights};
pub use link::{Congestion, LinkTuning};
pub use members::{Conflict, Members};
pub use validate::parse_config;
pub use worker::parse_worker_config;

/// Default UDP address an edge listens on.
pub const DEFAULT_EDGE_LISTEN: &str = "127.0.0.1:4433";
/// Default UDP address a worker listens on.
pub const DEFAULT_WORKER_LISTEN: &str = "127.0.0.1:5433";
/// Default most client connections an edge accepts.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// Default most concurrent request streams per client connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Default bounded-load factor `c`: a worker takes a new request only while its in-flight
/// count is under `c` × the average.
pub const DEFAULT_LOAD_FACTOR: f64 = 1.25;
/// Default virtual nodes per unit of worker weight.
pub const DEFAULT_VNODES_PER_WEIGHT: u32 = 64;
/// Default prompt prefix hashed into a shard key when none is given.
pub const DEFAULT_PREFIX_BYTES: usize = 256;
/// Default directory for generated development certificates.
pub const DEFAULT_DEV_CERT_DIR: &str = "meridian-dev";
/// Default worker concurrency (advertised in SETTINGS; the edge's load bound).
pub const DEFAULT_MAX_CONCURRENT: u32 = 256;
/// Default interval between a worker's LOAD reports.
pub const DEFAULT_LOAD_REPORT: Duration = Duration::from_millis(250);
/// Default longest silence from a worker during a request.
pub const DEFAULT_UPSTREAM_STALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Default longest time a client may take to send a whole request.
pub const DEFAULT_INTAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default most request bytes an edge buffers at once, across every connection and protocol.
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 64 << 20;
/// Default most answer text an edge keeps per resumable stream.
pub const DEFAULT_RESUME_BUFFER_BYTES: u64 = 256 << 10;
/// Default most answer text an edge keeps across all resumable streams.
pub const DEFAULT_RESUME_BUFFER_TOTAL_BYTES: u64 = 64 << 20;
/// Default longest client QUIC handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default half-open handshakes beyond which clients must validate their address (Retry).
pub const DEFAULT_VALIDATE_ADDRESSES_ABOVE: u32 = 64;
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default first reconnect delay.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Default largest reconnect delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Default idle timeout of an upstream connection: a worker that stops answering (crashed
/// host, partition) is declared dead after this long. Keep-alives go out at a quarter of it.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Default QUIC connections from an edge to each worker.
pub const DEFAULT_CONNECTIONS_PER_WORKER: u32 = 1;
/// Default RTT assumed before an upstream connection's first sample.
pub const DEFAULT_UPSTREAM_INITIAL_RTT: Duration = Duration::from_millis(333);
/// Default interval between checks of the edge's config file for changes.
pub const DEFAULT_WATCH_CONFIG: Duration = Duration::from_secs(1);
/// Default most attempts (first try plus retries) per request.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Most regions a topology may have (regions sets are 64-bit masks).
pub const MAX_REGIONS: usize = 64;

/// Index of a region in [`Config::regions`].
pub type RegionId = usize;
/// Index of a worker in [`Config::workers`].
pub type WorkerId = usize;

/// A set of regions as a bit mask over [`RegionId`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RegionSet(pub u64);

impl RegionSet {
    /// Every region.
    pub const ALL: RegionSet = RegionSet(u64::MAX);

    /// Whether `r` is in the set.
    pub fn contains(self, r: RegionId) -> bool {
        self.0 & (1 << r) != 0
    }

    /// Adds `r`.
    pub fn insert(&mut self, r: RegionId) {
        self.0 |= 1 << r;
    }

    /// Regions in both sets.
    pub fn intersect(self, other: RegionSet) -> RegionSet {
        RegionSet(self.0 & other.0)
    }
}

/// A regional inference pool.
#[derive(Clone, Debug)]
pub struct Region {
    /// Unique name (`seoul`).
    pub name: String,
    /// Cloud provider label.
    pub provider: String,
    /// Jurisdiction tags (`de`, `eu`, `sovereign`).
    pub jurisdiction: Vec<String>,
    /// Price per million tokens (any currency; used for scoring).
    pub price_per_mtok: f64,
    /// Grid carbon intensity, g CO₂e/kWh (used for scoring).
    pub carbon_g_per_kwh: f64,
}

/// How an edge trusts a worker's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamTrust {
    /// Verify against this CA file.
    Ca(PathBuf),
    /// Accept exactly the certificate in this PEM file (development).
    Pin(PathBuf),
}

/// A worker an edge may route to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerEntry {
    /// Unique name.
    pub name: String,
    /// Its region.
    pub region: RegionId,
    /// Its QUIC address.
    pub address: SocketAddr,
    /// TLS server name to verify.
    pub server_name: String,
    /// Models it serves.
    pub models: Vec<String>,
    /// Relative capacity: virtual nodes on the ring and share of the load bound.
    pub weight: u32,
    /// How its certificate is trusted.
    pub trust: UpstreamTrust,
}

/// A server's certificate source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerTls {
    /// PEM certificate chain and private key files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// Generate a self-signed certificate for `localhost` and write it to `dir/cert.pem`
    /// so clients can pin it.
    Dev {
        /// Where to write it.
        dir: PathBuf,
    },
}

/// The edge's own settings.
#[derive(Clone, Debug)]
pub struct EdgeSettings {
    /// UDP listen address.
    pub listen: SocketAddr,
    /// POP name (for logs).
    pub pop: String,
    /// Area assumed when a client sends none.
    pub default_area: Option<String>,
    /// Most client connections.
    pub max_connections: u32,
    /// Most concurrent request streams per client connection.
    pub max_streams_per_connection: u32,
    /// Largest prompt accepted.
    pub max_prompt_bytes: usize,
    /// Longest a client's QUIC handshake may take before it is dropped.
    pub handshake_timeout: Duration,
    /// Handshakes in progress beyond which a client whose address is not validated gets a
    /// QUIC Retry first (0: always).
    pub validate_addresses_above: u32,
    /// Most request bytes buffered at once across every client (QUIC, HTTP/1.1, /2, /3);
    /// beyond it new requests get OVERLOADED / 503 at once.
    pub max_buffered_bytes: u64,
    /// Certificate.
    pub tls: ServerTls,
    /// quinn `send_fairness` on client connections: round-robin between streams with data
    /// queued (true) or drain one before the next (false).
    pub send_fairness: bool,
    /// UDP generic segmentation offload on the client-facing endpoint.
    pub gso: bool,
    /// Longest a client may take to send a whole request (HEADERS, BODY, FIN).
    pub intake_timeout: Duration,
    /// Longest a worker may send nothing on a request (before its first token or between
    /// tokens) before the edge gives up on it, so a stalled worker cannot hold a request
    /// forever; `None`: no limit.
    pub upstream_stall_timeout: Option<Duration>,
    /// Most answer text kept per resumable stream to continue it elsewhere (PROTOCOL.md
    /// §4.10); a longer answer is no longer resumable.
    pub resume_buffer_bytes: usize,
    /// Most answer text kept across every resumable stream of the edge.
    pub resume_buffer_total_bytes: u64,
    /// Models whose HTTP front-door requests are resumable without the
    /// `x-meridian-resumable` header.
    pub http_resumable_models: Vec<String>,
    /// Admin HTTP listener (`/metrics`, `/healthz`, `/readyz`, `/routes`); `None`: off.
    pub admin: Option<SocketAddr>,
    /// Environment variable holding the bearer token admin requests must carry; `None`:
    /// no token (then the listener must be on loopback unless `admin_public`).
    pub admin_token_env: Option<String>,
    /// OpenAI-compatible HTTP front door (HTTP/1.1 and HTTP/2 over TCP); `None`: off.
    pub http: Option<SocketAddr>,
    /// Tenant applied to HTTP front-door requests (until authentication exists).
    pub http_tenant: Option<String>,
    /// Ask clients (QUIC ACK frequency extension) to acknowledge only every N ack-eliciting
    /// packets; `None` keeps QUIC's default of every second packet.
    pub ack_eliciting_threshold: Option<u32>,
    /// Per-stream receive window on client connections, bytes.
    pub stream_receive_window: u32,
    /// Keep-alive interval on client connections.
    pub keep_alive: Duration,
    /// RTT assumed before the first sample on client connections.
    pub initial_rtt: Duration,
    /// Whether clients may migrate their connections to a new address (and survive NAT
    /// rebinding); `false` sends QUIC's `disable_active_migration` and drops datagrams from
    /// any other address (for load balancers that route by 4-tuple, not connection ID).
    pub migration: bool,
    /// Whether the HTTP front door's TCP port speaks HTTPS (TLS with the edge's `[tls]`
    /// certificate, ALPN `h2` and `http/1.1`) rather than cleartext HTTP/1.1 and h2c.
    pub http_tls: bool,
    /// The UDP port the HTTP front door advertises for HTTP/3 (`Alt-Svc: h3=":port"`):
    /// `None` = the edge's own `listen` port, `Some(0)` = none.
    pub alt_svc_port: Option<u16>,
    /// How often `meridian edge` checks its config file for changes (a mounted ConfigMap's
    /// symlink swap, an edit) and reloads it; `None`: only on SIGHUP.
    pub watch_config: Option<Duration>,
}

/// Default fraction by which a region must score better to move ahead of another.
pub const DEFAULT_HYSTERESIS: f64 = 0.1;

/// Routing parameters.
#[derive(Clone, Debug)]
pub struct RoutingSettings {
    /// Bounded-load factor `c` (> 1).
    pub load_factor: f64,
    /// What region order optimises after residency and preference.
    pub objective: Objective,
    /// Weights of the `balanced` objective.
    pub weights: Weights,
    /// A region moves ahead of another only when it scores this fraction better.
    pub hysteresis: f64,
    /// Virtual nodes per unit of weight.
    pub vnodes_per_weight: u32,
    /// Secret key of the ring hash; all edges of a deployment should share it so a shard key
    /// lands on the same worker whichever edge it enters. `None`: a random per-process key.
    pub ring_key: Option<[u8; 16]>,
    /// Prompt bytes hashed into a shard key when the request has none.
    pub prefix_bytes: usize,
    /// Most attempts per request: the first try, retries before the first token, and
    /// resumptions of a resumable stream after it.
    pub max_attempts: u32,
}

/// Upstream (edge → worker) connection settings.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamSettings {
    /// Handshake timeout.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Idle timeout (failure detection) of each upstream connection.
    pub idle_timeout: Duration,
    /// Client certificate and key presented to workers that require mutual TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// QUIC connections to each worker; requests are spread over them, so one lossy
    /// connection's congestion window does not hold every stream.
    pub connections_per_worker: u32,
    /// RTT assumed before a connection's first sample; a reconnect assumes the RTT last
    /// measured to that worker instead.
    pub initial_rtt: Duration,
    /// Loss detection and congestion control of the requests the edge sends.
    pub link: LinkTuning,
}

/// A validated topology and edge configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Edge settings.
    pub edge: EdgeSettings,
    /// Upstream settings.
    pub upstream: UpstreamSettings,
    /// Outlier ejection and region degradation (`[health]`).
    pub health: HealthSettings,
    /// Routing settings.
    pub routing: RoutingSettings,
    /// Regions, indexed by [`RegionId`].
    pub regions: Vec<Region>,
    /// Area → preferred regions, most preferred first.
    pub areas: HashMap<String, Vec<RegionId>>,
    /// Country → the groups it belongs to (`fr` → `eu`), in config order.
    pub area_groups: HashMap<String, Vec<String>>,
    /// Residency policy → allowed regions.
    pub residency: HashMap<String, RegionSet>,
    /// Tenant → its residency policy, if any.
    pub tenants: HashMap<String, Option<String>>,
    /// Tenant → its limits (tenants without limits are absent).
    pub tenant_limits: HashMap<String, TenantLimits>,
    /// How tenants are identified (`[auth]`).
    pub auth: AuthSettings,
    /// The fleet-wide limit backend (`[limits]`); `None`: limits are per edge.
    pub shared_limits: Option<SharedLimitSettings>,
    /// Problems that do not stop the edge but will keep something from working yet (a pin
    /// file not written yet); `meridian check` prints them.
    pub warnings: Vec<ConfigError>,
    /// Workers, indexed by [`WorkerId`]: the static `[[worker]]` list, then (in a running
    /// edge) the discovered ones.
    pub workers: Vec<WorkerEntry>,
    /// Worker discovery sources (`[[discovery]]`).
    pub discovery: Vec<DiscoverySource>,
    /// Trace export (`[telemetry]`); `None` = tracing off.
    pub telemetry: Option<OtlpSettings>,
    /// QUIC-LB connection IDs (`[quic_lb]`); `None`: quinn's random ones.
    pub quic_lb: Option<QuicLbSettings>,
}

/// QUIC-LB plaintext connection IDs: `first octet | server id | nonce`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuicLbSettings {
    /// This edge's server id, 1–15 bytes (AWS NLB: 8).
    pub server_id: Vec<u8>,
    /// Config rotation id, 0–6.
    pub config_id: u8,
    /// Random bytes after the server id, 4–18 (server id + nonce ≤ 19).
    pub nonce_len: usize,
}

/// Where and how spans are exported: OTLP/HTTP with the JSON encoding.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpSettings {
    /// `host:port` of the collector (plain HTTP; run a collector beside the node).
    pub authority: String,
    /// Request path, `/v1/traces` under the endpoint's path.
    pub path: String,
    /// OTLP resource `service.name`.
    pub service_name: String,
    /// Fraction of new traces recorded (a sampled parent is always followed).
    pub sample_ratio: f64,
    /// Longest time a finished span waits before export.
    pub export_interval: Duration,
    /// Most finished spans waiting for export; more are dropped and counted.
    pub max_queue: usize,
    /// OTLP metrics export (`None`: off, `[telemetry] metrics = false`).
    pub metrics: Option<OtlpMetrics>,
}

/// Where and how often metrics are exported: OTLP/HTTP JSON, cumulative.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpMetrics {
    /// `host:port` of the collector.
    pub authority: String,
    /// Request path, `/v1/metrics` under the endpoint's path.
    pub path: String,
    /// Time between exports.
    pub interval: Duration,
}

impl EdgeSettings {
    /// `max_connections` and `validate_addresses_above`, as the accept loop uses them.
    pub fn admission_limits(&self) -> (usize, usize) {
        (
            self.max_connections as usize,
            self.validate_addresses_above as usize,
        )
    }
}

impl Config {
    /// Looks a region up by name.
    pub fn region_id(&self, name: &str) -> Option<RegionId> {
        self.regions.iter().position(|r| r.name == name)
    }

    /// The models the topology serves, each once, in model-index order: the workers', then
    /// those only a discovery source names (known while it has no worker yet).
    pub fn models(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        let workers = self.workers.iter().flat_map(|w| &w.models);
        let sources = self.discovery.iter().flat_map(|d| &d.models);
        (workers.chain(sources))
            .map(String::as_str)
            .filter(|m| seen.insert(*m))
            .collect()
    }
}

/// The synthetic backend's behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticBackend {
    /// Delay before the first token.
    pub ttft: Duration,
    /// Delay between tokens.
    pub itl: Duration,
    /// Most tokens per request (the request's `max_tokens` may lower it).
    pub max_tokens: u64,
}

impl Default for SyntheticBackend {
    fn default() -> Self {
        SyntheticBackend {
            ttft: Duration::from_millis(20),
            itl: Duration::from_millis(10),
            max_tokens: 32,
        }
    }
}

/// An OpenAI-compatible server the worker proxies to (vLLM, llama.cpp, TGI, Ollama…).
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAiBackend {
    /// `host:port` of the server (plain HTTP).
    pub authority: String,
    /// Path prefix of the API, e.g. `/v1` (requests go to `{prefix}/chat/completions`).
    pub path_prefix: String,
    /// Bearer token sent upstream, if any.
    pub api_key: Option<String>,
    /// Meridian model name → the server's model name.
    pub model_map: std::collections::BTreeMap<String, String>,
    /// Connect-and-first-byte timeout.
    pub timeout: Duration,
    /// How a chat completion is continued on a resumption (PROTOCOL.md §4.10).
    pub chat_continuation: ChatContinuation,
}

/// How the `openai` backend asks its server to continue a chat answer that another worker
/// started: the partial answer is always sent as a last `assistant` message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChatContinuation {
    /// Also send `continue_final_message: true, add_generation_prompt: false` (vLLM and
    /// SGLang continue the message instead of starting a new turn).
    #[default]
    ContinueFinalMessage,
    /// Send the assistant message only (llama.cpp's server prefills a trailing assistant
    /// message by default).
    Prefill,
    /// The server cannot continue a message: chat requests are not resumed on this worker.
    Off,
}

impl fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiBackend")
            .field("authority", &self.authority)
            .field("path_prefix", &self.path_prefix)
            .field("api_key", &self.api_key.as_ref().map(|_| "<secret>"))
            .field("model_map", &self.model_map)
            .finish()
    }
}

/// A worker's backend.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// Built-in deterministic generator.
    Synthetic(SyntheticBackend),
    /// Proxy to an OpenAI-compatible server.
    OpenAi(OpenAiBackend),
}

impl Backend {
    /// The backend's GenAI `gen_ai.provider.name`: `openai` for an OpenAI-compatible server
    /// (the API it speaks), `meridian` for the synthetic generator.
    pub fn provider(&self) -> &'static str {
        match self {
            Backend::Synthetic(_) => "meridian",
            Backend::OpenAi(_) => "openai",
        }
    }
}

/// A validated worker configuration.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Worker name (must match the edge's `[[worker]]` entry).
    pub name: String,
    /// Region name.
    pub region: String,
    /// UDP listen address.
    pub listen: SocketAddr,
    /// Models served.
    pub models: Vec<String>,
    /// Most requests generated at once; further requests wait.
    pub max_concurrent: u32,
    /// Largest prompt accepted.
    pub max_prompt_bytes: usize,
    /// Interval between LOAD reports.
    pub load_report: Duration,
    /// HTTP probe listener (`/healthz`, `/readyz`: 503 while draining); `None`: off.
    pub health: Option<SocketAddr>,
    /// Ask edges to acknowledge only every N ack-eliciting packets (QUIC ACK frequency);
    /// `None` keeps QUIC's default.
    pub ack_eliciting_threshold: Option<u32>,
    /// Loss detection and congestion control of the tokens the worker sends.
    pub link: LinkTuning,
    /// Certificate.
    pub tls: ServerTls,
    /// CA whose client certificates the worker requires (mutual TLS); `None`: any client
    /// may connect.
    pub client_ca: Option<PathBuf>,
    /// The backend.
    pub backend: Backend,
    /// Trace export (`[telemetry]`); `None` = tracing off.
    pub telemetry: Option<OtlpSettings>,
}

/// One problem in a config file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<embedded>`).
    pub file: PathBuf,
    /// 1-based line, 0 if unknown.
    pub line: usize,
    /// 1-based column, 0 if unknown.
    pub col: usize,
    /// What is wrong and, where useful, how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Every problem found in a config file. Fix them all and run `meridian check` again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Which kind of config a file holds.
#[derive(Debug)]
pub enum AnyConfig {
    /// An edge/topology config.
    Edge(Box<Config>),
    /// A worker config.
    Worker(Box<WorkerConfig>),
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.into(),
            line: 0,
            col: 0,
            message: format!("cannot read: {e}"),
        }])
    })
}

/// Reads and validates an edge/topology config file.
pub fn load_config(path: &Path) -> Result<Config, ConfigErrors> {
    parse_config(&read(path)?, path)
}

/// Reads and validates a worker config file.
pub fn load_worker_config(path: &Path) -> Result<WorkerConfig, ConfigErrors> {
    parse_worker_config(&read(path)?, path)
}

/// Reads a config file of either kind (a file with a `[worker]` table is a worker config).
pub fn load_any(path: &Path) -> Result<AnyConfig, ConfigErrors> {
    let src = read(path)?;
    let is_worker = src.lines().any(|l| l.trim() == "[worker]");
    if is_worker {
        parse_worker_config(&src, path).map(|c| AnyConfig::Worker(Box::new(c)))
    } else {
        parse_config(&src, path).map(|c| AnyConfig::Edge(Box::new(c)))
    }
}

#[cfg(test)]
mod adaptive_tests;
#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod tests;

//! The TOML shape of config files, as parsed (`RawConfig` → typed `Config` in
//! `validate.rs`). Fields that later checks refer to carry their source span.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// An edge's (or `meridian route`'s) config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub edge: Option<RawEdge>,
    #[serde(default)]
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub upstream: Option<RawUpstream>,
    #[serde(default)]
    pub routing: Option<RawRouting>,
    #[serde(default)]
    pub health: Option<super::health::RawHealth>,
    #[serde(default, rename = "region")]
    pub regions: Vec<Spanned<RawRegion>>,
    #[serde(default)]
    pub areas: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub area_groups: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub residency: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub tenants: BTreeMap<String, Spanned<RawTenant>>,
    #[serde(default, rename = "worker")]
    pub workers: Vec<Spanned<RawWorkerEntry>>,
    #[serde(default)]
    pub discovery: Vec<Spanned<super::discovery::RawDiscovery>>,
    #[serde(default)]
    pub telemetry: Option<Spanned<RawTelemetry>>,
    #[serde(default)]
    pub auth: Option<Spanned<RawAuth>>,
    #[serde(default)]
    pub limits: Option<Spanned<RawLimits>>,
    #[serde(default)]
    pub quic_lb: Option<Spanned<RawQuicLb>>,
}

/// `[quic_lb]`: QUIC-LB connection IDs embedding this edge's server id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuicLb {
    pub server_id: Spanned<String>,
    pub config_id: Option<Spanned<u64>>,
    pub nonce_len: Option<Spanned<u64>>,
}

/// `[limits]`: the shared (fleet-wide) limit backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub redis: Spanned<String>,
    pub sync_interval_ms: Option<Spanned<u64>>,
    pub timeout_ms: Option<Spanned<u64>>,
    pub key_prefix: Option<Spanned<String>>,
}

/// `[auth]`, in an edge's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub required: Option<bool>,
    #[serde(default)]
    pub api_keys: Vec<Spanned<RawApiKey>>,
    #[serde(default)]
    pub signing_keys: Vec<Spanned<RawSigningKey>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub id: Spanned<String>,
    pub tenant: Spanned<String>,
    pub sha256: Spanned<String>,
    pub expires: Option<Spanned<toml::value::Datetime>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigningKey {
    pub id: Spanned<String>,
    pub secret_file: Spanned<String>,
}

/// `[telemetry]`, in edge and worker configs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<Spanned<String>>,
    pub metrics: Option<Spanned<bool>>,
    pub metrics_interval_ms: Option<Spanned<u64>>,
    pub service_name: Option<Spanned<String>>,
    pub sample_ratio: Option<Spanned<f64>>,
    pub export_interval_ms: Option<Spanned<u64>>,
    pub max_queue: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdge {
    pub listen: Option<Spanned<String>>,
    pub pop: Option<Spanned<String>>,
    pub default_area: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<u64>>,
    pub max_streams_per_connection: Option<Spanned<u64>>,
    pub max_prompt_bytes: Option<Spanned<u64>>,
    pub max_buffered_bytes: Option<Spanned<u64>>,
    pub handshake_timeout_ms: Option<Spanned<u64>>,
    pub validate_addresses_above: Option<Spanned<u64>>,
    pub send_fairness: Option<bool>,
    pub gso: Option<bool>,
    pub intake_timeout_ms: Option<Spanned<u64>>,
    pub upstream_stall_timeout_ms: Option<Spanned<u64>>,
    pub resume_buffer_bytes: Option<Spanned<u64>>,
    pub resume_buffer_total_bytes: Option<Spanned<u64>>,
    pub http_resumable_models: Option<Vec<Spanned<String>>>,
    pub stream_receive_window: Option<Spanned<u64>>,
    pub keep_alive_ms: Option<Spanned<u64>>,
    pub initial_rtt_ms: Option<Spanned<u64>>,
    pub admin: Option<Spanned<String>>,
    pub admin_token_env: Option<Spanned<String>>,
    pub admin_public: Option<bool>,
    pub http: Option<Spanned<String>>,
    pub http_tenant: Option<Spanned<String>>,
    pub ack_eliciting_threshold: Option<Spanned<u64>>,
    pub watch_config_ms: Option<Spanned<u64>>,
    pub migration: Option<bool>,
    pub alt_svc_port: Option<Spanned<u64>>,
    pub http_tls: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub dev_cert_dir: Option<Spanned<String>>,
    pub client_ca: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub ca: Option<Spanned<String>>,
    pub connect_timeout_ms: Option<Spanned<u64>>,
    pub backoff_min_ms: Option<Spanned<u64>>,
    pub backoff_max_ms: Option<Spanned<u64>>,
    pub idle_timeout_ms: Option<Spanned<u64>>,
    pub max_attempts: Option<Spanned<u64>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
    pub connections_per_worker: Option<Spanned<u64>>,
    pub initial_rtt_ms: Option<Spanned<u64>>,
    pub congestion: Option<Spanned<String>>,
    pub initial_window: Option<Spanned<u64>>,
    pub packet_threshold: Option<Spanned<u64>>,
    pub time_threshold: Option<Spanned<f64>>,
}

impl RawUpstream {
    pub fn link(&self) -> super::link::RawLink {
        super::link::RawLink {
            congestion: self.congestion.clone(),
            initial_window: self.initial_window.clone(),
            packet_threshold: self.packet_threshold.clone(),
            time_threshold: self.time_threshold.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub load_factor: Option<Spanned<f64>>,
    pub objective: Option<Spanned<String>>,
    pub weights: Option<Spanned<super::health::RawWeights>>,
    pub hysteresis: Option<Spanned<f64>>,
    pub vnodes_per_weight: Option<Spanned<u64>>,
    pub ring_key: Option<Spanned<String>>,
    pub prefix_bytes: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    pub name: Spanned<String>,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub jurisdiction: Vec<String>,
    pub price_per_mtok: Option<Spanned<f64>>,
    pub carbon_g_per_kwh: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub residency: Option<Spanned<String>>,
    pub requests_per_s: Option<Spanned<f64>>,
    pub burst: Option<Spanned<u64>>,
    pub max_concurrent: Option<Spanned<u64>>,
    pub tokens_per_min: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkerEntry {
    pub name: Spanned<String>,
    pub region: Spanned<String>,
    pub address: Spanned<String>,
    pub models: Option<Spanned<Vec<String>>>,
    pub weight: Option<Spanned<u64>>,
    pub server_name: Option<String>,
    pub pin: Option<Spanned<String>>,
}

/// A worker's config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkerConfig {
    pub worker: Spanned<RawWorker>,
    #[serde(default)]
    pub tls: Option<RawTls>,
    pub backend: Option<Spanned<RawBackend>>,
    #[serde(default)]
    pub telemetry: Option<Spanned<RawTelemetry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    pub name: Spanned<String>,
    pub region: Spanned<String>,
    pub listen: Option<Spanned<String>>,
    pub models: Option<Spanned<Vec<String>>>,
    pub max_concurrent: Option<Spanned<u64>>,
    pub max_prompt_bytes: Option<Spanned<u64>>,
    pub load_report_ms: Option<Spanned<u64>>,
    pub health: Option<Spanned<String>>,
    pub ack_eliciting_threshold: Option<Spanned<u64>>,
    pub congestion: Option<Spanned<String>>,
    pub initial_window: Option<Spanned<u64>>,
    pub packet_threshold: Option<Spanned<u64>>,
    pub time_threshold: Option<Spanned<f64>>,
}

impl RawWorker {
    pub fn link(&self) -> super::link::RawLink {
        super::link::RawLink {
            congestion: self.congestion.clone(),
            initial_window: self.initial_window.clone(),
            packet_threshold: self.packet_threshold.clone(),
            time_threshold: self.time_threshold.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub kind: Spanned<String>,
    pub base_url: Option<Spanned<String>>,
    pub api_key: Option<String>,
    pub api_key_env: Option<Spanned<String>>,
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    pub timeout_ms: Option<Spanned<u64>>,
    pub chat_continuation: Option<Spanned<String>>,
    pub ttft_ms: Option<Spanned<u64>>,
    pub itl_ms: Option<Spanned<u64>>,
    pub max_tokens: Option<Spanned<u64>>,
}

//! `RawConfig` → `Config` and `RawWorkerConfig` → `WorkerConfig`, reporting every problem
//! with its location.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::*;
use super::*;

/// Collects errors with locations in one source file.
pub(super) struct Ctx<'a> {
    src: &'a str,
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    pub(super) fn err(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let (line, col) = match span {
            Some(s) => {
                let before = &self.src[..s.start.min(self.src.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                (line, col)
            }
            None => (0, 0),
        };
        self.errors.push(ConfigError {
            file: self.file.into(),
            line,
            col,
            message: message.into(),
        });
    }

    fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        match toml::from_str::<T>(self.src) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(e.span(), e.message().trim().to_string());
                None
            }
        }
    }

    fn addr(&mut self, v: Option<&Spanned<String>>, default: &str) -> SocketAddr {
        match v {
            None => default.parse().expect("default addresses are valid"),
            Some(s) => s.get_ref().parse().unwrap_or_else(|_| {
                self.err(
                    Some(s.span()),
                    format!(
                        "`{}` is not a socket address like 127.0.0.1:4433",
                        s.get_ref()
                    ),
                );
                default.parse().expect("default addresses are valid")
            }),
        }
    }

    pub(super) fn count(
        &mut self,
        v: Option<&Spanned<u64>>,
        what: &str,
        range: Range<u64>,
        default: u64,
    ) -> u64 {
        match v {
            None => default,
            Some(s) if range.contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                self.err(
                    Some(s.span()),
                    format!(
                        "{what} must be in {}..{}, got {}",
                        range.start,
                        range.end,
                        s.get_ref()
                    ),
                );
                default
            }
        }
    }

    pub(super) fn millis(
        &mut self,
        v: Option<&Spanned<u64>>,
        what: &str,
        max_ms: u64,
        default: Duration,
    ) -> Duration {
        let ms = self.count(v, what, 0..max_ms + 1, default.as_millis() as u64);
        Duration::from_millis(ms)
    }

    /// Splits a plain-HTTP URL into `host:port` and a path without a trailing `/`
    /// (empty for the root).
    pub(super) fn http_url(
        &mut self,
        url: &str,
        span: Option<Range<usize>>,
        what: &str,
        advice: &str,
    ) -> (String, String) {
        let Some(rest) = url.strip_prefix("http://") else {
            self.err(
                span,
                format!("{what} must start with http:// (TLS is not supported yet; {advice})"),
            );
            return (String::new(), String::new());
        };
        let (auth, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if auth.is_empty() {
            self.err(span, format!("{what} has no host"));
        }
        let path = format!("/{}", path.trim_end_matches('/'));
        (auth.to_owned(), path.trim_end_matches('/').to_owned())
    }

    fn name(&mut self, s: &Spanned<String>, what: &str) {
        let n = s.get_ref();
        let ok = !n.is_empty()
            && n.len() <= meridian_protocol::limits::MAX_NAME_LEN
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok {
            self.err(
                Some(s.span()),
                format!("{what} `{n}` must be 1-64 characters of a-z, 0-9, '-', '_' or '.'"),
            );
        }
    }

    fn area(&mut self, name: &str, span: Range<usize>) {
        let ok = !name.is_empty()
            && name.len() <= meridian_protocol::limits::MAX_AREA_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            self.err(Some(span), format!("area `{name}` must be lowercase letters, digits or '-' (an ISO country code like `jp`, or a group like `eu`)"));
        }
    }

    fn path(&self, s: &Spanned<String>) -> PathBuf {
        let p = PathBuf::from(s.get_ref());
        match self.file.parent() {
            Some(dir) if p.is_relative() && !dir.as_os_str().is_empty() => dir.join(p),
            _ => p,
        }
    }

    fn tls(&mut self, raw: Option<&RawTls>) -> ServerTls {
        let Some(t) = raw else {
            return ServerTls::Dev {
                dir: DEFAULT_DEV_CERT_DIR.into(),
            };
        };
        match (&t.cert, &t.key) {
            (Some(c), Some(k)) => ServerTls::Files {
                cert: self.path(c),
                key: self.path(k),
            },
            (Some(s), None) | (None, Some(s)) => {
                self.err(Some(s.span()), "[tls] needs both `cert` and `key`, or neither (then a development certificate is generated)");
                ServerTls::Dev {
                    dir: DEFAULT_DEV_CERT_DIR.into(),
                }
            }
            (None, None) => ServerTls::Dev {
                dir: t
                    .dev_cert_dir
                    .as_ref()
                    .map_or(DEFAULT_DEV_CERT_DIR.into(), |d| self.path(d)),
            },
        }
    }

    fn models(&mut self, v: Option<&Spanned<Vec<String>>>, span: Range<usize>) -> Vec<String> {
        match v {
            Some(m) if !m.get_ref().is_empty() => {
                let bad = m
                    .get_ref()
                    .iter()
                    .find(|n| n.is_empty() || n.len() > meridian_protocol::limits::MAX_MODEL_LEN);
                if let Some(b) = bad {
                    self.err(
                        Some(m.span()),
                        format!("model name `{b}` must be 1-128 bytes"),
                    );
                }
                m.get_ref().clone()
            }
            Some(m) => {
                self.err(Some(m.span()), "`models` must list at least one model");
                Vec::new()
            }
            None => {
                self.err(
                    Some(span),
                    "missing `models`: list the models this worker serves",
                );
                Vec::new()
            }
        }
    }
}

/// Parses and validates an edge/topology config. `file` is used in error locations.
pub fn parse_config(src: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx {
        src,
        file,
        errors: Vec::new(),
    };
    let Some(raw) = cx.parse::<RawConfig>() else {
        return Err(ConfigErrors(cx.errors));
    };

    // Regions.
    let mut regions = Vec::new();
    let mut region_ids: HashMap<String, RegionId> = HashMap::new();
    for r in &raw.regions {
        let span = r.span();
        let r = r.get_ref();
        cx.name(&r.name, "region name");
        if region_ids
            .insert(r.name.get_ref().clone(), regions.len())
            .is_some()
        {
            cx.err(
                Some(r.name.span()),
                format!("duplicate region `{}`", r.name.get_ref()),
            );
        }
        let mut nonneg = |v: &Option<Spanned<f64>>, what: &str| match v {
            Some(s) if *s.get_ref() < 0.0 || !s.get_ref().is_finite() => {
                cx.err(
                    Some(s.span()),
                    format!("{what} must be a non-negative number"),
                );
                0.0
            }
            Some(s) => *s.get_ref(),
            None => 0.0,
        };
        let price = nonneg(&r.price_per_mtok, "price_per_mtok");
        let carbon = nonneg(&r.carbon_g_per_kwh, "carbon_g_per_kwh");
        regions.push(Region {
            name: r.name.get_ref().clone(),
            provider: r.provider.clone(),
            jurisdiction: r.jurisdiction.clone(),
            price_per_mtok: price,
            carbon_g_per_kwh: carbon,
        });
        if regions.len() == MAX_REGIONS + 1 {
            cx.err(
                Some(span),
                format!("at most {MAX_REGIONS} regions are supported"),
            );
        }
    }
    if raw.regions.is_empty() {
        cx.err(
            Some(0..0),
            "no [[region]] defined: a topology needs at least one region",
        );
    }

    let region_list =
        |cx: &mut Ctx, list: &Spanned<Vec<Spanned<String>>>, what: &str| -> Vec<RegionId> {
            if list.get_ref().is_empty() {
                cx.err(Some(list.span()), format!("{what} lists no regions"));
            }
            let mut out = Vec::new();
            for name in list.get_ref() {
                match region_ids.get(name.get_ref()) {
                    Some(id) if out.contains(id) => cx.err(
                        Some(name.span()),
                        format!("region `{}` listed twice", name.get_ref()),
                    ),
                    Some(id) => out.push(*id),
                    None => cx.err(
                        Some(name.span()),
                        format!("unknown region `{}` in {what}", name.get_ref()),
                    ),
                }
            }
            out
        };

    let mut areas = HashMap::new();
    for (area, list) in &raw.areas {
        cx.area(area, list.span());
        areas.insert(
            area.clone(),
            region_list(&mut cx, list, &format!("area `{area}`")),
        );
    }
    let mut area_groups: HashMap<String, Vec<String>> = HashMap::new();
    for (group, members) in &raw.area_groups {
        cx.area(group, members.span());
        if !raw.areas.contains_key(group) {
            cx.err(Some(members.span()), format!("area group `{group}` has no preference list: add `{group} = [...]` under [areas]"));
        }
        for m in members.get_ref() {
            cx.area(m.get_ref(), m.span());
            area_groups
                .entry(m.get_ref().clone())
                .or_default()
                .push(group.clone());
        }
    }
    let mut residency = HashMap::new();
    for (policy, list) in &raw.residency {
        let mut set = RegionSet::default();
        for id in region_list(&mut cx, list, &format!("residency policy `{policy}`")) {
            set.insert(id);
        }
        residency.insert(policy.clone(), set);
    }
    let mut tenants = HashMap::new();
    for (tenant, t) in &raw.tenants {
        let policy = t.get_ref().residency.as_ref().map(|p| {
            if !residency.contains_key(p.get_ref()) {
                cx.err(
                    Some(p.span()),
                    format!(
                        "tenant `{tenant}` names unknown residency policy `{}`",
                        p.get_ref()
                    ),
                );
            }
            p.get_ref().clone()
        });
        tenants.insert(tenant.clone(), policy);
    }

    // Workers.
    let mut workers = Vec::new();
    let mut worker_names = HashSet::new();
    let mut addrs = HashSet::new();
    for w in &raw.workers {
        let span = w.span();
        let w = w.get_ref();
        cx.name(&w.name, "worker name");
        if !worker_names.insert(w.name.get_ref().clone()) {
            cx.err(
                Some(w.name.span()),
                format!("duplicate worker `{}`", w.name.get_ref()),
            );
        }
        let region = region_ids
            .get(w.region.get_ref())
            .copied()
            .unwrap_or_else(|| {
                cx.err(
                    Some(w.region.span()),
                    format!(
                        "worker `{}` is in unknown region `{}`",
                        w.name.get_ref(),
                        w.region.get_ref()
                    ),
                );
                0
            });
        let address = cx.addr(Some(&w.address), DEFAULT_WORKER_LISTEN);
        if address.port() != 0 && !addrs.insert(address) {
            cx.err(
                Some(w.address.span()),
                format!("address {address} is used by two workers"),
            );
        }
        let models = cx.models(w.models.as_ref(), span.clone());
        let weight = cx.count(w.weight.as_ref(), "weight", 1..1001, 1) as u32;
        let trust = match (&w.pin, raw.upstream.as_ref().and_then(|u| u.ca.as_ref())) {
            (Some(pin), _) => UpstreamTrust::Pin(cx.path(pin)),
            (None, Some(ca)) => UpstreamTrust::Ca(cx.path(ca)),
            (None, None) => {
                cx.err(Some(span), format!("worker `{}` has no way to trust its certificate: set `pin = \"<cert.pem>\"` or [upstream] ca", w.name.get_ref()));
                UpstreamTrust::Pin(PathBuf::new())
            }
        };
        workers.push(WorkerEntry {
            name: w.name.get_ref().clone(),
            region,
            address,
            server_name: w.server_name.clone().unwrap_or_else(|| "localhost".into()),
            models,
            weight,
            trust,
        });
    }

    let distinct: HashSet<&String> = workers.iter().flat_map(|w| &w.models).collect();
    if distinct.len() > crate::route::table::MAX_MODELS {
        cx.err(
            Some(0..0),
            format!(
                "{} distinct models; at most {} are supported",
                distinct.len(),
                crate::route::table::MAX_MODELS
            ),
        );
    }
    let e = raw.edge.as_ref();
    let default_area = e.and_then(|e| e.default_area.as_ref()).map(|a| {
        cx.area(a.get_ref(), a.span());
        a.get_ref().clone()
    });
    let edge = EdgeSettings {
        listen: cx.addr(e.and_then(|e| e.listen.as_ref()), DEFAULT_EDGE_LISTEN),
        pop: e
            .and_then(|e| e.pop.as_ref())
            .map_or_else(|| "edge".into(), |p| p.get_ref().clone()),
        default_area,
        max_connections: cx.count(
            e.and_then(|e| e.max_connections.as_ref()),
            "max_connections",
            1..1_000_001,
            DEFAULT_MAX_CONNECTIONS.into(),
        ) as u32,
        max_streams_per_connection: cx.count(
            e.and_then(|e| e.max_streams_per_connection.as_ref()),
            "max_streams_per_connection",
            1..100_001,
            DEFAULT_MAX_STREAMS_PER_CONNECTION.into(),
        ) as u32,
        max_prompt_bytes: cx.count(
            e.and_then(|e| e.max_prompt_bytes.as_ref()),
            "max_prompt_bytes",
            1..(64 << 20) + 1,
            meridian_protocol::limits::DEFAULT_MAX_PROMPT_BYTES as u64,
        ) as usize,
        tls: cx.tls(raw.tls.as_ref()),
        send_fairness: e.and_then(|e| e.send_fairness).unwrap_or(true),
        gso: e.and_then(|e| e.gso).unwrap_or(true),
        stream_receive_window: cx.count(
            e.and_then(|e| e.stream_receive_window.as_ref()),
            "stream_receive_window",
            1024..(16 << 20) + 1,
            crate::transport::STREAM_RECEIVE_WINDOW.into(),
        ) as u32,
        keep_alive: cx.millis(
            e.and_then(|e| e.keep_alive_ms.as_ref()),
            "keep_alive_ms",
            60_000,
            crate::transport::KEEP_ALIVE,
        ),
        initial_rtt: cx.millis(
            e.and_then(|e| e.initial_rtt_ms.as_ref()),
            "initial_rtt_ms",
            10_000,
            crate::transport::INITIAL_RTT,
        ),
        admin: e
            .and_then(|e| e.admin.as_ref())
            .map(|a| cx.addr(Some(a), "127.0.0.1:9090")),
        http: e
            .and_then(|e| e.http.as_ref())
            .map(|a| cx.addr(Some(a), "127.0.0.1:8080")),
        http_tenant: e.and_then(|e| e.http_tenant.as_ref()).map(|t| {
            if !raw.tenants.contains_key(t.get_ref()) {
                cx.err(
                    Some(t.span()),
                    format!("http_tenant `{}` is not a configured tenant", t.get_ref()),
                );
            }
            t.get_ref().clone()
        }),
        intake_timeout: cx
            .millis(
                e.and_then(|e| e.intake_timeout_ms.as_ref()),
                "intake_timeout_ms",
                600_000,
                DEFAULT_INTAKE_TIMEOUT,
            )
            .max(Duration::from_millis(10)),
        ack_eliciting_threshold: e
            .and_then(|e| e.ack_eliciting_threshold.as_ref())
            .map(|t| cx.count(Some(t), "ack_eliciting_threshold", 1..1001, 2) as u32),
    };
    let u = raw.upstream.as_ref();
    let upstream = UpstreamSettings {
        connect_timeout: cx.millis(
            u.and_then(|u| u.connect_timeout_ms.as_ref()),
            "connect_timeout_ms",
            60_000,
            DEFAULT_CONNECT_TIMEOUT,
        ),
        backoff_min: cx.millis(
            u.and_then(|u| u.backoff_min_ms.as_ref()),
            "backoff_min_ms",
            60_000,
            DEFAULT_BACKOFF_MIN,
        ),
        backoff_max: cx.millis(
            u.and_then(|u| u.backoff_max_ms.as_ref()),
            "backoff_max_ms",
            600_000,
            DEFAULT_BACKOFF_MAX,
        ),
        idle_timeout: cx
            .millis(
                u.and_then(|u| u.idle_timeout_ms.as_ref()),
                "idle_timeout_ms",
                600_000,
                DEFAULT_UPSTREAM_IDLE_TIMEOUT,
            )
            .max(Duration::from_millis(100)),
    };
    let r = raw.routing.as_ref();
    let load_factor = match r.and_then(|r| r.load_factor.as_ref()) {
        Some(f) if !(*f.get_ref() > 1.0 && *f.get_ref() <= 100.0) => {
            cx.err(
                Some(f.span()),
                "load_factor must be > 1.0 (bounded loads need headroom) and at most 100",
            );
            DEFAULT_LOAD_FACTOR
        }
        Some(f) => *f.get_ref(),
        None => DEFAULT_LOAD_FACTOR,
    };
    let ring_key = r.and_then(|r| r.ring_key.as_ref()).and_then(|k| {
        let parsed = parse_hex16(k.get_ref());
        if parsed.is_none() {
            cx.err(
                Some(k.span()),
                "ring_key must be 32 hex digits (16 bytes), e.g. from `openssl rand -hex 16`",
            );
        }
        parsed
    });
    let routing = RoutingSettings {
        load_factor,
        vnodes_per_weight: cx.count(
            r.and_then(|r| r.vnodes_per_weight.as_ref()),
            "vnodes_per_weight",
            1..1025,
            DEFAULT_VNODES_PER_WEIGHT.into(),
        ) as u32,
        ring_key,
        prefix_bytes: cx.count(
            r.and_then(|r| r.prefix_bytes.as_ref()),
            "prefix_bytes",
            1..65_537,
            DEFAULT_PREFIX_BYTES as u64,
        ) as usize,
        max_attempts: cx.count(
            u.and_then(|u| u.max_attempts.as_ref()),
            "max_attempts",
            1..11,
            DEFAULT_MAX_ATTEMPTS.into(),
        ) as u32,
    };
    let telemetry = cx.telemetry(raw.telemetry.as_ref(), "meridian-edge");
    cx.finish(Config {
        edge,
        upstream,
        routing,
        regions,
        areas,
        area_groups,
        residency,
        tenants,
        workers,
        telemetry,
    })
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Parses and validates a worker config. `file` is used in error locations.
pub fn parse_worker_config(src: &str, file: &Path) -> Result<WorkerConfig, ConfigErrors> {
    let mut cx = Ctx {
        src,
        file,
        errors: Vec::new(),
    };
    let Some(raw) = cx.parse::<RawWorkerConfig>() else {
        return Err(ConfigErrors(cx.errors));
    };
    let span = raw.worker.span();
    let w = raw.worker.get_ref();
    cx.name(&w.name, "worker name");
    cx.name(&w.region, "region name");
    let backend = match raw.backend.as_ref().map(|b| b.get_ref()) {
        None => Backend::Synthetic(SyntheticBackend::default()),
        Some(b) if b.kind.get_ref() == "openai" => Backend::OpenAi(openai_backend(&mut cx, b)),
        Some(b) => {
            if b.kind.get_ref() != "synthetic" {
                cx.err(
                    Some(b.kind.span()),
                    format!(
                        "unknown backend kind `{}`: expected `synthetic` or `openai`",
                        b.kind.get_ref()
                    ),
                );
            }
            let d = SyntheticBackend::default();
            Backend::Synthetic(SyntheticBackend {
                ttft: cx.millis(b.ttft_ms.as_ref(), "ttft_ms", 600_000, d.ttft),
                itl: cx.millis(b.itl_ms.as_ref(), "itl_ms", 60_000, d.itl),
                max_tokens: cx.count(
                    b.max_tokens.as_ref(),
                    "max_tokens",
                    1..1_000_001,
                    d.max_tokens,
                ),
            })
        }
    };
    let config = WorkerConfig {
        name: w.name.get_ref().clone(),
        region: w.region.get_ref().clone(),
        listen: cx.addr(w.listen.as_ref(), DEFAULT_WORKER_LISTEN),
        models: cx.models(w.models.as_ref(), span),
        max_concurrent: cx.count(
            w.max_concurrent.as_ref(),
            "max_concurrent",
            1..100_001,
            DEFAULT_MAX_CONCURRENT.into(),
        ) as u32,
        max_prompt_bytes: cx.count(
            w.max_prompt_bytes.as_ref(),
            "max_prompt_bytes",
            1..(64 << 20) + 1,
            meridian_protocol::limits::DEFAULT_MAX_PROMPT_BYTES as u64,
        ) as usize,
        load_report: cx.millis(
            w.load_report_ms.as_ref(),
            "load_report_ms",
            60_000,
            DEFAULT_LOAD_REPORT,
        ),
        ack_eliciting_threshold: w
            .ack_eliciting_threshold
            .as_ref()
            .map(|t| cx.count(Some(t), "ack_eliciting_threshold", 1..1001, 2) as u32),
        tls: cx.tls(raw.tls.as_ref()),
        backend,
        telemetry: cx.telemetry(raw.telemetry.as_ref(), "meridian-worker"),
    };
    cx.finish(config)
}

fn openai_backend(cx: &mut Ctx<'_>, b: &RawBackend) -> OpenAiBackend {
    let (authority, path_prefix) = match &b.base_url {
        None => {
            cx.err(
                Some(b.kind.span()),
                "backend `openai` needs `base_url`, e.g. \"http://127.0.0.1:8000/v1\"",
            );
            (String::new(), String::new())
        }
        Some(u) => cx.http_url(
            u.get_ref(),
            Some(u.span()),
            "base_url",
            "run the worker beside the server",
        ),
    };
    let api_key = match (&b.api_key, &b.api_key_env) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(var)) => match std::env::var(var.get_ref()) {
            Ok(k) => Some(k),
            Err(_) => {
                cx.err(
                    Some(var.span()),
                    format!("environment variable `{}` is not set", var.get_ref()),
                );
                None
            }
        },
        (None, None) => None,
    };
    OpenAiBackend {
        authority,
        path_prefix,
        api_key,
        model_map: b.model_map.clone(),
        timeout: cx.millis(
            b.timeout_ms.as_ref(),
            "timeout_ms",
            600_000,
            Duration::from_secs(30),
        ),
    }
}

//! `RawConfig` → `Config` (an edge's topology file), reporting every problem with its
//! location.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::ctx::Ctx;
use super::raw::*;
use super::*;

/// Parses and validates an edge/topology config. `file` is used in error locations.
pub fn parse_config(src: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx::new(src, file);
    let Some(raw) = cx.parse::<RawConfig>() else {
        return Err(cx.into_errors());
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
    let mut tenant_limits = HashMap::new();
    for (tenant, t) in &raw.tenants {
        let limits = cx.tenant_limits(t.get_ref());
        if limits != TenantLimits::default() {
            tenant_limits.insert(tenant.clone(), limits);
        }
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
    let mut members = super::Members::default();
    for w in &raw.workers {
        let span = w.span();
        let w = w.get_ref();
        cx.name(&w.name, "worker name");
        if !members.insert_name(w.name.get_ref()) {
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
        if !members.insert_address(address) {
            cx.err(
                Some(w.address.span()),
                format!("address {address} is used by two workers"),
            );
        }
        let models = cx.models(w.models.as_ref(), span.clone());
        let weight = cx.count(w.weight.as_ref(), "weight", 1..1001, 1) as u32;
        let trust = cx.trust(
            w.pin.as_ref(),
            raw.upstream.as_ref().and_then(|u| u.ca.as_ref()),
            &format!("worker `{}`", w.name.get_ref()),
            span,
        );
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
        handshake_timeout: Duration::from_millis(cx.count(
            e.and_then(|e| e.handshake_timeout_ms.as_ref()),
            "handshake_timeout_ms",
            100..60_001,
            DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64,
        )),
        validate_addresses_above: cx.count(
            e.and_then(|e| e.validate_addresses_above.as_ref()),
            "validate_addresses_above",
            0..1_000_001,
            DEFAULT_VALIDATE_ADDRESSES_ABOVE.into(),
        ) as u32,
        max_buffered_bytes: cx.count(
            e.and_then(|e| e.max_buffered_bytes.as_ref()),
            "max_buffered_bytes",
            (64 << 10)..(64 << 30) + 1,
            DEFAULT_MAX_BUFFERED_BYTES,
        ),
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
        admin_token_env: e.and_then(|e| e.admin_token_env.as_ref()).map(|v| {
            match std::env::var(v.get_ref()) {
                Ok(t) if t.len() >= 16 => {}
                Ok(_) => cx.err(
                    Some(v.span()),
                    format!(
                        "admin token in ${} must be at least 16 characters",
                        v.get_ref()
                    ),
                ),
                Err(_) => cx.err(
                    Some(v.span()),
                    format!(
                        "admin_token_env: environment variable ${} is not set",
                        v.get_ref()
                    ),
                ),
            }
            v.get_ref().clone()
        }),
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
        intake_timeout: Duration::from_millis(cx.count(
            e.and_then(|e| e.intake_timeout_ms.as_ref()),
            "intake_timeout_ms",
            10..600_001,
            DEFAULT_INTAKE_TIMEOUT.as_millis() as u64,
        )),
        upstream_stall_timeout: Some(cx.millis(
            e.and_then(|e| e.upstream_stall_timeout_ms.as_ref()),
            "upstream_stall_timeout_ms",
            86_400_000,
            DEFAULT_UPSTREAM_STALL_TIMEOUT,
        ))
        .filter(|d| !d.is_zero()),
        resume_buffer_bytes: cx.count(
            e.and_then(|e| e.resume_buffer_bytes.as_ref()),
            "resume_buffer_bytes",
            1024..(16 << 20) + 1,
            DEFAULT_RESUME_BUFFER_BYTES,
        ) as usize,
        resume_buffer_total_bytes: cx.count(
            e.and_then(|e| e.resume_buffer_total_bytes.as_ref()),
            "resume_buffer_total_bytes",
            (64 << 10)..(64 << 30) + 1,
            DEFAULT_RESUME_BUFFER_TOTAL_BYTES,
        ),
        http_resumable_models: e
            .and_then(|e| e.http_resumable_models.as_ref())
            .map(|models| {
                models
                    .iter()
                    .map(|m| {
                        let served = raw.workers.iter().any(|w| {
                            (w.get_ref().models.as_ref())
                                .is_some_and(|ms| ms.get_ref().contains(m.get_ref()))
                        });
                        if !served {
                            cx.err(
                                Some(m.span()),
                                format!(
                                    "http_resumable_models: no worker serves model `{}`",
                                    m.get_ref()
                                ),
                            );
                        }
                        m.get_ref().clone()
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ack_eliciting_threshold: e
            .and_then(|e| e.ack_eliciting_threshold.as_ref())
            .map(|t| cx.count(Some(t), "ack_eliciting_threshold", 1..1001, 2) as u32),
        migration: e.and_then(|e| e.migration).unwrap_or(true),
        http_tls: e
            .and_then(|e| e.http_tls.as_ref())
            .is_some_and(|t| *t.get_ref()),
        alt_svc_port: e
            .and_then(|e| e.alt_svc_port.as_ref())
            .map(|p| cx.count(Some(p), "alt_svc_port", 0..65536, 0) as u16),
        watch_config: Some(cx.millis(
            e.and_then(|e| e.watch_config_ms.as_ref()),
            "watch_config_ms",
            3_600_000,
            DEFAULT_WATCH_CONFIG,
        ))
        .filter(|d| !d.is_zero()),
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
        client_identity: match (
            u.and_then(|u| u.client_cert.as_ref()),
            u.and_then(|u| u.client_key.as_ref()),
        ) {
            (Some(c), Some(k)) => Some((
                cx.file(c, "[upstream] client_cert"),
                cx.file(k, "[upstream] client_key"),
            )),
            (Some(s), None) | (None, Some(s)) => {
                cx.err(
                    Some(s.span()),
                    "[upstream] needs both `client_cert` and `client_key` for mutual TLS, or neither",
                );
                None
            }
            (None, None) => None,
        },
        connections_per_worker: cx.count(
            u.and_then(|u| u.connections_per_worker.as_ref()),
            "connections_per_worker",
            1..17,
            DEFAULT_CONNECTIONS_PER_WORKER.into(),
        ) as u32,
        initial_rtt: cx
            .millis(
                u.and_then(|u| u.initial_rtt_ms.as_ref()),
                "initial_rtt_ms",
                10_000,
                DEFAULT_UPSTREAM_INITIAL_RTT,
            )
            .max(Duration::from_millis(1)),
        link: cx.link(&u.map(|u| u.link()).unwrap_or_default(), "[upstream]"),
    };
    if edge.http.is_none() {
        // The front door's options without the front door would silently do nothing.
        let http_tls = e.and_then(|e| e.http_tls.as_ref()).filter(|t| *t.get_ref());
        let alt_svc = e.and_then(|e| e.alt_svc_port.as_ref());
        for (key, at) in [
            ("http_tls", http_tls.map(|t| t.span())),
            ("alt_svc_port", alt_svc.map(|p| p.span())),
        ] {
            if let Some(at) = at {
                cx.err(
                    Some(at),
                    format!(
                        "`{key}` needs the HTTP front door: set [edge] http = \"127.0.0.1:8080\""
                    ),
                );
            }
        }
    }
    if let (Some(a), Some(h)) = (edge.admin, edge.http) {
        if a == h && a.port() != 0 {
            let span = e.and_then(|e| e.admin.as_ref()).map(|s| s.span());
            cx.err(
                span,
                format!("admin and http are both {a}: give each its own address"),
            );
        }
    }
    if let Some(a) = edge.admin {
        let public = e.and_then(|e| e.admin_public).unwrap_or(false);
        if !a.ip().is_loopback() && !public {
            let span = e.and_then(|e| e.admin.as_ref()).map(|s| s.span());
            cx.err(span, format!("admin listener {a} is not on loopback: /metrics and /routes expose the topology. Bind 127.0.0.1, or set `admin_public = true` (with `admin_token_env`) to expose it"));
        }
        if !a.ip().is_loopback() && public && edge.admin_token_env.is_none() {
            let span = e.and_then(|e| e.admin.as_ref()).map(|s| s.span());
            cx.err(span, "a public admin listener needs `admin_token_env` (a bearer token every admin request must carry)");
        }
    }
    if let Some(ca) = raw.tls.as_ref().and_then(|t| t.client_ca.as_ref()) {
        cx.err(
            Some(ca.span()),
            "[tls] client_ca belongs in a worker config (workers verify edges); an edge presents [upstream] client_cert",
        );
    }
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
    let hysteresis = match r.and_then(|r| r.hysteresis.as_ref()) {
        None => DEFAULT_HYSTERESIS,
        Some(h) if (0.0..1.0).contains(h.get_ref()) => *h.get_ref(),
        Some(h) => {
            cx.err(
                Some(h.span()),
                format!(
                    "hysteresis must be in 0.0..1.0 (a fraction of a score), got {}",
                    h.get_ref()
                ),
            );
            DEFAULT_HYSTERESIS
        }
    };
    let routing = RoutingSettings {
        load_factor,
        objective: cx.objective(r.and_then(|r| r.objective.as_ref())),
        weights: cx.weights(r.and_then(|r| r.weights.as_ref())),
        hysteresis,
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
    let health = cx.health(raw.health.as_ref());
    let region_names: Vec<String> = regions.iter().map(|r| r.name.clone()).collect();
    let discovery = cx.discovery(
        &raw.discovery,
        &region_names,
        raw.upstream.as_ref().and_then(|u| u.ca.as_ref()),
    );
    let telemetry = cx.telemetry(raw.telemetry.as_ref(), "meridian-edge", true);
    let quic_lb = raw.quic_lb.as_ref().map(|q| cx.quic_lb(q.get_ref()));
    let auth = cx.auth(raw.auth.as_ref(), &tenants);
    let shared_limits = cx.shared_limits(raw.limits.as_ref());
    // Workers' and discovery sources' models share the 64 model bits.
    let distinct: HashSet<&String> = (workers.iter().flat_map(|w| &w.models))
        .chain(discovery.iter().flat_map(|d| &d.models))
        .collect();
    if distinct.len() > crate::route::table::MAX_MODELS {
        cx.err(
            Some(0..0),
            format!(
                "{} distinct models (workers' and discovery sources'); at most {} are supported",
                distinct.len(),
                crate::route::table::MAX_MODELS
            ),
        );
    }
    let warnings = cx.take_warnings();
    cx.finish(Config {
        edge,
        upstream,
        health,
        routing,
        regions,
        areas,
        area_groups,
        residency,
        tenants,
        tenant_limits,
        auth,
        shared_limits,
        warnings,
        workers,
        discovery,
        telemetry,
        quic_lb,
    })
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    crate::auth::key::parse_hex(s)?.try_into().ok()
}

impl Ctx<'_> {
    /// `[quic_lb]`: a hex server id of 1–15 bytes, a config id 0–6, a nonce of 4–18 bytes
    /// (default 8, or what fits), server id + nonce ≤ 19 bytes.
    fn quic_lb(&mut self, q: &RawQuicLb) -> QuicLbSettings {
        let server_id = match crate::quic_lb::parse_server_id(q.server_id.get_ref()) {
            Some(id) if (1..=15).contains(&id.len()) => id,
            _ => {
                self.err(
                    Some(q.server_id.span()),
                    format!(
                        "server_id `{}` must be 1–15 bytes of hex, like \"0x0123456789abcdef\" (AWS NLB: 8 bytes)",
                        q.server_id.get_ref()
                    ),
                );
                vec![0]
            }
        };
        let room = 19 - server_id.len() as u64;
        let nonce_len = match &q.nonce_len {
            Some(n) if *n.get_ref() > room => {
                self.err(
                    Some(n.span()),
                    format!("nonce_len {} + a {}-byte server_id exceeds the 19 bytes a connection ID has after its first octet", n.get_ref(), server_id.len()),
                );
                4
            }
            n => self.count(n.as_ref(), "nonce_len", 4..19, 8.min(room).max(4)),
        };
        QuicLbSettings {
            server_id,
            config_id: self.count(q.config_id.as_ref(), "config_id", 0..7, 0) as u8,
            nonce_len: nonce_len as usize,
        }
    }
}

//! The admin API of routing: `/routes` (the live table with every region's score inputs and
//! every worker's observed health), `/routes/explain?model=…&area=…&tenant=…&residency=…`
//! (one decision on the live state, what `meridian route --admin` prints) and
//! `PUT /regions/NAME` with `{"price_per_mtok": …, "carbon_g_per_kwh": …}` (prices and
//! carbon intensity change at run time; the scorer uses them from its next tick).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Response, StatusCode};
use meridian_fabric::route::{RouteRequest, Router};
use serde_json::json;

use crate::admin::text;

/// Largest region update body.
const MAX_UPDATE_BYTES: usize = 4096;

/// The live routing table as JSON.
pub fn routes(router: &Router) -> serde_json::Value {
    // One table: its generation's config, live state and status, consistent with each other.
    let table = router.table();
    let topo = &table.topology;
    let cfg = &topo.config;
    let scored = router.scored_in(&table);
    let regions: Vec<_> = cfg
        .regions
        .iter()
        .enumerate()
        .map(|(r, region)| {
            json!({
                "name": region.name,
                "provider": region.provider,
                "jurisdiction": region.jurisdiction,
                "healthy_workers": table.regions[r].healthy.iter().map(|w| &cfg.workers[*w].name).collect::<Vec<_>>(),
                "capacity": table.regions[r].capacity,
                "in_flight": topo.regions[r].in_flight.current(),
                "status": scored.regions[r],
            })
        })
        .collect();
    let workers: Vec<_> = cfg
        .workers
        .iter()
        .enumerate()
        .map(|(w, worker)| {
            let s = &topo.workers[w];
            let h = &s.health;
            json!({
                "name": worker.name,
                "region": cfg.regions[worker.region].name,
                "address": worker.address.to_string(),
                "models": worker.models,
                "healthy": s.is_healthy(),
                "capacity": s.capacity(),
                "in_flight": s.local_in_flight(),
                "load": s.load(),
                "rtt_ms": h.path_rtt().map(|d| d.as_secs_f64() * 1e3),
                "loss": h.loss(),
                "ttft_ms": h.ttft_ms(),
                "error_rate": h.error_rate(),
                "consecutive_failures": h.consecutive_failures(),
                "ejected": h.is_ejected(),
                "ejections": h.ejections.load(std::sync::atomic::Ordering::Relaxed),
            })
        })
        .collect();
    let mut areas: Vec<_> = table
        .scored
        .area_order
        .iter()
        .map(|(area, order)| {
            (
                area.clone(),
                order
                    .iter()
                    .map(|r| cfg.regions[*r].name.clone())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    areas.sort();
    let areas: serde_json::Map<String, serde_json::Value> =
        areas.into_iter().map(|(k, v)| (k, json!(v))).collect();
    json!({
        "epoch": table.epoch,
        "generation": topo.generation,
        "objective": format!("{:?}", cfg.routing.objective).to_lowercase(),
        "regions": regions,
        "workers": workers,
        "areas": areas,
    })
}

/// Decodes one `application/x-www-form-urlencoded` value (`+` and `%XX`).
fn decode(v: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%' && i + 2 < b.len())
            .then(|| Some(hex(b[i + 1])? << 4 | hex(b[i + 2])?))
            .flatten();
        match (b[i], escaped) {
            (_, Some(x)) => {
                out.push(x);
                i += 2;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /routes/explain`: one routing decision on the live state (no slot is held).
pub fn explain(router: &Router, query: Option<&str>) -> Response<Full<Bytes>> {
    let mut q = std::collections::HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        q.insert(decode(k), decode(v));
    }
    let cfg = router.config();
    let model = q
        .get("model")
        .cloned()
        .or_else(|| cfg.workers.first().and_then(|w| w.models.first().cloned()))
        .unwrap_or_default();
    let key = q.get("shard_key").cloned().unwrap_or_default();
    let req = RouteRequest {
        model: &model,
        area: q
            .get("area")
            .map(String::as_str)
            .or(cfg.edge.default_area.as_deref()),
        tenant: q.get("tenant").map(String::as_str),
        residency: q.get("residency").map(String::as_str),
        shard_key: key.as_bytes(),
        exclude: &[],
        pinned: None,
    };
    let e = router.explain(&req);
    text(
        StatusCode::OK,
        "application/json",
        serde_json::to_string(&e).expect("explanations serialise"),
    )
}

/// `PUT /regions/NAME`: sets the region's price and/or carbon intensity.
pub async fn update_region(
    router: &Router,
    name: &str,
    body: hyper::body::Incoming,
) -> Response<Full<Bytes>> {
    let bad = |msg: String| text(StatusCode::BAD_REQUEST, "text/plain", msg + "\n");
    let unknown = || {
        text(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no region `{name}`\n"),
        )
    };
    if router.config().region_id(name).is_none() {
        return unknown();
    }
    let bytes = match Limited::new(body, MAX_UPDATE_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return bad(format!(
                "the body must be JSON of at most {MAX_UPDATE_BYTES} bytes"
            ))
        }
    };
    let v: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return bad(format!("invalid JSON: {e}")),
    };
    let Some(obj) = v.as_object() else {
        return bad("expected an object like {\"price_per_mtok\": 0.5}".into());
    };
    let mut values = [None, None];
    for (k, v) in obj {
        let slot = match k.as_str() {
            "price_per_mtok" => 0,
            "carbon_g_per_kwh" => 1,
            other => {
                return bad(format!(
                    "unknown field `{other}` (price_per_mtok, carbon_g_per_kwh)"
                ))
            }
        };
        match v.as_f64().filter(|x| x.is_finite() && *x >= 0.0) {
            Some(x) => values[slot] = Some(x),
            None => return bad(format!("{k} must be a non-negative number")),
        }
    }
    if values == [None, None] {
        return bad("nothing to change: give price_per_mtok and/or carbon_g_per_kwh".into());
    }
    // Resolved again in the generation it changes: a reload may have come in between.
    let Some((price, carbon)) = router.set_region_price(name, values[0], values[1]) else {
        return unknown();
    };
    tracing::info!(
        region = name,
        price_per_mtok = price,
        carbon_g_per_kwh = carbon,
        "region price/carbon updated"
    );
    text(
        StatusCode::OK,
        "application/json",
        json!({ "region": name, "price_per_mtok": price, "carbon_g_per_kwh": carbon }).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(decode("de"), "de");
        assert_eq!(decode("llama%2D3+8b"), "llama-3 8b");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}

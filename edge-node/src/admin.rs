//! The edge's admin HTTP listener: `/healthz` (process alive), `/readyz` (ready once at
//! least one upstream worker is connected), `/routes` (live routing table, worker health and
//! load as JSON) and `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use meridian_fabric::edge::EdgeStats;
use meridian_fabric::route::Router;
use meridian_fabric::telemetry::TraceStats;
use serde_json::json;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Admin {
    pub router: Arc<Router>,
    pub stats: Arc<EdgeStats>,
    /// Span export counters, when tracing is on.
    pub traces: Option<Arc<TraceStats>>,
}

/// Binds `addr` and serves the admin endpoints in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr, admin: Admin) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let tcp = crate::listen::accept(&listener, "admin").await;
            let admin = admin.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(handle(&req, &admin)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn handle(req: &Request<Incoming>, a: &Admin) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let (healthy, total) = (a.router.healthy_workers(), a.router.config().workers.len());
            let status = if healthy > 0 {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(
                status,
                "application/json",
                json!({ "ready": healthy > 0, "healthy_workers": healthy, "workers": total })
                    .to_string(),
            )
        }
        "/routes" => text(
            StatusCode::OK,
            "application/json",
            routes(&a.router).to_string(),
        ),
        "/metrics" => {
            let mut body = a.stats.render(&a.router);
            if let Some(t) = &a.traces {
                t.render(&mut body);
            }
            text(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        other => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no admin endpoint {other}\n"),
        ),
    }
}

/// The live routing table as JSON.
pub fn routes(router: &Router) -> serde_json::Value {
    let cfg = router.config();
    let table = router.table();
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
                "in_flight": router.region_in_flight(r),
            })
        })
        .collect();
    let workers: Vec<_> = cfg
        .workers
        .iter()
        .enumerate()
        .map(|(w, worker)| {
            let s = router.worker(w);
            json!({
                "name": worker.name,
                "region": cfg.regions[worker.region].name,
                "address": worker.address.to_string(),
                "models": worker.models,
                "healthy": s.is_healthy(),
                "capacity": s.capacity(),
                "in_flight": s.local_in_flight(),
                "load": s.load(),
            })
        })
        .collect();
    let mut areas: Vec<_> = table
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
    json!({ "epoch": table.epoch, "regions": regions, "workers": workers, "areas": areas })
}

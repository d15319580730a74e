//! The edge's admin HTTP listener: `/healthz` (process alive), `/readyz` (ready once at
//! least one upstream worker is connected), `/routes` (live routing table, region scores,
//! worker health and load as JSON), `/routes/explain` (one decision, step by step),
//! `PUT /regions/NAME` (price and carbon at run time; `routes_api`) and `/metrics`
//! (Prometheus text).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use meridian_fabric::edge::EdgeStats;
use meridian_fabric::route::Router;
use meridian_fabric::telemetry::TraceStats;
use serde_json::json;

/// Most admin connections served at once; more wait in the listen backlog.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;
/// Longest an admin client may take to send a request head, and the longest an idle
/// keep-alive connection stays open.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Admin {
    pub router: Arc<Router>,
    pub stats: Arc<EdgeStats>,
    /// Span export counters, when tracing is on.
    pub traces: Option<Arc<TraceStats>>,
    /// Bearer token every request must carry (`[edge] admin_token_env`); `None`: open.
    pub token: Option<Arc<str>>,
}

/// Binds `addr` and serves the admin endpoints in the background; returns the bound address.
/// Bounded: [`MAX_ADMIN_CONNECTIONS`] at once, each closed after [`ADMIN_TIMEOUT`] without a
/// request head.
pub async fn spawn(addr: SocketAddr, admin: Admin) -> anyhow::Result<SocketAddr> {
    let admin = Arc::new(admin);
    serve_http(addr, "admin", move |req| {
        let admin = admin.clone();
        async move { serve(req, &admin).await }
    })
    .await
}

/// Binds `addr` and answers each HTTP/1.1 request with `handler` in the background, as the
/// admin listener does (bounded connections, head timeout); returns the bound address.
pub async fn serve_http<F, Fut>(
    addr: SocketAddr,
    what: &'static str,
    handler: F,
) -> anyhow::Result<SocketAddr>
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(ADMIN_TIMEOUT)
        .max_buf_size(64 * 1024);
    let h1 = Arc::new(h1);
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let tcp = crate::listen::accept(&listener, what).await;
            let (handler, h1) = (handler.clone(), h1.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = h1.serve_connection(TokioIo::new(tcp), svc).await;
                drop(slot);
            });
        }
    });
    Ok(bound)
}

/// A worker's probe listener (`[worker] health`): `/healthz` while the process runs,
/// `/readyz` 200 while it takes requests and 503 once it drains.
pub async fn spawn_worker_probes(
    addr: SocketAddr,
    draining: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<SocketAddr> {
    serve_http(addr, "health", move |req| {
        let draining = draining.clone();
        async move {
            let ready = !draining.load(std::sync::atomic::Ordering::Acquire);
            match (req.uri().path(), ready) {
                ("/healthz", _) => text(StatusCode::OK, "text/plain", "ok\n".into()),
                ("/readyz", true) => text(StatusCode::OK, "text/plain", "ready\n".into()),
                ("/readyz", false) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "draining\n".into(),
                ),
                (other, _) => text(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    format!("no endpoint {other} (/healthz, /readyz)\n"),
                ),
            }
        }
    })
    .await
}

/// One admin request: the token first, then a region update (which has a body) or a read.
async fn serve(req: Request<hyper::body::Incoming>, a: &Admin) -> Response<Full<Bytes>> {
    if req.method() == Method::GET {
        return authorized(&req, a);
    }
    if let Some(r) = refused(&req, a) {
        return r;
    }
    match req.uri().path().strip_prefix("/regions/") {
        Some(name) if req.method() == Method::PUT => {
            let name = name.to_owned();
            crate::routes_api::update_region(&a.router, &name, req.into_body()).await
        }
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET, and PUT /regions/NAME\n".into(),
        ),
    }
}

/// Paths answered without the token: the liveness and readiness probes (a kubelet's
/// `httpGet` probe cannot carry a secret), which tell only whether the edge is up and how
/// many workers it reaches.
const PROBES: [&str; 2] = ["/healthz", "/readyz"];

/// A read ([`handle`]) behind the bearer token (the probes are open).
fn authorized<B>(req: &Request<B>, a: &Admin) -> Response<Full<Bytes>> {
    if PROBES.contains(&req.uri().path()) {
        return handle(req, a);
    }
    refused(req, a).unwrap_or_else(|| handle(req, a))
}

/// The 401 for a request without the bearer token, when one is configured (compared in
/// constant time); `None` when the request may proceed.
fn refused<B>(req: &Request<B>, a: &Admin) -> Option<Response<Full<Bytes>>> {
    if let Some(token) = &a.token {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok = given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0;
        if !ok {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "admin token required: Authorization: Bearer <token>\n".into(),
            );
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            return Some(r);
        }
    }
    None
}

pub(crate) fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn handle<B>(req: &Request<B>, a: &Admin) -> Response<Full<Bytes>> {
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
            crate::routes_api::routes(&a.router).to_string(),
        ),
        "/routes/explain" => crate::routes_api::explain(&a.router, req.uri().query()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_is_required_when_configured() {
        let cfg = meridian_fabric::config::parse_config(
            meridian_fabric::demo::TOPOLOGY,
            std::path::Path::new("demo.toml"),
        )
        .unwrap();
        let router = Arc::new(Router::new(Arc::new(cfg.clone())));
        let mut a = Admin {
            router,
            stats: Arc::new(EdgeStats::new(&cfg)),
            traces: None,
            token: Some("s3cret-admin-token-1".into()),
        };
        let req = |auth: Option<&str>| {
            let mut b = Request::get("/metrics");
            if let Some(v) = auth {
                b = b.header("authorization", v);
            }
            b.body(()).unwrap()
        };
        assert_eq!(authorized(&req(None), &a).status(), 401);
        assert_eq!(authorized(&req(Some("Bearer wrong")), &a).status(), 401);
        assert_eq!(
            authorized(&req(Some("Bearer s3cret-admin-token-1")), &a).status(),
            200
        );
        let probe = |path: &str| Request::get(path).body(()).unwrap();
        assert_eq!(
            authorized(&probe("/healthz"), &a).status(),
            200,
            "probes are open"
        );
        assert_eq!(
            authorized(&probe("/readyz"), &a).status(),
            503,
            "no worker yet"
        );
        assert_eq!(authorized(&probe("/routes"), &a).status(), 401);
        a.token = None;
        assert_eq!(authorized(&req(None), &a).status(), 200);
    }
}

//! Kubernetes EndpointSlice discovery through kube-rs's real client and watcher, over real
//! HTTP. No kube-apiserver can be installed from this machine's registries, so the API side
//! is a minimal server in this test that implements what the watcher uses of the API: the
//! EndpointSlice list (with `labelSelector` and a `resourceVersion`) and the watch stream
//! (JSON lines of ADDED/MODIFIED/DELETED events since the `resourceVersion` the watcher
//! passes, so a change between its list and its watch is not lost). The edge follows it: a ready endpoint gets
//! traffic, a `serving && terminating` one is drained (its stream finishes, then it is
//! disconnected), a deleted slice removes its workers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request as HttpRequest, Response};
use meridian_fabric::config::ServerTls;
use meridian_fabric::tls::Identity;
use meridian_protocol::client::Request;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::support::*;

const PATH: &str = "/apis/discovery.k8s.io/v1/namespaces/inference/endpointslices";

/// The EndpointSlices of one namespace, served as the API server serves them.
struct Api {
    slices: Mutex<Slices>,
    events: broadcast::Sender<String>,
    selectors: Mutex<Vec<String>>,
}

/// The namespace's resource version, its slices, and every event with its version.
#[derive(Default)]
struct Slices {
    version: u64,
    items: BTreeMap<String, Value>,
    log: Vec<(u64, String)>,
}

impl Slices {
    /// Records event `kind` of `slice` at the next version and returns its line.
    fn event(&mut self, kind: &str, slice: &mut Value) -> String {
        self.version += 1;
        slice["metadata"]["resourceVersion"] = json!(self.version.to_string());
        let line = json!({ "type": kind, "object": slice }).to_string();
        self.log.push((self.version, line.clone()));
        line
    }
}

impl Api {
    /// Adds or replaces a slice (ADDED or MODIFIED to watchers).
    fn apply(&self, mut slice: Value) {
        let mut s = self.slices.lock().unwrap();
        let name = slice["metadata"]["name"].as_str().unwrap().to_owned();
        let kind = if s.items.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let line = s.event(kind, &mut slice);
        s.items.insert(name, slice);
        // Sent under the lock: a watch subscribing under it sees each event once.
        let _ = self.events.send(line);
    }

    fn delete(&self, name: &str) {
        let mut s = self.slices.lock().unwrap();
        if let Some(mut slice) = s.items.remove(name) {
            let line = s.event("DELETED", &mut slice);
            let _ = self.events.send(line);
        }
    }

    fn answer(
        self: &Arc<Self>,
        req: &HttpRequest<hyper::body::Incoming>,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let query = req.uri().query().unwrap_or("").to_owned();
        if let Some(sel) = query
            .split('&')
            .find_map(|p| p.strip_prefix("labelSelector="))
        {
            self.selectors
                .lock()
                .unwrap()
                .push(sel.replace("%3D", "=").replace("%2F", "/"));
        }
        if req.uri().path() != PATH {
            return json_response(
                404,
                json!({ "kind": "Status", "status": "Failure", "code": 404 }),
            );
        }
        if query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
        {
            // The events after the watcher's `resourceVersion`, then each new one, one JSON
            // object per line, until the client goes.
            let since: u64 = (query.split('&'))
                .find_map(|p| p.strip_prefix("resourceVersion="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (backlog, rx) = {
                let s = self.slices.lock().unwrap();
                let backlog: Vec<String> = (s.log.iter())
                    .filter(|(v, _)| *v > since)
                    .map(|(_, line)| line.clone())
                    .collect();
                (backlog, self.events.subscribe())
            };
            let backlog = futures_util::stream::iter(
                (backlog.into_iter())
                    .map(|line| Ok::<_, Infallible>(Frame::data(Bytes::from(line + "\n")))),
            );
            let live = futures_util::stream::unfold(rx, |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(line) => {
                            return Some((
                                Ok::<_, Infallible>(Frame::data(Bytes::from(line + "\n"))),
                                rx,
                            ))
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
            let stream = futures_util::StreamExt::chain(backlog, live);
            return Response::builder()
                .header("content-type", "application/json")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap();
        }
        let s = self.slices.lock().unwrap();
        json_response(
            200,
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSliceList",
                "metadata": { "resourceVersion": s.version.to_string() },
                "items": s.items.values().cloned().collect::<Vec<_>>(),
            }),
        )
    }
}

fn json_response(status: u16, v: Value) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(v.to_string()))))
        .unwrap()
}

/// Serves `api` over HTTP/1.1 on a loopback port.
async fn serve(api: Arc<Api>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let api = api.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.answer(&req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// An EndpointSlice of Service `workers` with `endpoints` (address, pod, ready, terminating).
fn slice(name: &str, port: u16, endpoints: &[(&str, &str, bool, bool)]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "inference",
            "labels": { "kubernetes.io/service-name": "workers", "meridian.io/region": "r", "meridian.io/model": "m" },
        },
        "addressType": "IPv4",
        "ports": [{ "name": "meridian", "port": port, "protocol": "UDP" }],
        "endpoints": endpoints.iter().map(|(ip, pod, ready, terminating)| json!({
            "addresses": [ip],
            "conditions": { "ready": ready, "serving": *ready || *terminating, "terminating": terminating },
            "targetRef": { "kind": "Pod", "namespace": "inference", "name": pod },
        })).collect::<Vec<_>>(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_are_followed_through_the_kube_watcher() {
    let dir = scratch("k8s");
    let certs = dir.join("workers");
    let a = worker_at("vllm-0", &certs, "127.0.0.2:0".parse().unwrap(), 150);
    let port = a.addr.port();
    let b = worker_at(
        "vllm-1",
        &certs,
        SocketAddr::from(([127, 0, 0, 3], port)),
        150,
    );
    let (events, _) = broadcast::channel(64);
    let api = Arc::new(Api {
        slices: Mutex::new(Slices::default()),
        events,
        selectors: Mutex::new(Vec::new()),
    });
    api.apply(slice(
        "workers-1",
        port,
        &[("127.0.0.2", "vllm-0", true, false)],
    ));
    let server = serve(api.clone()).await;
    std::fs::write(
        dir.join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{server}\n\
             users:\n- name: test\n  user:\n    token: test-token\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\n"
        ),
    )
    .unwrap();
    let toml = format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\n[tls]\ndev_cert_dir = \"edge\"\n[auth]\nrequired = false\n[[region]]\nname = \"r\"\n\
         [[discovery]]\nname = \"k8s\"\nkind = \"kubernetes\"\nnamespace = \"inference\"\nservice = \"workers\"\n\
         port_name = \"meridian\"\nkubeconfig = \"kubeconfig\"\npin = \"{}\"\n",
        certs.join("cert.pem").display()
    );
    let id = Identity::load(&ServerTls::Dev {
        dir: dir.join("edge"),
    })
    .unwrap();
    let edge = edge_from(&toml, &dir.join("edge.toml"), &id, 1).await;
    assert_eq!(names(&edge), ["k8s/vllm-0"]);
    let selectors = api.selectors.lock().unwrap().clone();
    assert!(
        !selectors.is_empty()
            && (selectors.iter()).all(|s| s == "kubernetes.io/service-name=workers"),
        "the watcher selects the Service's slices: {selectors:?}"
    );

    // A second pod becomes ready: it gets requests.
    api.apply(slice(
        "workers-1",
        port,
        &[
            ("127.0.0.2", "vllm-0", true, false),
            ("127.0.0.3", "vllm-1", true, false),
        ],
    ));
    until_workers(&edge, &["k8s/vllm-0", "k8s/vllm-1"]).await;
    within(
        "both connected",
        edge.router.wait_until(|r| r.healthy_workers() == 2),
    )
    .await;
    let client = pinned_client(edge.addr, &dir.join("edge").join("cert.pem")).await;
    let mut on_0 = None;
    for shard in 0..32u32 {
        let mut r = Request::new("m", "hello");
        r.headers.shard_key = Some(shard.to_le_bytes().to_vec().into());
        let mut g = client.generate(r).await.unwrap();
        if routed(&mut g).await.worker == "k8s/vllm-0" {
            tokens(&mut g).await;
            on_0 = Some(g);
            break;
        }
    }
    let mut on_0 = on_0.expect("a shard key lands on vllm-0");

    // vllm-0 is terminating (still serving): no new requests, its stream finishes.
    api.apply(slice(
        "workers-1",
        port,
        &[
            ("127.0.0.2", "vllm-0", false, true),
            ("127.0.0.3", "vllm-1", true, false),
        ],
    ));
    until_workers(&edge, &["k8s/vllm-1"]).await;
    let (n, end) = finish(&mut on_0, 1).await;
    assert_eq!((n, end.completion_tokens), (150, 150));
    disconnected(&a).await;

    // The slice is deleted: no workers left.
    api.delete("workers-1");
    until_workers(&edge, &[]).await;
    client.close().await;
    edge.stop().await;
    a.stop().await;
    b.stop().await;
}

//! One trace across client → edge → worker → inference server: every node exports spans
//! over OTLP/HTTP to a real HTTP collector on loopback, the spans must form one tree, and
//! the inference server must receive the worker's span as `traceparent`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::TokioIo;
use meridian_protocol::client::Request;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::openai_backend::traced_topology;
use crate::support::within;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A span as received, with the `service.name` of the process that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Value,
}

impl Received {
    fn get(&self, field: &str) -> &str {
        self.span[field].as_str().unwrap_or("")
    }

    fn attr(&self, key: &str) -> Option<&Value> {
        let attrs = self.span["attributes"].as_array()?;
        let a = attrs.iter().find(|a| a["key"] == key)?;
        a["value"].as_object()?.values().next()
    }
}

/// What the loopback server saw: spans posted to it, and the `traceparent` of each
/// inference request.
enum Seen {
    Span(Received),
    Inference(Option<String>),
}

/// One loopback HTTP server playing both ends of the trace: the OTLP/HTTP collector
/// (`POST /v1/traces`, JSON) and the OpenAI-compatible inference server the worker calls
/// (`POST /v1/chat/completions`, one SSE token).
async fn backplane() -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            let service = hyper::service::service_fn(move |req: HttpRequest<Incoming>| {
                let tx = tx.clone();
                async move { Ok::<_, Infallible>(answer(req, &tx).await) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    (addr, rx)
}

async fn answer(
    req: HttpRequest<Incoming>,
    tx: &mpsc::UnboundedSender<Seen>,
) -> Response<Full<Bytes>> {
    let respond = |status, body: &'static str| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    if req.uri().path() == "/v1/chat/completions" {
        let tp = req
            .headers()
            .get("traceparent")
            .map(|v| v.to_str().unwrap().to_owned());
        let _ = tx.send(Seen::Inference(tp));
        let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        return respond(StatusCode::OK, sse);
    }
    if req.uri().path() != "/v1/traces" || req.headers()["content-type"] != "application/json" {
        return respond(StatusCode::NOT_FOUND, "{}");
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let export: Value = serde_json::from_slice(&body).expect("OTLP JSON");
    for rs in export["resourceSpans"].as_array().unwrap() {
        let service = rs["resource"]["attributes"][0]["value"]["stringValue"]
            .as_str()
            .unwrap()
            .to_owned();
        for ss in rs["scopeSpans"].as_array().unwrap() {
            for span in ss["spans"].as_array().unwrap() {
                let service = service.clone();
                let _ = tx.send(Seen::Span(Received {
                    service,
                    span: span.clone(),
                }));
            }
        }
    }
    respond(StatusCode::OK, "{}")
}

/// Receives until `n` spans have arrived; also returns the inference requests' `traceparent`s.
async fn spans(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    n: usize,
) -> (Vec<Received>, Vec<Option<String>>) {
    let (mut spans, mut inference) = (Vec::new(), Vec::new());
    while spans.len() < n {
        match within("spans", rx.recv()).await.expect("server running") {
            Seen::Span(s) => spans.push(s),
            Seen::Inference(tp) => inference.push(tp),
        }
    }
    (spans, inference)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_client_edge_worker_and_backend() {
    let (server, mut rx) = backplane().await;
    let t = traced_topology("traces", &[&server], Some(&server)).await;

    // 1. The client continues its own trace.
    let mut req = Request::new("llama-3-8b", "hello");
    req.headers.trace_context = Some(format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"));
    let (_, text, _) = within("traced", t.client.generate(req).await.unwrap().collect())
        .await
        .unwrap();
    assert_eq!(text, "hi");
    let (got, inference) = spans(&mut rx, 3).await;
    // GenAI semantic conventions: every hop's span is `{operation} {model}`; the edge's
    // server span, its client span per attempt, and the worker's server span.
    let find = |service: &str, kind: u64| {
        (got.iter())
            .find(|s| s.service == service && s.span["kind"].as_u64() == Some(kind))
            .unwrap_or_else(|| panic!("no {service} span of kind {kind}: {got:?}"))
    };
    let (request, attempt, worker) = (
        find("meridian-edge", 2),
        find("meridian-edge", 3),
        find("meridian-worker", 2),
    );
    for s in [request, attempt, worker] {
        assert_eq!(s.get("traceId"), CLIENT_TRACE, "{s:?}");
        assert_eq!(s.get("name"), "chat llama-3-8b", "{s:?}");
        assert_eq!(s.attr("gen_ai.operation.name"), Some(&Value::from("chat")));
        assert!(s.span["status"].get("code").is_none(), "{s:?}");
    }
    assert_eq!(request.get("parentSpanId"), CLIENT_SPAN);
    assert_eq!(attempt.get("parentSpanId"), request.get("spanId"));
    assert_eq!(worker.get("parentSpanId"), attempt.get("spanId"));
    assert_eq!(
        (request.service.as_str(), worker.service.as_str()),
        ("meridian-edge", "meridian-worker")
    );
    assert_eq!(
        (request.span["kind"].as_u64(), attempt.span["kind"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(request.attr("meridian.worker"), Some(&Value::from("w0")));
    assert_eq!(
        request.attr("gen_ai.usage.output_tokens"),
        Some(&Value::from("1"))
    );
    assert_eq!(
        request.attr("gen_ai.provider.name"),
        Some(&Value::from("meridian"))
    );
    assert_eq!(
        worker.attr("gen_ai.provider.name"),
        Some(&Value::from("openai"))
    );
    // The inference server continues the trace under the worker's span.
    let want = format!("00-{CLIENT_TRACE}-{}-01", worker.get("spanId"));
    assert_eq!(inference, [Some(want)]);
    assert_eq!(
        worker.attr("gen_ai.request.model"),
        Some(&Value::from("llama-3-8b"))
    );

    // 2. Without a client trace the edge starts one, and the worker joins it.
    let g = t.client.generate(Request::new("llama-3-8b", "again"));
    within("untraced", g.await.unwrap().collect())
        .await
        .unwrap();
    let (got, _) = spans(&mut rx, 3).await;
    let root = got
        .iter()
        .find(|s| s.service == "meridian-edge" && s.span["kind"].as_u64() == Some(2))
        .unwrap();
    assert_eq!(root.get("parentSpanId"), "");
    assert_ne!(root.get("traceId"), CLIENT_TRACE);
    assert!(
        got.iter().all(|s| s.get("traceId") == root.get("traceId")),
        "{got:?}"
    );

    // 3. A worker's refusal shows as an error on its span and on the edge's.
    let mut bad = Request::new("llama-3-8b", "x");
    bad.headers.body_format = Some(99);
    let mut g = t.client.generate(bad).await.unwrap();
    while let Ok(Some(_)) = within("refused", g.next()).await {}
    let (got, _) = spans(&mut rx, 3).await;
    for s in &got {
        assert_eq!(s.span["status"]["code"], 2, "{s:?}");
    }
    let worker = got.iter().find(|s| s.service == "meridian-worker").unwrap();
    assert_eq!(worker.attr("error.type"), Some(&Value::from("bad_request")));
    assert!(worker.span["status"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown body_format"));

    t.edge.stop().await;
    for w in t.workers {
        w.stop().await;
    }
}

//! Tracer, sampling, OTLP/JSON encoding and the exporter against a loopback HTTP server.

use std::time::Duration;

use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::config::OtlpSettings;

fn settings(authority: String, ratio: f64, max_queue: usize) -> OtlpSettings {
    OtlpSettings {
        authority,
        path: "/v1/traces".into(),
        service_name: "meridian-test".into(),
        sample_ratio: ratio,
        export_interval: Duration::from_secs(3600),
        max_queue,
        metrics: None,
    }
}

/// Accepts HTTP/1.1 requests on loopback, answers each with `status`, and sends each
/// request's (head, body) on the channel.
async fn collector(status: u16) -> (String, tokio::sync::mpsc::UnboundedReceiver<(String, Json)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if tcp.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + 4 + len {
                        if tcp.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                    }
                    let body: Json = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
                    buf.drain(..end + 4 + len);
                    let _ = tx.send((head, body));
                    let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\n{{}}");
                    if tcp.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn spans(body: &Json) -> &Vec<Json> {
    body["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .expect("spans array")
}

#[tokio::test]
async fn exports_a_parented_span_tree_as_otlp_json() {
    let (addr, mut rx) = collector(200).await;
    let tracer = start(Some(&settings(addr, 1.0, 64)), "edge-1");
    let client = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let (root_ctx, child_ctx) = {
        let mut root = tracer.start("meridian.edge.request", SpanKind::Server, client.as_ref());
        root.set("gen_ai.request.model", "m");
        root.set("meridian.attempt", 2u64);
        let mut child = root.child("meridian.edge.attempt", SpanKind::Client);
        child.fail("worker went away");
        (*root.context().unwrap(), *child.context().unwrap())
    };
    tracer.shutdown().await;
    let (head, body) = rx.recv().await.expect("one export");
    assert!(head.starts_with("post /v1/traces http/1.1"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let resource = &body["resourceSpans"][0]["resource"]["attributes"];
    assert_eq!(resource[0]["key"], "service.name");
    assert_eq!(resource[0]["value"]["stringValue"], "meridian-test");
    assert_eq!(resource[1]["value"]["stringValue"], "edge-1");
    let spans = spans(&body);
    assert_eq!(spans.len(), 2);
    // Children end first.
    let (child, root) = (&spans[0], &spans[1]);
    assert_eq!(root["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(root["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(root["spanId"], context::hex(&root_ctx.span_id));
    assert_eq!(root["kind"], 2);
    assert_eq!(root["status"], serde_json::json!({}));
    assert_eq!(root["attributes"][1]["value"]["intValue"], "2");
    assert_eq!(child["traceId"], root["traceId"]);
    assert_eq!(child["parentSpanId"], root["spanId"]);
    assert_eq!(child["spanId"], context::hex(&child_ctx.span_id));
    assert_eq!(child["kind"], 3);
    assert_eq!(child["status"]["code"], 2);
    assert_eq!(child["status"]["message"], "worker went away");
    let start: u64 = root["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u64 = root["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(start > 0 && end >= start);
    let stats = tracer.stats().unwrap();
    assert_eq!(stats.exported.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[tokio::test]
async fn sampling_follows_the_parent_and_the_ratio() {
    let tracer = start(Some(&settings("127.0.0.1:9".into(), 0.0, 64)), "t");
    let root = tracer.start("r", SpanKind::Server, None);
    assert!(!root.recording(), "ratio 0 records no new trace");
    let ctx = root.context().expect("context still propagates");
    assert!(!ctx.sampled());
    let sampled = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert!(tracer
        .start("s", SpanKind::Server, sampled.as_ref())
        .recording());
    let unsampled = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
    let s = tracer.start("s", SpanKind::Server, unsampled.as_ref());
    assert!(!s.recording());
    assert_eq!(s.context().unwrap().trace_id, unsampled.unwrap().trace_id);
    let all = start(Some(&settings("127.0.0.1:9".into(), 1.0, 64)), "t");
    assert!(all.start("r", SpanKind::Server, None).recording());
    let off = Tracer::disabled();
    let span = off.start("r", SpanKind::Server, sampled.as_ref());
    assert!(!span.recording() && span.context().is_none());
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let (addr, mut rx) = collector(200).await;
    let tracer = start(Some(&settings(addr, 1.0, 2)), "t");
    for _ in 0..5 {
        drop(tracer.start("r", SpanKind::Server, None));
    }
    tracer.shutdown().await;
    let (_, body) = rx.recv().await.expect("an export");
    assert_eq!(spans(&body).len(), 2);
    let stats = tracer.stats().unwrap();
    assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(stats.exported.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[tokio::test]
async fn collector_errors_are_counted_not_fatal() {
    let (addr, mut rx) = collector(503).await;
    let tracer = start(Some(&settings(addr, 1.0, 64)), "t");
    drop(tracer.start("r", SpanKind::Server, None));
    tracer.shutdown().await;
    assert!(rx.recv().await.is_some());
    let stats = tracer.stats().unwrap();
    assert_eq!(stats.failed.load(std::sync::atomic::Ordering::Relaxed), 1);
    // Nobody listening at all.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap().to_string();
    drop(listener);
    let tracer = start(Some(&settings(closed, 1.0, 64)), "t");
    drop(tracer.start("r", SpanKind::Server, None));
    tracer.shutdown().await;
    let stats = tracer.stats().unwrap();
    assert_eq!(stats.failed.load(std::sync::atomic::Ordering::Relaxed), 1);
}

//! Workers with the `openai` backend in front of `meridian-bench mock-openai` (a real HTTP
//! server process), through a real edge.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_fabric::config::{
    parse_config, Backend, OpenAiBackend, OtlpSettings, ServerTls, WorkerConfig,
};
use meridian_fabric::edge::{self, EdgeHandle};
use meridian_fabric::shutdown::Shutdown;
use meridian_fabric::tls::Identity;
use meridian_fabric::worker::{self, WorkerHandle};
use meridian_protocol::client::{Client, Request};
use meridian_protocol::{body_format, ErrorCode};

use crate::bench_procs::mock_openai;
use crate::support::*;

pub(crate) struct Topo {
    pub edge: EdgeHandle,
    pub workers: Vec<WorkerHandle>,
    pub client: Client,
}

/// One edge and one `openai`-backed worker per upstream authority.
async fn topology(name: &str, upstreams: &[&str]) -> Topo {
    traced_topology(name, upstreams, None).await
}

/// [`topology`], every node exporting spans to the OTLP/HTTP collector at `otlp`.
pub(crate) async fn traced_topology(name: &str, upstreams: &[&str], otlp: Option<&str>) -> Topo {
    let dir = scratch(name);
    let mut id = Identity::self_signed().unwrap();
    id.write(&dir).unwrap();
    let cert = id.cert_path.clone().unwrap();
    let mut toml = String::from(
        "[edge]\nlisten = \"127.0.0.1:0\"\n[auth]\nrequired = false\n[[region]]\nname = \"r\"\n",
    );
    let telemetry = otlp.map(|authority| OtlpSettings {
        authority: authority.to_owned(),
        path: "/v1/traces".into(),
        service_name: "meridian-worker".into(),
        sample_ratio: 1.0,
        export_interval: Duration::from_millis(50),
        max_queue: 1024,
        metrics: None,
    });
    if let Some(authority) = otlp {
        toml += &format!(
            "[telemetry]\notlp_endpoint = \"http://{authority}\"\nexport_interval_ms = 50\n"
        );
    }
    let mut workers = Vec::new();
    for (i, authority) in upstreams.iter().enumerate() {
        let backend = OpenAiBackend {
            authority: (*authority).to_owned(),
            path_prefix: "/v1".into(),
            api_key: Some("sk-test".into()),
            model_map: BTreeMap::from([("llama-3-8b".to_owned(), "mock-model".to_owned())]),
            timeout: Duration::from_secs(10),
            chat_continuation: Default::default(),
        };
        let wc = WorkerConfig {
            name: format!("w{i}"),
            region: "r".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            models: vec!["llama-3-8b".into()],
            max_concurrent: 16,
            max_prompt_bytes: 1 << 20,
            load_report: Duration::from_millis(100),
            health: None,
            ack_eliciting_threshold: None,
            link: Default::default(),
            tls: ServerTls::Dev { dir: dir.clone() },
            client_ca: None,
            backend: Backend::OpenAi(backend),
            telemetry: telemetry.clone(),
        };
        let w = worker::spawn(wc, &id, Shutdown::new()).unwrap();
        toml += &format!(
            "[[worker]]\nname = \"w{i}\"\nregion = \"r\"\naddress = \"{}\"\nmodels = [\"llama-3-8b\"]\npin = \"{}\"\n",
            w.addr,
            cert.display()
        );
        workers.push(w);
    }
    let config = Arc::new(parse_config(&toml, Path::new("openai-test.toml")).unwrap());
    let edge = edge::spawn(config, &id, Shutdown::new()).unwrap();
    let n = upstreams.len();
    within(
        "workers up",
        edge.router.wait_until(|r| r.healthy_workers() == n),
    )
    .await;
    let client = pinned_client(edge.addr, &cert).await;
    Topo {
        edge,
        workers,
        client,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_backend_streams_tokens_from_an_openai_server() {
    let (_mock, addr) = mock_openai(1, 6).await;
    let t = topology("openai", &[&addr]).await;
    // A plain prompt from the native SDK becomes a chat completion upstream.
    let (_, text, end) = within(
        "prompt",
        t.client
            .generate(Request::new("llama-3-8b", "hello"))
            .await
            .unwrap()
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(text, "mock tokens flow over sse to ");
    assert_eq!(
        end.completion_tokens, 6,
        "usage from the upstream's include_usage chunk"
    );
    // An OpenAI body (what the HTTP front door forwards) keeps its own fields.
    let mut req = Request::new(
        "llama-3-8b",
        Bytes::from_static(br#"{"model":"x","prompt":"hi","max_tokens":3}"#),
    );
    req.headers.body_format = Some(body_format::OPENAI_COMPLETIONS);
    let (_, text, end) = within(
        "completions",
        t.client.generate(req).await.unwrap().collect(),
    )
    .await
    .unwrap();
    assert_eq!(
        (text.as_str(), end.completion_tokens),
        ("mock tokens flow ", 3)
    );
    // A body that is not JSON is the client's error.
    let mut req = Request::new("llama-3-8b", "not json");
    req.headers.body_format = Some(body_format::OPENAI_CHAT);
    let err = within("bad body", t.client.generate(req).await.unwrap().collect())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BAD_REQUEST));
    let _ = t.edge.router.healthy_workers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backend_is_upstream_failed_and_cancel_stops_upstream() {
    // Port 9 on loopback: nothing listens, the connection is refused.
    let t = topology("openai-down", &["127.0.0.1:9"]).await;
    let err = within(
        "down",
        t.client
            .generate(Request::new("llama-3-8b", "x"))
            .await
            .unwrap()
            .collect(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UPSTREAM_FAILED), "{err}");

    let (_mock, addr) = mock_openai(5, 100_000).await;
    let t = topology("openai-cancel", &[&addr]).await;
    let mut g = t
        .client
        .generate(Request::new("llama-3-8b", "long"))
        .await
        .unwrap();
    routed(&mut g).await;
    tokens(&mut g).await;
    drop(g);
    let stats = &t.workers[0].stats;
    within(
        "worker cancelled",
        stats.wait_until(|s| s.cancelled == 1 && s.in_flight == 0),
    )
    .await;
}

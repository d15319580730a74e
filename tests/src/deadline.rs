//! `[edge] default_deadline_ms`: a request that carries no deadline still cannot be held
//! forever by a slow worker.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meridian_fabric::config::{parse_config, Backend, ServerTls, SyntheticBackend, WorkerConfig};
use meridian_fabric::edge;
use meridian_fabric::shutdown::Shutdown;
use meridian_fabric::tls::Identity;
use meridian_fabric::worker;
use meridian_protocol::client::{Client, ClientConfig, Request, Trust};
use meridian_protocol::ErrorCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_deadline_get_the_default() {
    let dir = scratch("default-deadline");
    let mut id = Identity::self_signed().unwrap();
    id.write(&dir).unwrap();
    let cert = id.cert_path.clone().unwrap();
    let wc = WorkerConfig {
        name: "w".into(),
        region: "r".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        models: vec!["m".into()],
        max_concurrent: 4,
        max_prompt_bytes: 1 << 20,
        load_report: Duration::from_millis(100),
        ack_eliciting_threshold: None,
        tls: ServerTls::Dev { dir: dir.clone() },
        // Far longer than the default deadline below.
        backend: Backend::Synthetic(SyntheticBackend {
            ttft: Duration::from_millis(1),
            itl: Duration::from_millis(20),
            max_tokens: 100_000,
        }),
        telemetry: None,
    };
    let w = worker::spawn(wc, &id, Shutdown::new()).unwrap();
    let toml = format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\ndefault_deadline_ms = 200\n[[region]]\nname = \"r\"\n\
         [[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"{}\"\nmodels = [\"m\"]\npin = \"{}\"\n",
        w.addr,
        cert.display()
    );
    let config = Arc::new(parse_config(&toml, Path::new("deadline.toml")).unwrap());
    let e = edge::spawn(config, &id, Shutdown::new()).unwrap();
    within(
        "worker up",
        e.router.wait_until(|r| r.healthy_workers() == 1),
    )
    .await;
    let trust = Trust::pin_file(&cert).unwrap();
    let client = within("connect", Client::connect(e.addr, ClientConfig::new(trust)))
        .await
        .unwrap();
    let req = Request::new("m", "no deadline");
    assert_eq!(req.headers.deadline_ms, None);
    let err = within("default deadline", async {
        client.generate(req).await?.collect().await
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::DEADLINE_EXCEEDED), "{err}");
    // The worker was told to stop.
    within("worker cancelled", async {
        while w.stats.snapshot().cancelled == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    e.stop().await;
    w.stop().await;
}

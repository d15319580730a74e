//! `[edge] upstream_stall_timeout_ms`: a worker that goes silent cannot hold a request
//! forever, and a long generation that keeps streaming is never cut.

use std::path::Path;
use std::time::Duration;

use meridian_fabric::config::ServerTls;
use meridian_fabric::edge::EdgeHandle;
use meridian_fabric::shutdown::Shutdown;
use meridian_fabric::tls::Identity;
use meridian_fabric::worker::{self, WorkerHandle};
use meridian_protocol::client::{Client, ClientConfig, Request, Trust};
use meridian_protocol::ErrorCode;

use crate::support::*;

/// One synthetic worker behind an edge whose stall timeout is 200 ms (one attempt).
async fn setup(
    name: &str,
    ttft_ms: u64,
    itl_ms: u64,
    tokens: u64,
) -> (EdgeHandle, WorkerHandle, Client) {
    let dir = scratch(name);
    let mut id = Identity::self_signed().unwrap();
    id.write(&dir).unwrap();
    let cert = id.cert_path.clone().unwrap();
    let mut wc = worker_config(
        ServerTls::Dev { dir: dir.clone() },
        (ttft_ms, itl_ms, tokens),
    );
    wc.max_concurrent = 4;
    let w = worker::spawn(wc, &id, Shutdown::new()).unwrap();
    let toml = format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\nupstream_stall_timeout_ms = 200\n[upstream]\nmax_attempts = 1\n\
         [[region]]\nname = \"r\"\n[[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"{}\"\n\
         models = [\"m\"]\npin = \"{}\"\n[auth]\nrequired = false\n",
        w.addr,
        cert.display()
    );
    let e = edge_from(&toml, Path::new("stall.toml"), &id, 1).await;
    let trust = Trust::pin_file(&cert).unwrap();
    let client = within("connect", Client::connect(e.addr, ClientConfig::new(trust)))
        .await
        .unwrap();
    (e, w, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_given_up_on() {
    // First token after 60 s: far past the 200 ms stall timeout.
    let (e, w, client) = setup("stall-silent", 60_000, 1, 4).await;
    let err = within("stalled request", async {
        client
            .generate(Request::new("m", "x"))
            .await?
            .collect()
            .await
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UPSTREAM_FAILED), "{err}");
    assert!(err.to_string().contains("attempts failed"), "{err}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_that_keeps_streaming_is_never_cut() {
    // 20 tokens 50 ms apart: one second in all, five stall timeouts long.
    let (e, w, client) = setup("stall-streaming", 1, 50, 20).await;
    let (_, _, end) = within("long generation", async {
        client
            .generate(Request::new("m", "x"))
            .await?
            .collect()
            .await
    })
    .await
    .unwrap();
    assert_eq!(end.completion_tokens, 20);
    e.stop().await;
    w.stop().await;
}

//! Outlier ejection: a worker whose inference server answers errors (a real
//! `meridian-bench mock-openai` told to fail) is ejected after its consecutive failures, its
//! region's traffic goes to the other worker, and a one-token probe readmits it once the
//! server recovers.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use meridian_fabric::config::{Backend, OpenAiBackend, ServerTls};
use meridian_fabric::shutdown::Shutdown;
use meridian_fabric::tls::Identity;
use meridian_fabric::worker;
use meridian_protocol::client::Request;

use crate::bench_procs::mock_openai;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_answering_errors_is_ejected_and_readmitted() {
    let dir = scratch("ejection");
    let mut id = Identity::self_signed().unwrap();
    id.write(&dir).unwrap();
    let cert = id.cert_path.clone().unwrap();
    let mut toml = String::from(
        "[edge]\nlisten = \"127.0.0.1:0\"\n[auth]\nrequired = false\n\
         [health]\nscore_interval_ms = 50\neject_consecutive_failures = 3\neject_backoff_min_ms = 200\n\
         [[region]]\nname = \"r\"\n",
    );
    let mut mocks = Vec::new();
    let mut workers = Vec::new();
    for i in 0..2 {
        let (mock, authority) = mock_openai(1, 2).await;
        let mut wc = worker_config(ServerTls::Dev { dir: dir.clone() }, (0, 1, 2));
        wc.name = format!("w{i}");
        wc.backend = Backend::OpenAi(OpenAiBackend {
            authority,
            path_prefix: "/v1".into(),
            api_key: None,
            model_map: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            chat_continuation: Default::default(),
        });
        let w = worker::spawn(wc, &id, Shutdown::new()).unwrap();
        toml += &format!(
            "[[worker]]\nname = \"w{i}\"\nregion = \"r\"\naddress = \"{}\"\nmodels = [\"m\"]\npin = \"{}\"\n",
            w.addr,
            cert.display()
        );
        mocks.push(mock);
        workers.push(w);
    }
    let edge = edge_from(&toml, &dir.join("edge.toml"), &id, 2).await;
    let client = pinned_client(edge.addr, &cert).await;
    let ask = |key: u32| {
        let mut r = Request::new("m", format!("prompt {key}"));
        r.headers.shard_key = Some(format!("session-{key}").into_bytes().into());
        let client = client.clone();
        async move {
            let g = client.generate(r).await.expect("sent");
            let out = within("answer", g.collect()).await;
            out.map(|(routed, _, _)| routed.last().unwrap().worker.clone())
        }
    };
    // w0's inference server starts failing: its requests get UPSTREAM_FAILED until the edge
    // ejects it.
    mocks[0].command("fail 500").await;
    let health = &edge.router.worker(0).health;
    let mut failed = 0;
    for key in 0..200 {
        if health.is_ejected() {
            break;
        }
        if let Err(e) = ask(key).await {
            assert_eq!(
                e.code(),
                Some(meridian_protocol::ErrorCode::UPSTREAM_FAILED),
                "{e}"
            );
            failed += 1;
        }
    }
    assert!(health.is_ejected(), "w0 ejected after its failures");
    // Three failures eject it. The edge records a failure after relaying the ERROR, so on a
    // loaded machine the client's next requests can race the ejection.
    assert!((3..=5).contains(&failed), "{failed} requests saw w0 fail");
    // Ejected: every key goes to w1 now, and is served.
    for key in 200..220 {
        assert_eq!(ask(key).await.expect("served"), "w1");
    }
    // Probes keep failing while the server does; once it recovers, a probe readmits w0.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(health.is_ejected(), "a failing probe keeps it out");
    mocks[0].command("ok").await;
    within(
        "readmitted",
        edge.router.wait_until(|r| !r.worker(0).health.is_ejected()),
    )
    .await;
    let mut w0 = false;
    for key in 300..400 {
        if ask(key).await.expect("served") == "w0" {
            w0 = true;
            break;
        }
    }
    assert!(w0, "the readmitted worker takes its keys again");
    assert!(health.ejections.load(Relaxed) >= 1);
    let metrics = edge.stats.render(&edge.router);
    assert!(
        metrics.contains("meridian_worker_ejections_total{worker=\"w0\",region=\"r\"} 1"),
        "{metrics}"
    );
    client.close().await;
    edge.stop().await;
}

//! Resumable streams (PROTOCOL.md §4.10), in process: a worker killed mid-answer and the
//! client's text still equals an unbroken run's; a sovereign tenant's continuation stays in
//! its policy and fails closed when the policy has no worker left; the memory bound; a
//! cancel after a resumption reaches the worker now generating. (`edge-node/tests/resume.rs`
//! SIGKILLs real worker processes under the native protocol, HTTP/1.1 and HTTP/3.)

use meridian_fabric::config::ServerTls;
use meridian_fabric::edge::EdgeHandle;
use meridian_fabric::shutdown::Shutdown;
use meridian_fabric::tls::Identity;
use meridian_fabric::worker::{self, WorkerHandle};
use meridian_protocol::client::{Client, Event, Generation, Request};
use meridian_protocol::{ErrorCode, Routed};

use crate::support::*;

/// Reads `n` TOKENS events; returns their text.
async fn read_tokens(g: &mut Generation, n: usize) -> String {
    let mut text = String::new();
    for _ in 0..n {
        match within("tokens", g.next()).await.unwrap() {
            Some(Event::Tokens(t)) => text += &t,
            other => panic!("expected TOKENS, got {other:?}"),
        }
    }
    text
}

/// Reads to the end: (text, every ROUTED, the final result).
async fn read_rest(
    g: &mut Generation,
) -> (
    String,
    Vec<Routed>,
    Result<meridian_protocol::End, ErrorCode>,
) {
    let mut text = String::new();
    let mut routes = Vec::new();
    let end = within("rest of the answer", async {
        loop {
            match g.next().await {
                Ok(Some(Event::Tokens(t))) => text += &t,
                Ok(Some(Event::Routed(r))) => routes.push(r),
                Ok(Some(Event::End(e))) => return Ok(e),
                Ok(None) => panic!("generation over without END or error"),
                Err(e) => return Err(e.code().expect("a coded error")),
            }
        }
    })
    .await;
    (text, routes, end)
}

/// The unbroken answer to `req` (resumable, nothing killed).
async fn unbroken(client: &Client, req: Request) -> String {
    let g = client.generate(req).await.unwrap();
    within("unbroken run", g.collect()).await.unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sovereign_stream_resumes_inside_its_policy_then_fails_closed() {
    let mut demo = topology("resume-sovereign", 0, 10, 40).await;
    let client = client(&demo).await;
    let ask = || {
        let mut r = request("de", "Fasse den Bescheid zusammen.").resumable();
        r.headers.credential = credential("bund");
        r
    };
    let want = unbroken(&client, ask()).await;
    let mut g = client.generate(ask()).await.unwrap();
    let first = routed(&mut g).await;
    assert_eq!(first.region, "frankfurt-sovereign");
    let mut text = read_tokens(&mut g, 5).await;
    kill_worker(&mut demo, &first.worker);
    let (rest, routes, end) = read_rest(&mut g).await;
    text += &rest;
    let resumed = routes.first().expect("a resuming ROUTED");
    assert_eq!(resumed.region, "frankfurt-sovereign", "{resumed:?}");
    assert_ne!(resumed.worker, first.worker);
    assert_eq!(resumed.attempt, 2);
    let at = resumed.resumed_at.expect("resumed_at");
    assert!((5..40).contains(&at), "{at}");
    let end = end.expect("the answer completes");
    assert_eq!(text, want, "the resumed answer equals the unbroken one");
    assert_eq!(end.completion_tokens, 40);

    // The sovereign pool's last worker dies mid-answer: nowhere allowed to continue, so the
    // stream fails closed — never a clean END, never another region.
    let mut g = client.generate(ask()).await.unwrap();
    let last = routed(&mut g).await;
    assert_eq!(last.worker, resumed.worker);
    read_tokens(&mut g, 3).await;
    kill_worker(&mut demo, &last.worker);
    let (_, routes, end) = read_rest(&mut g).await;
    assert!(
        routes.iter().all(|r| r.region == "frankfurt-sovereign"),
        "{routes:?}"
    );
    assert_eq!(end.unwrap_err(), ErrorCode::RESIDENCY_UNAVAILABLE);
    let m = demo.edge.stats.render(&demo.edge.router);
    assert!(
        m.contains("meridian_resumes_total{result=\"resumed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("meridian_resumes_total{result=\"exhausted\"} 1"),
        "{m}"
    );
    client.close().await;
    demo.shutdown().await;
}

/// `n` synthetic workers in region `r` (model `m`) behind an edge with `edge_extra` in its
/// `[edge]` section.
async fn fleet(
    name: &str,
    n: usize,
    edge_extra: &str,
    timing: (u64, u64, u64),
) -> (EdgeHandle, Vec<Option<WorkerHandle>>, Client) {
    fleet_with(name, n, edge_extra, timing, |_, _| {}).await
}

/// [`fleet`], with `adjust(i, config)` applied to worker `i`'s config.
async fn fleet_with(
    name: &str,
    n: usize,
    edge_extra: &str,
    timing: (u64, u64, u64),
    adjust: impl Fn(usize, &mut meridian_fabric::config::WorkerConfig),
) -> (EdgeHandle, Vec<Option<WorkerHandle>>, Client) {
    let dir = scratch(name);
    let mut id = Identity::self_signed().unwrap();
    id.write(&dir).unwrap();
    let cert = id.cert_path.clone().unwrap();
    let mut toml = format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\n{edge_extra}\n[auth]\nrequired = false\n[[region]]\nname = \"r\"\n"
    );
    let mut workers = Vec::new();
    for i in 0..n {
        let mut wc = worker_config(ServerTls::Dev { dir: dir.clone() }, timing);
        wc.name = format!("w{i}");
        adjust(i, &mut wc);
        let w = worker::spawn(wc, &id, Shutdown::new()).unwrap();
        toml += &format!(
            "[[worker]]\nname = \"w{i}\"\nregion = \"r\"\naddress = \"{}\"\nmodels = [\"m\"]\npin = \"{}\"\n",
            w.addr,
            cert.display()
        );
        workers.push(Some(w));
    }
    let edge = edge_from(&toml, &dir.join("edge.toml"), &id, n).await;
    let client = pinned_client(edge.addr, &cert).await;
    (edge, workers, client)
}

fn kill(workers: &mut [Option<WorkerHandle>], name: &str) -> WorkerHandle {
    let i: usize = name[1..].parse().unwrap();
    workers[i].take().expect("running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_its_bound_a_stream_fails_as_before_and_the_budget_returns() {
    // 1 KiB per stream; answers of 400 synthetic tokens are ~2.5 KiB.
    let (edge, mut workers, client) =
        fleet("resume-bound", 3, "resume_buffer_bytes = 1024", (0, 5, 400)).await;
    let mut g = client
        .generate(Request::new("m", "a long answer").resumable())
        .await
        .unwrap();
    let first = routed(&mut g).await;
    let text = read_tokens(&mut g, 300).await;
    assert!(text.len() > 1024);
    assert_eq!(
        edge.stats.resume.budget.used(),
        0,
        "given back at the bound"
    );
    kill(&mut workers, &first.worker).kill();
    let (_, routes, end) = read_rest(&mut g).await;
    assert!(routes.is_empty(), "not resumed: {routes:?}");
    assert_eq!(end.unwrap_err(), ErrorCode::UPSTREAM_FAILED);
    let m = edge.stats.render(&edge.router);
    assert!(
        m.contains("meridian_resumes_total{result=\"over_bound\"} 1"),
        "{m}"
    );

    // Within the bound the same setup resumes; the budget is held while the stream runs and
    // returned when it ends.
    let mut short = Request::new("m", "a short answer").resumable();
    short.headers.max_tokens = Some(60);
    let want = unbroken(&client, short.clone()).await;
    let mut g = client.generate(short.clone()).await.unwrap();
    let first = routed(&mut g).await;
    let mut text = read_tokens(&mut g, 10).await;
    assert_eq!(
        edge.stats.resume.budget.used(),
        1024,
        "reserved in steps, capped"
    );
    kill(&mut workers, &first.worker).kill();
    let (rest, routes, end) = read_rest(&mut g).await;
    text += &rest;
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(end.unwrap().completion_tokens, 60);
    assert_eq!(text, want);
    eventually(
        "resume budget returned",
        std::time::Duration::from_secs(5),
        || edge.stats.resume.budget.used() == 0,
    )
    .await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_after_a_resumption_reaches_the_worker_generating() {
    let (_edge, mut workers, client) = fleet("resume-cancel", 2, "", (0, 20, 100_000)).await;
    let mut g = client
        .generate(Request::new("m", "go on and on").resumable())
        .await
        .unwrap();
    let first = routed(&mut g).await;
    read_tokens(&mut g, 3).await;
    kill(&mut workers, &first.worker).kill();
    let resumed = routed(&mut g).await;
    assert_eq!(resumed.resumed_at, Some(3));
    read_tokens(&mut g, 2).await;
    let i: usize = resumed.worker[1..].parse().unwrap();
    let stats = workers[i].as_ref().unwrap().stats.clone();
    assert_eq!(stats.snapshot().in_flight, 1);
    drop(g);
    within(
        "the resumed worker sees the cancel",
        stats.wait_until(|s| s.cancelled == 1 && s.in_flight == 0),
    )
    .await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_worker_gone_a_resumed_stream_ends_in_an_error() {
    let (edge, mut workers, client) = fleet("resume-none-left", 2, "", (0, 10, 100_000)).await;
    let mut g = client
        .generate(Request::new("m", "outlive them all").resumable())
        .await
        .unwrap();
    let first = routed(&mut g).await;
    read_tokens(&mut g, 2).await;
    kill(&mut workers, &first.worker).kill();
    let second = routed(&mut g).await;
    read_tokens(&mut g, 2).await;
    kill(&mut workers, &second.worker).kill();
    let (_, routes, end) = read_rest(&mut g).await;
    assert!(routes.is_empty(), "{routes:?}");
    assert_eq!(end.unwrap_err(), ErrorCode::UPSTREAM_FAILED);
    let m = edge.stats.render(&edge.router);
    assert!(
        m.contains("meridian_resumes_total{result=\"exhausted\"} 1"),
        "{m}"
    );
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_continue_refuses_and_the_stream_fails() {
    use meridian_fabric::config::{Backend, ChatContinuation, OpenAiBackend};
    // w0 synthetic; w1 an `openai` worker whose server cannot continue a chat message.
    let (mock, authority) = crate::bench_procs::mock_openai(1, 50).await;
    let (edge, mut workers, client) =
        fleet_with("resume-refused", 2, "", (0, 10, 100_000), |i, wc| {
            if i == 1 {
                wc.backend = Backend::OpenAi(OpenAiBackend {
                    authority: authority.clone(),
                    path_prefix: "/v1".into(),
                    api_key: None,
                    model_map: Default::default(),
                    timeout: std::time::Duration::from_secs(10),
                    chat_continuation: ChatContinuation::Off,
                });
            }
        })
        .await;
    // A session whose stream starts on the synthetic worker.
    let mut g = None;
    for key in 0..64 {
        let mut r = Request::new("m", "plain prompt").resumable();
        r.headers.shard_key = Some(format!("s{key}").into_bytes().into());
        let mut gen = client.generate(r).await.unwrap();
        if routed(&mut gen).await.worker == "w0" {
            g = Some(gen);
            break;
        }
    }
    let mut g = g.expect("some session lands on w0");
    read_tokens(&mut g, 3).await;
    kill(&mut workers, "w0").kill();
    let resumed = routed(&mut g).await;
    assert_eq!(
        (resumed.worker.as_str(), resumed.resumed_at),
        ("w1", Some(3))
    );
    let err = within("refused", g.collect()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UPSTREAM_FAILED), "{err}");
    assert!(err.to_string().contains("cannot continue"), "{err}");
    let m = edge.stats.render(&edge.router);
    assert!(
        m.contains("meridian_resumes_total{result=\"refused\"} 1"),
        "{m}"
    );
    drop(mock);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_send_continuation_fields() {
    let (_edge, _workers, client) = fleet("resume-forged", 1, "", (0, 1, 3)).await;
    let mut r = Request::new("m", "forged");
    r.headers.resume = Some(meridian_protocol::ResumeFrom {
        offset: 1,
        text_len: 2,
    });
    let err = within("refused", client.generate(r).await.unwrap().collect())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BAD_REQUEST), "{err}");
    client.close().await;
}

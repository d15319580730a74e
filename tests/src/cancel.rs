//! Cancellation end to end: a client dropping its stream stops the worker's generation.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_stops_the_worker() {
    // A long generation: 100k tokens at 5 ms would run for minutes if not cancelled.
    let panics = resumed_panics();
    let demo = topology("cancel", 0, 5, 100_000).await;
    let client = client(&demo).await;
    let mut g = client
        .generate(request("jp", "tell me a very long story"))
        .await
        .unwrap();
    let worker = routed(&mut g).await.worker;
    tokens(&mut g).await;
    let stats = worker_stats(&demo, &worker);
    assert_eq!(stats.snapshot().in_flight, 1, "the worker is generating");
    drop(g);
    // Observe the worker's own state: the generation loop ended because the stream was
    // stopped, not because it finished.
    let s = within(
        "worker cancellation",
        stats.wait_until(|s| s.cancelled == 1 && s.in_flight == 0),
    )
    .await;
    assert_eq!(s.completed, 0);
    assert!(s.tokens < 100_000);
    within("edge counted it", async {
        while demo
            .edge
            .stats
            .cancelled
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The connection and the topology still serve other requests.
    let mut short = request("jp", "short");
    short.headers.max_tokens = Some(5);
    let (_, text, end) = within(
        "next request",
        client.generate(short).await.unwrap().collect(),
    )
    .await
    .unwrap();
    assert!(!text.is_empty());
    assert!(end.completion_tokens > 0);
    client.close().await;
    // The drain waits for every request task: a panic in one would have happened by now.
    demo.shutdown().await;
    assert_eq!(
        resumed_panics(),
        panics,
        "a request task polled a finished future"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_queued_before_first_token() {
    // Cancelling during time-to-first-token also frees the worker.
    let demo = topology("cancel-ttft", 60_000, 5, 10).await;
    let client = client(&demo).await;
    let mut g = client.generate(request("jp", "slow start")).await.unwrap();
    let worker = routed(&mut g).await.worker;
    let stats = worker_stats(&demo, &worker);
    within(
        "request reached worker",
        stats.wait_until(|s| s.in_flight == 1),
    )
    .await;
    g.cancel();
    within(
        "worker cancellation",
        stats.wait_until(|s| s.cancelled == 1 && s.in_flight == 0),
    )
    .await;
    client.close().await;
    demo.shutdown().await;
}

//! Worker failures: retried before the first token (within residency), surfaced as an
//! error after tokens flowed — never a silent clean end.

use meridian_protocol::client::ClientError;
use meridian_protocol::ErrorCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_stream_gives_error_not_end() {
    let mut demo = topology("kill-mid", 0, 5, 100_000).await;
    let client = client(&demo).await;
    let mut g = client
        .generate(request("jp", "stream for a while"))
        .await
        .unwrap();
    let worker = routed(&mut g).await.worker;
    tokens(&mut g).await;
    kill_worker(&mut demo, &worker);
    let err = error_after_tokens(&mut g).await;
    assert_eq!(err.code(), Some(ErrorCode::UPSTREAM_FAILED), "{err}");
    assert!(matches!(
        err,
        ClientError::Remote { .. } | ClientError::Reset(_)
    ));
    client.close().await;
    demo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_before_first_token_retries_inside_residency() {
    // The sovereign tenant's first worker dies during time-to-first-token: the edge retries
    // on the other sovereign worker, never outside the policy.
    let mut demo = topology("retry", 300, 1, 5).await;
    let client = client(&demo).await;
    let mut req = request("de", "Prüfe den Antrag.");
    req.headers.tenant = Some("bund".into());
    req.headers.credential = credential("bund");
    let mut g = client.generate(req).await.unwrap();
    let first = routed(&mut g).await;
    assert_eq!(
        (first.region.as_str(), first.attempt),
        ("frankfurt-sovereign", 1)
    );
    within(
        "request reached worker",
        worker_stats(&demo, &first.worker).wait_until(|s| s.in_flight == 1),
    )
    .await;
    kill_worker(&mut demo, &first.worker);
    let second = routed(&mut g).await; // the retry announces itself
    assert_eq!(second.region, "frankfurt-sovereign");
    assert_eq!(second.attempt, 2);
    assert_ne!(second.worker, first.worker);
    let (_, text, end) = within("rest", g.collect()).await.unwrap();
    assert_eq!(end.completion_tokens, 5);
    assert!(!text.is_empty());

    // With the whole sovereign pool gone the request fails closed.
    kill_worker(&mut demo, &second.worker);
    let sovereign = demo.config.region_id("frankfurt-sovereign").unwrap();
    within(
        "pool down",
        demo.edge.router.wait_until(|r| r.region_down(sovereign)),
    )
    .await;
    let mut req = request("de", "Prüfe den Antrag.");
    req.headers.tenant = Some("bund".into());
    req.headers.credential = credential("bund");
    let err = within("fail closed", client.generate(req).await.unwrap().collect())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RESIDENCY_UNAVAILABLE));
    client.close().await;
    demo.shutdown().await;
}

//! Bad requests get a specific wire code; nothing else is disturbed.

use bytes::Bytes;
use meridian_protocol::client::ClientError;
use meridian_protocol::ErrorCode;

use crate::support::*;

async fn code_of(
    client: &meridian_protocol::client::Client,
    req: meridian_protocol::client::Request,
) -> ErrorCode {
    let err: ClientError = within("request", async {
        client.generate(req).await?.collect().await
    })
    .await
    .unwrap_err();
    err.code().unwrap_or_else(|| panic!("no code in {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_error_has_its_code() {
    let demo = topology("errors", 300, 1, 4).await;
    let c = client(&demo).await;

    let mut r = request("jp", "x");
    r.headers.model = "gpt-unknown".into();
    assert_eq!(code_of(&c, r).await, ErrorCode::MODEL_NOT_FOUND);

    let mut r = request("jp", "x");
    r.headers.tenant = Some("mallory".into());
    assert_eq!(code_of(&c, r).await, ErrorCode::UNAUTHORIZED);

    let mut r = request("jp", "x");
    r.headers.residency = Some("atlantis".into());
    assert_eq!(code_of(&c, r).await, ErrorCode::BAD_REQUEST);

    let r = meridian_protocol::client::Request {
        prompt: Bytes::from(vec![
            b'a';
            meridian_protocol::limits::DEFAULT_MAX_PROMPT_BYTES + 1
        ]),
        ..request("jp", "")
    };
    assert_eq!(code_of(&c, r).await, ErrorCode::TOO_LARGE);

    // Deadline shorter than the workers' time to first token.
    let mut r = request("jp", "x");
    r.headers.deadline_ms = Some(20);
    assert_eq!(code_of(&c, r).await, ErrorCode::DEADLINE_EXCEEDED);

    // The largest integers the protocol carries are served, not a crash: a deadline of
    // 2^62 - 1 ms (past what the clock represents) and max_tokens of 2^62 - 1.
    let mut r = request("jp", "x");
    r.headers.deadline_ms = Some(meridian_protocol::varint::MAX);
    r.headers.max_tokens = Some(meridian_protocol::varint::MAX);
    let (_, _, end) = within("huge integers", c.generate(r).await.unwrap().collect())
        .await
        .unwrap();
    assert_eq!(end.completion_tokens, 4);

    // A residency policy the tenant allows narrows routing; an unknown area uses config order.
    let mut r = request("zz", "x");
    r.headers.residency = Some("eu".into());
    let (routed, _, _) = within("eu residency", c.generate(r).await.unwrap().collect())
        .await
        .unwrap();
    assert_eq!(routed[0].region, "frankfurt");

    let s = &demo.edge.stats;
    assert_eq!(s.errors(ErrorCode::TOO_LARGE), 1);
    assert_eq!(s.errors(ErrorCode::DEADLINE_EXCEEDED), 1);
    c.close().await;
    demo.shutdown().await;
}

//! Graceful edge drain for requests submitted in process (the HTTP front door's path):
//! in-flight ones finish with END, new ones are refused with UNAVAILABLE.

use bytes::Bytes;
use meridian_fabric::demo::{Demo, MODEL};
use meridian_fabric::edge::SubmitError;
use meridian_protocol::{ErrorCode, Frame, RequestHeaders};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_drain_finishes_front_door_requests_and_refuses_new_ones() {
    let demo = topology("drain", 5, 20, 10).await;
    let submitter = demo.edge.submitter();
    let mut headers = RequestHeaders::new(MODEL);
    headers.area = Some("jp".into());
    headers.credential = credential("acme");
    let prompt = Bytes::from_static(b"drain me");
    let mut sub = submitter.submit(headers.clone(), prompt.clone()).unwrap();
    match within("first token", sub.next_frame()).await {
        Some(Frame::Tokens(_)) => {}
        other => panic!("expected TOKENS, got {other:?}"),
    }

    let Demo { edge, workers, .. } = demo;
    let stop = tokio::spawn(edge.stop());
    within("refused while draining", async {
        loop {
            match submitter.submit(headers.clone(), prompt.clone()) {
                Err(e @ SubmitError::Draining) => {
                    break assert_eq!(e.code(), ErrorCode::UNAVAILABLE)
                }
                Err(e) => panic!("unexpected {e}"),
                // Not draining yet: this request is in flight too and must also finish.
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
            }
        }
    })
    .await;

    let end = within("in-flight request finishes", async {
        loop {
            match sub.next_frame().await {
                Some(Frame::Tokens(_)) => {}
                Some(Frame::End(end)) => break end,
                other => panic!("expected the request to finish, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(end.completion_tokens, 10);
    // The drain also waits for the consumer to let go of the submission (an HTTP body
    // writing out its last events); this consumer is done.
    assert!(
        !stop.is_finished(),
        "the edge waits for the submission's holder"
    );
    drop(sub);
    within("edge stops", stop).await.unwrap();
    for w in workers.into_iter().flatten() {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_drain_delivers_every_native_answer_before_closing() {
    // 60 streams of 150 tokens on one client connection; the edge drains while they are all
    // mid-stream. Each must end with END and every token: the connection may close only
    // once the client has acknowledged the last bytes.
    let demo = topology("drain-native", 1, 2, 150).await;
    let client = client(&demo).await;
    let mut gens = Vec::new();
    for i in 0..60 {
        let mut r = request(if i % 2 == 0 { "jp" } else { "fr" }, "drain me");
        r.headers.max_tokens = Some(150);
        gens.push(client.generate(r).await.unwrap());
    }
    for g in &mut gens {
        // Every stream is routed and streaming before the drain starts.
        loop {
            match within("first token", g.next()).await.unwrap() {
                Some(meridian_protocol::client::Event::Tokens(_)) => break,
                Some(_) => {}
                None => panic!("ended before its first token"),
            }
        }
    }
    let Demo { edge, workers, .. } = demo;
    let stop = tokio::spawn(edge.stop());
    for (i, g) in gens.into_iter().enumerate() {
        let (_, _, end) = within("stream finishes during the drain", g.collect())
            .await
            .unwrap_or_else(|e| panic!("stream {i} was cut by the drain: {e}"));
        assert_eq!(end.completion_tokens, 150, "stream {i}");
    }
    within("edge stops", stop).await.unwrap();
    for w in workers.into_iter().flatten() {
        w.stop().await;
    }
}

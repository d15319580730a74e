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

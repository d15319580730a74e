//! Malformed input from a client fails only its own stream: the edge answers ERROR (or
//! resets) on that stream while other streams and connections carry on.

use bytes::{BufMut, Bytes, BytesMut};
use meridian_protocol::io::FrameReader;
use meridian_protocol::{varint, ErrorCode, Frame, FrameType, RequestHeaders};

use crate::support::*;

/// Sends raw bytes on a new stream and returns the code of the ERROR frame answering it.
async fn raw_exchange(conn: &quinn::Connection, bytes: Bytes) -> ErrorCode {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    // The edge may stop reading as soon as it sees the problem; a write error is fine.
    let _ = send.write_chunk(bytes).await;
    let _ = send.finish();
    let mut reader = FrameReader::new(recv);
    loop {
        match within("answer", reader.next()).await {
            Ok(Some(Frame::Error(e))) => return e.code,
            Ok(Some(Frame::Routed(_) | Frame::Tokens(_) | Frame::End(_))) => {
                panic!("malformed request was served")
            }
            Ok(Some(_)) => continue,
            other => panic!("expected an ERROR frame, got {other:?}"),
        }
    }
}

/// HEADERS with the demo credential (the edge authenticates before it routes).
fn headers(mut h: RequestHeaders) -> BytesMut {
    h.credential = credential("acme");
    let mut b = BytesMut::new();
    Frame::Headers(h).encode(&mut b);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_fail_only_their_stream() {
    let demo = topology("malformed", 0, 10, 40).await;
    let a = client(&demo).await;
    let b = client(&demo).await;
    // A healthy long request on connection A, in flight throughout.
    let good = a.generate(request("jp", "keep going")).await.unwrap();
    let conn = a.connection();

    let mut unknown_critical = BytesMut::new();
    varint::encode(0x07, &mut unknown_critical);
    varint::encode(0, &mut unknown_critical);
    assert_eq!(
        raw_exchange(conn, unknown_critical.freeze()).await,
        ErrorCode::PROTOCOL_ERROR
    );

    let mut huge = BytesMut::new();
    meridian_protocol::frame::encode_header(FrameType::HEADERS, 1 << 20, &mut huge);
    assert_eq!(
        raw_exchange(conn, huge.freeze()).await,
        ErrorCode::TOO_LARGE
    );

    let body_first = Frame::Body(Bytes::from_static(b"no headers")).to_bytes();
    assert_eq!(
        raw_exchange(conn, body_first).await,
        ErrorCode::PROTOCOL_ERROR
    );

    let mut truncated = headers(RequestHeaders::new("llama-3-8b"));
    Frame::Body(Bytes::from_static(b"cut short")).encode(&mut truncated);
    truncated.truncate(truncated.len() - 3);
    assert_eq!(
        raw_exchange(conn, truncated.freeze()).await,
        ErrorCode::PROTOCOL_ERROR
    );

    let mut second_headers = headers(RequestHeaders::new("llama-3-8b"));
    second_headers.put(headers(RequestHeaders::new("llama-3-8b")));
    assert_eq!(
        raw_exchange(conn, second_headers.freeze()).await,
        ErrorCode::PROTOCOL_ERROR
    );

    let mut bad_field = BytesMut::new();
    let mut payload = BytesMut::new();
    for (id, v) in [(0x01u64, &b"llama-3-8b"[..]), (0x05, b"NOT AN AREA")] {
        varint::encode(id, &mut payload);
        varint::encode(v.len() as u64, &mut payload);
        payload.put_slice(v);
    }
    meridian_protocol::frame::encode_header(FrameType::HEADERS, payload.len(), &mut bad_field);
    bad_field.put(payload);
    assert_eq!(
        raw_exchange(conn, bad_field.freeze()).await,
        ErrorCode::BAD_REQUEST
    );

    // Unknown extension frames and fields are skipped, not errors.
    let mut extended = headers(RequestHeaders::new("llama-3-8b"));
    varint::encode(0x2a, &mut extended);
    varint::encode(3, &mut extended);
    extended.put_slice(b"ext");
    Frame::Body(Bytes::from_static(b"hello")).encode(&mut extended);
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_chunk(extended.freeze()).await.unwrap();
    send.finish().unwrap();
    let mut reader = FrameReader::new(recv);
    assert!(matches!(
        within("routed", reader.next()).await,
        Ok(Some(Frame::Routed(_)))
    ));

    // An extension frame before HEADERS is skipped too (PROTOCOL.md §3.2), split across
    // writes, and the request is served.
    let mut leading = BytesMut::new();
    varint::encode(0x21, &mut leading);
    varint::encode(4, &mut leading);
    leading.put_slice(b"xtra");
    leading.put(headers(RequestHeaders::new("llama-3-8b")));
    Frame::Body(Bytes::from_static(b"hello")).encode(&mut leading);
    let leading = leading.freeze();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_chunk(leading.slice(..3)).await.unwrap();
    send.write_chunk(leading.slice(3..)).await.unwrap();
    send.finish().unwrap();
    let mut reader = FrameReader::new(recv);
    assert!(matches!(
        within("routed after a leading extension frame", reader.next()).await,
        Ok(Some(Frame::Routed(_)))
    ));

    // A client that resets its send side without STOP_SENDING gets a reset back with
    // CANCELLED (PROTOCOL.md §4.7), never a bare FIN that looks like an empty answer.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_chunk(
        headers(RequestHeaders::new("llama-3-8b"))
            .freeze()
            .slice(..3),
    )
    .await
    .unwrap();
    send.reset(0x6u32.into()).unwrap();
    let mut buf = [0u8; 64];
    match within("server answers the reset", recv.read(&mut buf)).await {
        Err(quinn::ReadError::Reset(code)) => assert_eq!(code.into_inner(), 0x6),
        other => panic!("expected a reset with CANCELLED, got {other:?}"),
    }

    // An unknown unidirectional stream is answered with STOP_SENDING (NO_ERROR) (§5.1).
    let mut uni = conn.open_uni().await.unwrap();
    uni.write_all(&[0x21, 0x00]).await.unwrap();
    let stopped = within("STOP_SENDING on an unknown uni stream", uni.stopped()).await;
    assert_eq!(stopped.unwrap().map(|c| c.into_inner()), Some(0));

    // A wrong credential is refused as soon as HEADERS arrive, before the prompt (no FIN).
    let mut h = RequestHeaders::new("llama-3-8b");
    h.credential = Some(meridian_protocol::Credential("mk_demo-acme_wrong".into()));
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_chunk(Frame::Headers(h).to_bytes())
        .await
        .unwrap();
    send.write_chunk(Frame::Body(Bytes::from_static(b"part of a prompt")).to_bytes())
        .await
        .unwrap();
    let mut reader = FrameReader::new(recv);
    match within("refused before FIN", reader.next()).await {
        Ok(Some(Frame::Error(e))) => assert_eq!(e.code, ErrorCode::UNAUTHORIZED),
        other => panic!("expected ERROR UNAUTHORIZED, got {other:?}"),
    }

    // The good stream on the same connection and a second connection are unaffected.
    let (_, text, end) = within("good stream", good.collect()).await.unwrap();
    assert_eq!(end.completion_tokens, 40);
    assert!(!text.is_empty());
    let (_, _, end) = within(
        "other connection",
        b.generate(request("fr", "hi")).await.unwrap().collect(),
    )
    .await
    .unwrap();
    assert_eq!(end.completion_tokens, 40);
    a.close().await;
    b.close().await;
    demo.shutdown().await;
}

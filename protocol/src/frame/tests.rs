use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::limits::*;

fn name(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-z0-9-]{{1,{max}}}")).expect("valid regex")
}

fn headers() -> impl Strategy<Value = RequestHeaders> {
    (
        name(MAX_MODEL_LEN),
        proptest::option::of(name(MAX_NAME_LEN)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..MAX_SHARD_KEY_LEN)),
        proptest::option::of(name(MAX_NAME_LEN)),
        proptest::option::of(name(MAX_AREA_LEN)),
        proptest::option::of(0..=varint::MAX),
        proptest::option::of(0..=varint::MAX),
        proptest::option::of(0..=MAX_PRIORITY),
        (
            proptest::option::of(".{0,40}"),
            proptest::option::of(0..=varint::MAX),
            proptest::option::of("[!-~]{1,300}"),
        ),
        (
            any::<bool>(),
            proptest::option::of((0..=varint::MAX, 0..=varint::MAX)),
        ),
    )
        .prop_map(
            |(
                model,
                tenant,
                key,
                residency,
                area,
                deadline,
                max_tokens,
                prio,
                (trace, body_format, credential),
                (resumable, resume),
            )| {
                RequestHeaders {
                    model,
                    tenant,
                    shard_key: key.map(Bytes::from),
                    residency,
                    area,
                    deadline_ms: deadline,
                    max_tokens,
                    priority: prio,
                    trace_context: trace,
                    body_format,
                    credential: credential.map(Credential),
                    resumable,
                    resume: resume.map(|(offset, text_len)| ResumeFrom { offset, text_len }),
                }
            },
        )
}

fn frame() -> impl Strategy<Value = Frame> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..2048).prop_map(Bytes::from);
    prop_oneof![
        headers().prop_map(Frame::Headers),
        bytes().prop_map(Frame::Body),
        (
            name(MAX_NAME_LEN),
            name(MAX_NAME_LEN),
            0..=varint::MAX,
            proptest::option::of(0..=varint::MAX)
        )
            .prop_map(
                |(region, worker, attempt, resumed_at)| Frame::Routed(Routed {
                    region,
                    worker,
                    attempt,
                    resumed_at,
                })
            ),
        bytes().prop_map(Frame::Tokens),
        (
            0..=varint::MAX,
            0..=varint::MAX,
            0..=varint::MAX,
            0..=varint::MAX,
            0..=varint::MAX
        )
            .prop_map(|(f, p, c, t, d)| Frame::End(End {
                finish_reason: match f {
                    0 => FinishReason::Stop,
                    1 => FinishReason::Length,
                    v => FinishReason::Other(v),
                },
                prompt_tokens: p,
                completion_tokens: c,
                ttft_us: t,
                total_us: d,
            })),
        (
            0..=varint::MAX,
            any::<bool>(),
            ".{0,200}",
            proptest::option::of(0..=varint::MAX)
        )
            .prop_map(|(code, retryable, message, retry_after_ms)| {
                Frame::Error(ErrorFrame {
                    code: ErrorCode(code),
                    retryable,
                    message,
                    retry_after_ms,
                })
            }),
        (
            proptest::option::of(0..=varint::MAX),
            proptest::option::of(0..=varint::MAX)
        )
            .prop_map(|(a, b)| Frame::Settings(Settings {
                max_concurrent_requests: a,
                max_prompt_bytes: b
            })),
        (0..=varint::MAX, 0..=varint::MAX, 0..=varint::MAX).prop_map(|(a, b, c)| Frame::Load(
            Load {
                in_flight: a,
                queue_depth: b,
                tokens_per_s: c
            }
        )),
        Just(Frame::GoAway(GoAway)),
    ]
}

proptest! {
    #[test]
    fn round_trip_every_frame(f in frame()) {
        let mut buf = BytesMut::new();
        f.encode(&mut buf);
        prop_assert_eq!(buf.len(), f.encoded_len());
        let encoded = buf.clone().freeze();
        let decoded = Frame::decode(&mut buf).unwrap();
        prop_assert_eq!(&decoded, &f);
        prop_assert!(buf.is_empty());
        // Every strict prefix is Incomplete and consumes nothing.
        for cut in [0, 1, encoded.len() / 2, encoded.len() - 1] {
            let mut short = encoded.slice(..cut);
            prop_assert_eq!(Frame::decode(&mut short), Err(DecodeError::Incomplete));
            prop_assert_eq!(short.len(), cut);
        }
    }

    #[test]
    fn decoder_never_panics_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut buf = Bytes::from(data);
        // Decode until an error; each success must consume bytes, so this terminates.
        while Frame::decode(&mut buf).is_ok() {}
    }

    #[test]
    fn decoder_checks_declared_lengths_before_buffering(ty in 0u64..0x40, len in 0..=varint::MAX, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        // The header alone decides TooLarge, so a peer cannot make a receiver wait for (and
        // buffer) more than the limit.
        let mut buf = Vec::new();
        varint::encode(ty, &mut buf);
        varint::encode(len, &mut buf);
        buf.extend_from_slice(&tail);
        let mut b = Bytes::from(buf);
        let max = if ty == 0x01 { MAX_HEADERS_LEN } else { MAX_FRAME_PAYLOAD } as u64;
        let res = Frame::decode(&mut b);
        if len > max {
            prop_assert!(matches!(res, Err(DecodeError::TooLarge { .. })), "{:?}", res);
        } else if ty < 0x20 && !FrameType(ty).is_known() {
            prop_assert_eq!(res, Err(DecodeError::UnknownFrameType(ty)));
        } else if len > tail.len() as u64 {
            prop_assert_eq!(res, Err(DecodeError::Incomplete));
        }
    }
}

proptest! {
    #[test]
    fn trace_context_rewrite_keeps_every_other_field(h in headers(), ext in proptest::collection::vec(any::<u8>(), 0..32)) {
        // The frame as a client sent it, with an extension field the edge does not know.
        let mut payload = BytesMut::new();
        h.encode_payload(&mut payload);
        let ext_field = field(0x30, &ext);
        payload.extend_from_slice(&ext_field);
        let frame = raw(0x01, &payload);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let out = with_trace_context(&frame, tp).expect("a valid HEADERS frame");
        let mut decoded = out.clone();
        let Frame::Headers(got) = Frame::decode(&mut decoded).unwrap() else { panic!("HEADERS") };
        prop_assert!(decoded.is_empty());
        // The credential never travels past the edge.
        prop_assert_eq!(got, RequestHeaders { trace_context: Some(tp.into()), credential: None, ..h.clone() });
        prop_assert!(out.windows(ext_field.len()).any(|w| w == ext_field.as_slice()), "extension field kept");
        // Not a whole HEADERS frame: no rewrite.
        prop_assert_eq!(with_trace_context(&frame[..frame.len() - 1], tp), None);
    }
}

#[test]
fn trace_context_rewrite_rejects_other_frames() {
    let body = Frame::Body(Bytes::from_static(b"x")).to_bytes();
    assert_eq!(with_trace_context(&body, "t"), None);
    let mut two = Frame::Headers(RequestHeaders::new("m")).to_bytes().to_vec();
    two.extend_from_slice(&body);
    assert_eq!(with_trace_context(&two, "t"), None);
}

fn raw(ty: u64, payload: &[u8]) -> Bytes {
    let mut b = Vec::new();
    varint::encode(ty, &mut b);
    varint::encode(payload.len() as u64, &mut b);
    b.extend_from_slice(payload);
    Bytes::from(b)
}

#[test]
fn a_field_over_its_limit_is_too_large_even_when_it_runs_past_the_frame() {
    // PROTOCOL.md §2.2: the declared length is checked against the limit first.
    let mut payload = field(0x01, b"m");
    varint::encode(0x03, &mut payload); // shard_key, limit 256
    varint::encode(300, &mut payload);
    payload.extend_from_slice(b"short");
    let err = Frame::decode(&mut raw(0x01, &payload)).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::FieldTooLong {
                field: "shard_key",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::TOO_LARGE);
}

#[test]
fn rewrite_caps_max_tokens_and_drops_the_credential() {
    let mut h = RequestHeaders::new("m");
    h.max_tokens = Some(100_000);
    h.credential = Some(Credential("mk_a_secret".into()));
    h.area = Some("jp".into());
    let frame = Frame::Headers(h.clone()).to_bytes();
    let with = Rewrite {
        tenant: Some("acme"),
        max_tokens: Some(512),
        ..Rewrite::default()
    };
    let out = rewrite(&frame, &with).unwrap();
    let Frame::Headers(got) = Frame::decode(&mut out.clone()).unwrap() else {
        panic!("HEADERS")
    };
    assert_eq!(got.max_tokens, Some(512));
    assert_eq!(got.tenant.as_deref(), Some("acme"));
    assert_eq!((got.credential, got.area.as_deref()), (None, Some("jp")));
}

#[test]
fn headers_check_rejects_what_cannot_be_encoded() {
    let mut h = RequestHeaders::new("m");
    h.max_tokens = Some(1 << 62);
    assert!(matches!(
        h.check(),
        Err(DecodeError::InvalidField {
            field: "max_tokens",
            ..
        })
    ));
    h.max_tokens = Some(varint::MAX);
    h.check().unwrap();
    h.credential = Some(Credential("k".repeat(MAX_CREDENTIAL_LEN + 1)));
    assert!(matches!(h.check(), Err(DecodeError::FieldTooLong { .. })));
}

fn field(id: u64, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    varint::encode(id, &mut b);
    varint::encode(value.len() as u64, &mut b);
    b.extend_from_slice(value);
    b
}

#[test]
fn frame_over_limit_is_too_large() {
    let mut b = raw(0x04, &vec![b'a'; MAX_FRAME_PAYLOAD + 1]);
    let err = Frame::decode(&mut b).unwrap_err();
    assert!(
        matches!(err, DecodeError::TooLarge { ty: "TOKENS", .. }),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::TOO_LARGE);
    // Rejected from the header alone, before the payload arrives.
    let mut head = Vec::new();
    encode_header(FrameType::BODY, MAX_FRAME_PAYLOAD + 1, &mut head);
    assert!(matches!(
        FrameHead::peek(&head),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn headers_over_limit_is_too_large() {
    let mut b = raw(0x01, &vec![0u8; MAX_HEADERS_LEN + 1]);
    assert_eq!(
        Frame::decode(&mut b).unwrap_err().code(),
        ErrorCode::TOO_LARGE
    );
}

#[test]
fn every_field_limit_has_its_code() {
    let cases: [(u64, usize); 5] = [
        (0x01, MAX_MODEL_LEN),
        (0x02, MAX_NAME_LEN),
        (0x03, MAX_SHARD_KEY_LEN),
        (0x05, MAX_AREA_LEN),
        (0x09, MAX_TRACE_CONTEXT_LEN),
    ];
    for (id, max) in cases {
        let mut payload = if id == 0x01 {
            Vec::new()
        } else {
            field(0x01, b"m")
        };
        payload.extend(field(id, &vec![b'a'; max + 1]));
        let err = Frame::decode(&mut raw(0x01, &payload)).unwrap_err();
        assert!(
            matches!(err, DecodeError::FieldTooLong { .. }),
            "field {id}: {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::TOO_LARGE);
    }
    let mut msg = Vec::new();
    varint::encode(1, &mut msg);
    varint::encode(0, &mut msg);
    varint::encode((MAX_ERROR_MESSAGE_LEN + 1) as u64, &mut msg);
    msg.extend(vec![b'x'; MAX_ERROR_MESSAGE_LEN + 1]);
    assert_eq!(
        Frame::decode(&mut raw(0x06, &msg)).unwrap_err().code(),
        ErrorCode::TOO_LARGE
    );
}

#[test]
fn bad_header_values_are_bad_request() {
    let mut prio = field(0x01, b"m");
    prio.extend(field(0x08, &[8]));
    let mut area = field(0x01, b"m");
    area.extend(field(0x05, b"JP"));
    let mut int_trailing = field(0x01, b"m");
    int_trailing.extend(field(0x07, &[5, 5]));
    for payload in [
        Vec::new(),
        field(0x01, b""),
        field(0x01, &[0xff, 0xfe]),
        prio,
        area,
        int_trailing,
    ] {
        let err = Frame::decode(&mut raw(0x01, &payload)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BAD_REQUEST, "{err:?}");
    }
}

#[test]
fn repeated_or_truncated_fields_are_protocol_errors() {
    let mut rep = field(0x01, b"m");
    rep.extend(field(0x01, b"n"));
    let mut trunc = field(0x01, b"model");
    trunc.truncate(4);
    for payload in [rep, trunc] {
        let err = Frame::decode(&mut raw(0x01, &payload)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::PROTOCOL_ERROR, "{err:?}");
    }
    let err = Frame::decode(&mut raw(0x03, &[5, b'a'])).unwrap_err();
    assert_eq!(err.code(), ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn unknown_fields_and_extension_frames_are_skipped() {
    let mut payload = field(0x01, b"llama");
    payload.extend(field(0x3f, b"future"));
    let f = Frame::decode(&mut raw(0x01, &payload)).unwrap();
    assert_eq!(f, Frame::Headers(RequestHeaders::new("llama")));

    let mut two = BytesMut::new();
    two.extend_from_slice(&raw(0x21, b"ignored"));
    two.extend_from_slice(&raw(0x04, b"hi"));
    assert_eq!(
        Frame::decode(&mut two).unwrap(),
        Frame::Unknown(FrameType(0x21))
    );
    assert_eq!(
        Frame::decode(&mut two).unwrap(),
        Frame::Tokens(Bytes::from_static(b"hi"))
    );
}

#[test]
fn unknown_type_below_extension_range_is_protocol_error() {
    let err = Frame::decode(&mut raw(0x07, b"")).unwrap_err();
    assert_eq!(err, DecodeError::UnknownFrameType(0x07));
    assert_eq!(err.code(), ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn decodes_across_non_contiguous_buffers() {
    use bytes::Buf;
    let f = Frame::Headers(RequestHeaders::new("a-model"));
    let enc = f.to_bytes();
    let (a, b) = enc.split_at(1);
    let mut chain = Bytes::copy_from_slice(a).chain(Bytes::copy_from_slice(b));
    assert_eq!(Frame::decode(&mut chain).unwrap(), f);
    assert!(!chain.has_remaining());
}

#[test]
fn error_message_is_cut_to_limit_on_a_char_boundary() {
    let e = ErrorFrame::new(ErrorCode::INTERNAL, "é".repeat(MAX_ERROR_MESSAGE_LEN));
    assert!(e.message.len() <= MAX_ERROR_MESSAGE_LEN);
    let f = Frame::Error(e);
    assert_eq!(Frame::decode(&mut f.to_bytes()).unwrap(), f);
}

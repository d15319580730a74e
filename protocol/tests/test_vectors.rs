//! Runs `test-vectors/requests.txt` (PROTOCOL.md §8.1) through the reference decoder.

use bytes::Bytes;
use meridian_protocol::{DecodeError, ErrorCode, Frame};

/// What a receiver answers to a whole request stream: `None` for a valid request.
fn verdict(mut stream: Bytes) -> Option<ErrorCode> {
    let mut seen_headers = false;
    while !stream.is_empty() {
        match Frame::decode(&mut stream) {
            Ok(Frame::Unknown(_)) => {}
            Ok(Frame::Headers(_)) if !seen_headers => seen_headers = true,
            Ok(Frame::Body(_)) if seen_headers => {}
            Ok(_) => return Some(ErrorCode::PROTOCOL_ERROR),
            // The stream ended (FIN) inside a frame.
            Err(DecodeError::Incomplete) => return Some(ErrorCode::PROTOCOL_ERROR),
            Err(e) => return Some(e.code()),
        }
    }
    (!seen_headers).then_some(ErrorCode::PROTOCOL_ERROR)
}

fn hex(s: &str) -> Bytes {
    assert!(s.len() % 2 == 0, "odd hex: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn test_vectors() {
    let text = include_str!("../test-vectors/requests.txt");
    let mut n = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (bytes, want) = line.split_once(' ').expect("`<hex> <expected>`");
        let got = verdict(hex(bytes)).map_or("ok".to_owned(), |c| c.to_string());
        assert_eq!(got, want.trim(), "vector {line}");
        n += 1;
    }
    assert!(n >= 20, "{n} vectors");
}

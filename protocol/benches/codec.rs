//! Frame codec micro-benchmarks: encode/decode of the frames on the token path and of a
//! typical HEADERS, and boundary scanning of a chunk of token frames.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meridian_protocol::scan::FrameScanner;
use meridian_protocol::{DecodeError, Frame, RequestHeaders};
use std::hint::black_box;

fn headers() -> RequestHeaders {
    let mut h = RequestHeaders::new("llama-3-8b");
    h.area = Some("jp".into());
    h.tenant = Some("acme".into());
    h.shard_key = Some(Bytes::from_static(b"session-1234567890"));
    h.max_tokens = Some(256);
    h.deadline_ms = Some(30_000);
    h
}

fn codec(c: &mut Criterion) {
    let tokens = Frame::Tokens(Bytes::from_static(b" token"));
    let mut buf = BytesMut::with_capacity(1 << 16);
    c.bench_function("encode/tokens", |b| {
        b.iter(|| {
            black_box(&tokens).encode(&mut buf);
            if buf.len() > 60_000 {
                buf.clear();
            }
        })
    });
    let enc = tokens.to_bytes();
    c.bench_function("decode/tokens", |b| {
        b.iter(|| {
            let mut src = black_box(enc.clone());
            black_box(Frame::decode(&mut src).unwrap())
        })
    });
    let h = Frame::Headers(headers());
    let enc_h = h.to_bytes();
    c.bench_function("encode/headers", |b| {
        b.iter(|| black_box(black_box(&h).to_bytes()))
    });
    c.bench_function("decode/headers", |b| {
        b.iter(|| {
            let mut src = black_box(enc_h.clone());
            black_box(Frame::decode(&mut src).unwrap())
        })
    });

    let mut group = c.benchmark_group("scan");
    for n in [1usize, 64] {
        let mut chunk = BytesMut::new();
        for _ in 0..n {
            tokens.encode(&mut chunk);
        }
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("token_frames", n),
            &chunk.freeze(),
            |b, chunk| {
                let mut s = FrameScanner::new();
                b.iter(|| {
                    s.scan::<DecodeError>(black_box(chunk), |ev| {
                        black_box(ev);
                        Ok(())
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);

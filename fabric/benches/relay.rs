//! The edge's per-chunk relay work: tracking one token frame (the common case at 50
//! tokens/s per stream, where each token arrives in its own packet) and a chunk of 64.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meridian_fabric::edge::{FrameGate, ResponseTracker, ResumeStats, Transcript};
use meridian_protocol::Frame;
use std::hint::black_box;

fn relay(c: &mut Criterion) {
    let mut group = c.benchmark_group("relay");
    for n in [1usize, 64] {
        let mut chunk = BytesMut::new();
        for _ in 0..n {
            Frame::Tokens(Bytes::from_static(b" token")).encode(&mut chunk);
        }
        let chunk = chunk.freeze();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("track_token_frames", n),
            &chunk,
            |b, chunk| {
                let mut t = ResponseTracker::new();
                // The relay forwards `chunk` itself (a refcount bump, no copy) after tracking.
                b.iter(|| {
                    let tokens = t.on_chunk(black_box(chunk)).unwrap();
                    black_box((tokens, chunk.clone()))
                })
            },
        );
        // A resumable stream (PROTOCOL.md §4.10): the same tracking, plus appending the text
        // to the transcript (cleared per iteration so it stays within its bound) and the
        // whole-frame gate.
        group.bench_with_input(
            BenchmarkId::new("track_resumable", n),
            &chunk,
            |b, chunk| {
                let stats = ResumeStats::new(1 << 30);
                let mut t = ResponseTracker::new();
                let mut transcript = Transcript::new(1 << 20, &stats);
                let mut gate = FrameGate::new();
                let mut ready = Vec::with_capacity(4);
                let mut i = 0u32;
                b.iter(|| {
                    i += 1;
                    if i % 4096 == 0 {
                        transcript = Transcript::new(1 << 20, &stats);
                    }
                    let tokens = t.on_chunk_into(black_box(chunk), &mut transcript).unwrap();
                    gate.admit(&t, chunk.clone(), false, &mut ready);
                    black_box((tokens, ready.drain(..).count()))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);

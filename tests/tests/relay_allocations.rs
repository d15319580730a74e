//! Allocations per relayed token on the edge's relay path and per route decision, counted with a counting global
//! allocator (per thread, so other test threads do not interfere). Target: zero.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use meridian_fabric::edge::ResponseTracker;
use meridian_protocol::Frame;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn relaying_token_frames_allocates_nothing() {
    // 1,000 token frames as quinn would hand them over: one per chunk, and split at
    // awkward places (header bytes straddling chunks).
    let mut stream = BytesMut::new();
    for i in 0..1000 {
        Frame::Tokens(Bytes::from(format!("tok{i} "))).encode(&mut stream);
    }
    let stream = stream.freeze();
    let one_per_chunk: Vec<Bytes> = {
        let mut v = Vec::new();
        let mut rest = stream.clone();
        while !rest.is_empty() {
            let len = 2 + rest[1] as usize;
            v.push(rest.split_to(len));
        }
        v
    };
    let ragged: Vec<Bytes> = stream.chunks(7).map(|c| stream.slice_ref(c)).collect();
    for chunks in [one_per_chunk, ragged] {
        let mut tracker = ResponseTracker::new();
        let mut forwarded = Vec::with_capacity(chunks.len());
        let mut tokens = 0;
        let n = allocations(|| {
            for chunk in &chunks {
                tokens += tracker.on_chunk(chunk).unwrap();
                // What the relay hands to `SendStream::write_chunk`: the same `Bytes`.
                forwarded.push(chunk.clone());
            }
        });
        assert_eq!(tokens, 1000);
        assert_eq!(n, 0, "allocations while relaying 1000 tokens");
        assert!(
            forwarded
                .iter()
                .zip(&chunks)
                .all(|(a, b)| a.as_ptr() == b.as_ptr()),
            "forwarded without copying"
        );
    }
}

#[test]
fn a_resumable_stream_allocates_only_to_grow_its_transcript() {
    // The resumable relay (PROTOCOL.md §4.10): track, append the text to the bounded
    // transcript, let only whole frames through (slices of the same chunks).
    use meridian_fabric::edge::{FrameGate, ResumeStats, Transcript};
    let mut stream = BytesMut::new();
    for i in 0..1000 {
        Frame::Tokens(Bytes::from(format!("tok{i} "))).encode(&mut stream);
    }
    let stream = stream.freeze();
    let ragged: Vec<Bytes> = stream.chunks(7).map(|c| stream.slice_ref(c)).collect();
    let stats = ResumeStats::new(64 << 20);
    let mut tracker = ResponseTracker::new();
    let mut transcript = Transcript::new(256 << 10, &stats);
    let mut gate = FrameGate::new();
    let (mut ready, mut out) = (Vec::with_capacity(8), Vec::with_capacity(ragged.len() * 2));
    let mut tokens = 0;
    let n = allocations(|| {
        for chunk in &ragged {
            tokens += tracker.on_chunk_into(chunk, &mut transcript).unwrap();
            gate.admit(&tracker, chunk.clone(), false, &mut ready);
            out.append(&mut ready);
        }
    });
    assert_eq!(tokens, 1000);
    assert_eq!(transcript.offset(), 1000);
    let text = transcript.text();
    assert_eq!(&text[..5], b"tok0 ");
    // Growing the transcript: amortised doubling up to ~9 KB, plus the gate's first hold.
    println!("allocations for 1000 resumable tokens: {n}");
    assert!(n <= 20, "{n} allocations for 1000 tokens: not per token");
    let mut sent = BytesMut::new();
    for b in &out {
        assert!(
            stream.as_ptr_range().contains(&b.as_ptr()),
            "forwarded without copying"
        );
        sent.extend_from_slice(b);
    }
    assert_eq!(sent.freeze(), stream, "every byte forwarded once, in order");
}

#[test]
fn route_decision_allocates_nothing() {
    use meridian_fabric::config::parse_config;
    use meridian_fabric::route::{RouteRequest, Router};
    let config = parse_config(
        meridian_fabric::demo::TOPOLOGY,
        std::path::Path::new("demo.toml"),
    )
    .unwrap();
    let router = Router::new(std::sync::Arc::new(config));
    for w in 0..10 {
        router.worker(w).set_healthy(true);
    }
    router.rebuild();
    let keys: Vec<[u8; 8]> = (0..1000u64).map(u64::to_le_bytes).collect();
    let n = allocations(|| {
        for (i, key) in keys.iter().enumerate() {
            let req = RouteRequest {
                model: "llama-3-8b",
                area: Some(if i % 2 == 0 { "jp" } else { "fr" }),
                tenant: (i % 3 == 0).then_some("bund"),
                shard_key: key,
                ..Default::default()
            };
            let d = router.route(&req).unwrap();
            std::hint::black_box(&d);
        }
    });
    assert_eq!(n, 0, "allocations in 1000 route decisions");
}

//! `meridian-bench quic-lb`: a user-space L4 UDP load balancer in front of several edges, to
//! test and demonstrate connection-ID routing (what AWS NLB's QUIC listeners do) against
//! 4-tuple routing. Each client address gets its own upstream socket to the backend chosen
//! for it:
//!
//! * `--mode cid` (QUIC-LB): a packet whose destination connection ID carries a known server
//!   id (`meridian_fabric::quic_lb::parse_cid`) goes to that server; a client's first Initial
//!   (a random connection ID of its own) goes to a backend picked by hashing that ID. A
//!   client whose address changed (NAT rebinding) keeps reaching its edge.
//! * `--mode flow`: each new client address goes to the next backend in turn, as a balancer
//!   hashing the 4-tuple would scatter it; a rebound client lands elsewhere.
//!
//! `stats` on stdin answers how new flows were routed: `{"by_server_id", "by_hash",
//! "round_robin"}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use clap::{Args, ValueEnum};
use meridian_fabric::quic_lb::{parse_cid, parse_server_id};
use tokio::io::AsyncBufReadExt;
use tokio::net::UdpSocket;

/// How new client addresses are assigned to backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// By the server id in the connection ID (QUIC-LB).
    Cid,
    /// Round-robin per client address (4-tuple).
    Flow,
}

/// `quic-lb` options.
#[derive(Args, Debug, Clone)]
pub struct QuicLbArgs {
    /// Address clients send to.
    #[arg(long)]
    pub listen: SocketAddr,
    /// A backend as `SERVER_ID=ADDRESS` (hex server id as in the edge's `[quic_lb]`);
    /// repeat for each edge.
    #[arg(long = "backend", required = true)]
    pub backends: Vec<String>,
    /// Routing mode.
    #[arg(long, value_enum, default_value_t = Mode::Cid)]
    pub mode: Mode,
}

struct Backend {
    server_id: Vec<u8>,
    addr: SocketAddr,
}

/// How a new flow was routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Routed {
    ServerId = 0,
    Hash = 1,
    RoundRobin = 2,
}

/// The backend for a packet from a client address seen for the first time, and how it was
/// chosen.
fn pick(packet: &[u8], backends: &[Backend], mode: Mode, next: &mut usize) -> (usize, Routed) {
    if mode == Mode::Flow {
        *next += 1;
        return ((*next - 1) % backends.len(), Routed::RoundRobin);
    }
    let sid_len = backends[0].server_id.len();
    let dcid = match packet.first() {
        // Short header: the connection ID follows the first byte.
        Some(b) if b & 0x80 == 0 => packet.get(1..),
        // Long header: version (4), DCID length (1), DCID.
        Some(_) => packet
            .get(5)
            .and_then(|len| packet.get(6..6 + *len as usize)),
        None => None,
    }
    .unwrap_or_default();
    if let Some((_, sid)) = parse_cid(dcid, sid_len) {
        if let Some(i) = backends.iter().position(|b| b.server_id == sid) {
            return (i, Routed::ServerId);
        }
    }
    // A client-chosen Initial connection ID: hashed, so its retransmissions agree.
    let h = dcid.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    });
    ((h % backends.len() as u64) as usize, Routed::Hash)
}

/// Runs the balancer until the process ends.
pub async fn run(args: QuicLbArgs) -> anyhow::Result<()> {
    let mut backends = Vec::new();
    for b in &args.backends {
        let (sid, addr) = b
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--backend {b}: expected SERVER_ID=ADDRESS"))?;
        let server_id = parse_server_id(sid)
            .ok_or_else(|| anyhow::anyhow!("--backend {b}: server id is not hex"))?;
        backends.push(Backend {
            server_id,
            addr: addr.parse()?,
        });
    }
    if backends
        .iter()
        .any(|b| b.server_id.len() != backends[0].server_id.len())
    {
        anyhow::bail!("every backend's server id must have the same length");
    }
    let front = Arc::new(UdpSocket::bind(args.listen).await?);
    println!(
        "{}",
        serde_json::json!({ "quic_lb": front.local_addr()?.to_string(), "mode": format!("{:?}", args.mode).to_lowercase() })
    );
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let counts: Arc<[AtomicU64; 3]> = Arc::default();
    {
        let counts = counts.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if l.trim() == "stats" {
                    let n = |r: Routed| counts[r as usize].load(Relaxed);
                    println!(
                        "{}",
                        serde_json::json!({ "by_server_id": n(Routed::ServerId), "by_hash": n(Routed::Hash), "round_robin": n(Routed::RoundRobin) })
                    );
                } else {
                    eprintln!("quic-lb: unknown command `{l}` (stats)");
                }
            }
        });
    }
    let mut next = 0;
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = front.recv_from(&mut buf).await?;
        let known = flows.lock().expect("not poisoned").get(&client).cloned();
        let up = match known {
            Some(up) => up,
            None => {
                let (i, how) = pick(&buf[..n], &backends, args.mode, &mut next);
                counts[how as usize].fetch_add(1, Relaxed);
                let b = &backends[i];
                // One flow that cannot reach its backend is dropped, not the balancer.
                let up = match crate::impair::upstream_socket(b.addr).await {
                    Ok(up) => Arc::new(up),
                    Err(e) => {
                        eprintln!("quic-lb: flow from {client} to {}: {e}", b.addr);
                        continue;
                    }
                };
                flows
                    .lock()
                    .expect("not poisoned")
                    .insert(client, up.clone());
                let (up2, front2) = (up.clone(), front.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(n) = up2.recv(&mut buf).await {
                        let _ = front2.send_to(&buf[..n], client).await;
                    }
                });
                up
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Vec<Backend> {
        ["0x0101", "0x0202"]
            .iter()
            .enumerate()
            .map(|(i, s)| Backend {
                server_id: parse_server_id(s).unwrap(),
                addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
            })
            .collect()
    }

    #[test]
    fn routes_by_the_server_id_in_short_and_long_headers() {
        let b = backends();
        let mut next = 0;
        // Short header, DCID = first octet, sid 0202, nonce.
        let short = [0x40, 0x06, 0x02, 0x02, 9, 9, 9, 9];
        assert_eq!(
            pick(&short, &b, Mode::Cid, &mut next),
            (1, Routed::ServerId)
        );
        // Long header (Handshake) to the server's connection ID with sid 0101.
        let long = [0xe0, 0, 0, 0, 1, 7, 0x06, 0x01, 0x01, 5, 5, 5, 5, 0];
        assert_eq!(pick(&long, &b, Mode::Cid, &mut next), (0, Routed::ServerId));
        // A client's own Initial ID: hashed, the same way every time.
        let initial = [0xc0, 0, 0, 0, 1, 8, 0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3, 4];
        let first = pick(&initial, &b, Mode::Cid, &mut next);
        assert_eq!(first.1, Routed::Hash);
        assert_eq!(pick(&initial, &b, Mode::Cid, &mut next), first);
        // Flow mode ignores IDs: round-robin.
        assert_eq!(pick(&short, &b, Mode::Flow, &mut next).0, 0);
        assert_eq!(pick(&short, &b, Mode::Flow, &mut next).0, 1);
    }
}

//! `meridian-bench impair`: a user-space UDP impairment proxy (kernel netem is not
//! available here). Each client address gets its own upstream socket; every datagram, in
//! each direction, is delayed (one-way `delay ± jitter`), may be dropped (`loss`) or held
//! back extra (`reorder`), and is paced by a bandwidth cap. `partition on|off` on stdin (or
//! `--partition-after`/`--partition-for`) drops everything while on.
//!
//! Emulating Tokyo–Seoul (~30 ms RTT): `--delay-ms 15`; Tokyo–Frankfurt (~230 ms RTT):
//! `--delay-ms 115`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use tokio::io::AsyncBufReadExt;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::dist::Rng;

/// `impair` options.
#[derive(Args, Debug, Clone)]
pub struct ImpairArgs {
    /// Address clients send to.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address datagrams are forwarded to.
    #[arg(long)]
    pub upstream: SocketAddr,
    /// One-way delay each direction, milliseconds.
    #[arg(long, default_value_t = 0.0)]
    pub delay_ms: f64,
    /// Uniform jitter added to the delay, ± milliseconds.
    #[arg(long, default_value_t = 0.0)]
    pub jitter_ms: f64,
    /// Probability of dropping a datagram (0–1).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Probability of holding a datagram back by an extra delay so it arrives out of order.
    #[arg(long, default_value_t = 0.0)]
    pub reorder: f64,
    /// Extra delay of reordered datagrams, milliseconds.
    #[arg(long, default_value_t = 5.0)]
    pub reorder_ms: f64,
    /// Bandwidth cap per direction, megabits/s (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub rate_mbps: f64,
    /// Start a partition this many seconds after start.
    #[arg(long)]
    pub partition_after: Option<f64>,
    /// End that partition after this many seconds.
    #[arg(long)]
    pub partition_for: Option<f64>,
    /// PRNG seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Counters of one proxy.
#[derive(Debug, Default)]
pub struct ImpairStats {
    /// Datagrams forwarded.
    pub forwarded: AtomicU64,
    /// Datagrams dropped by `loss` or a partition.
    pub dropped: AtomicU64,
}

/// One direction's shaping state.
struct Shaper {
    args: ImpairArgs,
    rng: Rng,
    /// When the link is next free (bandwidth pacing).
    free_at: Instant,
}

impl Shaper {
    /// `None` to drop, else when to deliver a datagram of `len` bytes.
    fn schedule(&mut self, len: usize, partitioned: bool) -> Option<Instant> {
        if partitioned || self.rng.unit() < self.args.loss {
            return None;
        }
        let now = Instant::now();
        let jitter = (self.rng.unit() * 2.0 - 1.0) * self.args.jitter_ms;
        let mut delay = (self.args.delay_ms + jitter).max(0.0);
        if self.rng.unit() < self.args.reorder {
            delay += self.args.reorder_ms;
        }
        let mut at = now + Duration::from_secs_f64(delay / 1e3);
        if self.args.rate_mbps > 0.0 {
            let tx = Duration::from_secs_f64(len as f64 * 8.0 / (self.args.rate_mbps * 1e6));
            self.free_at = self.free_at.max(now) + tx;
            at = at.max(self.free_at);
        }
        Some(at)
    }
}

/// Runs the proxy until the process stops. Prints one JSON line with the listen address.
pub async fn run(args: ImpairArgs) -> anyhow::Result<()> {
    let front = UdpSocket::bind(args.listen).await?;
    println!(
        "{}",
        serde_json::json!({ "impair": front.local_addr()?.to_string(), "upstream": args.upstream.to_string() })
    );
    let partitioned = Arc::new(AtomicBool::new(false));
    // Partition control: stdin commands and the scripted window.
    {
        let p = partitioned.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                match l.trim() {
                    "partition on" => p.store(true, Relaxed),
                    "partition off" => p.store(false, Relaxed),
                    other => eprintln!("impair: unknown command `{other}` (partition on|off)"),
                }
                eprintln!(
                    "impair: partition {}",
                    if p.load(Relaxed) { "on" } else { "off" }
                );
            }
        });
    }
    if let Some(after) = args.partition_after {
        let (p, dur) = (partitioned.clone(), args.partition_for);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(after)).await;
            p.store(true, Relaxed);
            if let Some(d) = dur {
                tokio::time::sleep(Duration::from_secs_f64(d)).await;
                p.store(false, Relaxed);
            }
        });
    }
    serve(front, args, partitioned, Arc::default()).await
}

/// The proxy loop on an already-bound socket; `partitioned` switches the link off.
pub async fn serve(
    front: UdpSocket,
    args: ImpairArgs,
    partitioned: Arc<AtomicBool>,
    stats: Arc<ImpairStats>,
) -> anyhow::Result<()> {
    let front = Arc::new(front);
    let sessions: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let up_shaper = Arc::new(Mutex::new(Shaper {
        args: args.clone(),
        rng: Rng::new(args.seed),
        free_at: Instant::now(),
    }));
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = front.recv_from(&mut buf).await?;
        let existing = sessions.lock().expect("not poisoned").get(&client).cloned();
        let back = match existing {
            Some(s) => s,
            None => {
                let bind: SocketAddr = if args.upstream.is_ipv6() {
                    "[::1]:0"
                } else {
                    "127.0.0.1:0"
                }
                .parse()?;
                let s = Arc::new(UdpSocket::bind(bind).await?);
                s.connect(args.upstream).await?;
                sessions
                    .lock()
                    .expect("not poisoned")
                    .insert(client, s.clone());
                tokio::spawn(downstream(
                    s.clone(),
                    front.clone(),
                    client,
                    args.clone(),
                    partitioned.clone(),
                    stats.clone(),
                ));
                s
            }
        };
        let at = up_shaper
            .lock()
            .expect("not poisoned")
            .schedule(n, partitioned.load(Relaxed));
        deliver(at, buf[..n].to_vec(), &stats, move |data| async move {
            let _ = back.send(&data).await;
        });
    }
}

/// Upstream → client direction for one session.
async fn downstream(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    args: ImpairArgs,
    partitioned: Arc<AtomicBool>,
    stats: Arc<ImpairStats>,
) {
    let mut shaper = Shaper {
        rng: Rng::new(args.seed ^ 0x5eed),
        args,
        free_at: Instant::now(),
    };
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = up.recv(&mut buf).await {
        let at = shaper.schedule(n, partitioned.load(Relaxed));
        let front = front.clone();
        deliver(at, buf[..n].to_vec(), &stats, move |data| async move {
            let _ = front.send_to(&data, client).await;
        });
    }
}

fn deliver<F, Fut>(at: Option<Instant>, data: Vec<u8>, stats: &ImpairStats, send: F)
where
    F: FnOnce(Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    match at {
        None => {
            stats.dropped.fetch_add(1, Relaxed);
        }
        Some(at) => {
            stats.forwarded.fetch_add(1, Relaxed);
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                send(data).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(upstream: SocketAddr) -> ImpairArgs {
        ImpairArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream,
            delay_ms: 0.0,
            jitter_ms: 0.0,
            loss: 0.0,
            reorder: 0.0,
            reorder_ms: 5.0,
            rate_mbps: 0.0,
            partition_after: None,
            partition_for: None,
            seed: 1,
        }
    }

    /// An echo server, the proxy in front of it, and a client socket.
    async fn setup(
        a: impl FnOnce(SocketAddr) -> ImpairArgs,
    ) -> (UdpSocket, Arc<AtomicBool>, Arc<ImpairStats>) {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let proxy = front.local_addr().unwrap();
        let (p, stats) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(ImpairStats::default()),
        );
        tokio::spawn(serve(front, a(echo_addr), p.clone(), stats.clone()));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(proxy).await.unwrap();
        (client, p, stats)
    }

    #[tokio::test]
    async fn delays_both_directions() {
        let (client, _, stats) = setup(|up| ImpairArgs {
            delay_ms: 40.0,
            ..args(up)
        })
        .await;
        let start = std::time::Instant::now();
        client.send(b"ping").await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"ping");
        // A lower bound only: the proxy never delivers early, however slow the machine.
        assert!(
            start.elapsed() >= Duration::from_millis(80),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(stats.forwarded.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn loss_and_partition_drop_datagrams() {
        let (client, _, stats) = setup(|up| ImpairArgs {
            loss: 1.0,
            ..args(up)
        })
        .await;
        for _ in 0..20 {
            client.send(b"x").await.unwrap();
        }
        while stats.dropped.load(Relaxed) < 20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(stats.forwarded.load(Relaxed), 0);

        let (client, partitioned, stats) = setup(args).await;
        partitioned.store(true, Relaxed);
        client.send(b"lost").await.unwrap();
        while stats.dropped.load(Relaxed) < 1 {
            tokio::task::yield_now().await;
        }
        partitioned.store(false, Relaxed);
        client.send(b"back").await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            &buf[..n],
            b"back",
            "only the datagram sent after the partition healed arrives"
        );
    }
}

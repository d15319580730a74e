//! `meridian-bench impair`: a user-space UDP impairment proxy (kernel netem is not
//! available here). Each client address gets its own upstream socket; every datagram, in
//! each direction, is delayed (one-way `delay ± jitter`), may be dropped (`loss`) or held
//! back extra (`reorder`), and is paced by a bandwidth cap. `partition on|off` on stdin (or
//! `--partition-after`/`--partition-for`) drops everything while on; `delay MS`,
//! `jitter MS`, `loss P` and `reorder P` on stdin change the link while it runs (a region
//! that becomes slow, a link that starts dropping).
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

/// An `f64` read and written atomically (its bits in an `AtomicU64`).
#[derive(Debug, Default)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn new(v: f64) -> Self {
        AtomicF64(AtomicU64::new(v.to_bits()))
    }

    /// The value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }

    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed)
    }
}

/// The link's impairments, changeable while the proxy runs (stdin commands).
#[derive(Debug, Default)]
pub struct Link {
    /// Everything is dropped while set.
    pub partitioned: AtomicBool,
    /// One-way delay, ms.
    pub delay_ms: AtomicF64,
    /// ± jitter, ms.
    pub jitter_ms: AtomicF64,
    /// Drop probability.
    pub loss: AtomicF64,
    /// Reorder probability.
    pub reorder: AtomicF64,
}

impl Link {
    /// The link `args` describe.
    pub fn new(args: &ImpairArgs) -> Link {
        Link {
            partitioned: AtomicBool::new(false),
            delay_ms: AtomicF64::new(args.delay_ms),
            jitter_ms: AtomicF64::new(args.jitter_ms),
            loss: AtomicF64::new(args.loss),
            reorder: AtomicF64::new(args.reorder),
        }
    }

    /// Applies one stdin command; returns what the link is now, or why the command is bad.
    pub fn command(&self, line: &str) -> Result<String, String> {
        let mut words = line.split_whitespace();
        let (cmd, arg) = (words.next().unwrap_or(""), words.next());
        let num = |a: Option<&str>| -> Result<f64, String> {
            a.and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("`{cmd}` needs a non-negative number"))
        };
        match (cmd, arg) {
            ("partition", Some("on")) => self.partitioned.store(true, Relaxed),
            ("partition", Some("off")) => self.partitioned.store(false, Relaxed),
            ("delay", a) => self.delay_ms.set(num(a)?),
            ("jitter", a) => self.jitter_ms.set(num(a)?),
            ("loss", a) => self.loss.set(num(a)?.min(1.0)),
            ("reorder", a) => self.reorder.set(num(a)?.min(1.0)),
            _ => {
                return Err(format!(
                    "unknown command `{line}` (partition on|off, delay MS, jitter MS, loss P, reorder P)"
                ))
            }
        }
        Ok(format!(
            "partition {} delay {} ms jitter {} ms loss {} reorder {}",
            if self.partitioned.load(Relaxed) {
                "on"
            } else {
                "off"
            },
            self.delay_ms.get(),
            self.jitter_ms.get(),
            self.loss.get(),
            self.reorder.get()
        ))
    }
}

/// One direction's shaping state.
struct Shaper {
    args: ImpairArgs,
    link: Arc<Link>,
    rng: Rng,
    /// When the link is next free (bandwidth pacing).
    free_at: Instant,
}

impl Shaper {
    /// `None` to drop, else when to deliver a datagram of `len` bytes.
    fn schedule(&mut self, len: usize) -> Option<Instant> {
        let l = &self.link;
        if l.partitioned.load(Relaxed) || self.rng.unit() < l.loss.get() {
            return None;
        }
        let now = Instant::now();
        let jitter = (self.rng.unit() * 2.0 - 1.0) * l.jitter_ms.get();
        let mut delay = (l.delay_ms.get() + jitter).max(0.0);
        if self.rng.unit() < l.reorder.get() {
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
    let link = Arc::new(Link::new(&args));
    // Link control: stdin commands (each answered with the link's state on stdout, so a
    // driving process knows it took effect) and the scripted partition window.
    {
        let link = link.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                match link.command(l.trim()) {
                    Ok(state) => println!("{}", serde_json::json!({ "link": state })),
                    Err(e) => eprintln!("impair: {e}"),
                }
            }
        });
    }
    if let Some(after) = args.partition_after {
        let (link, dur) = (link.clone(), args.partition_for);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(after)).await;
            link.partitioned.store(true, Relaxed);
            if let Some(d) = dur {
                tokio::time::sleep(Duration::from_secs_f64(d)).await;
                link.partitioned.store(false, Relaxed);
            }
        });
    }
    serve(front, args, link, Arc::default()).await
}

/// A socket connected to `upstream`, bound to the unspecified address of its family (so any
/// backend, loopback or not, IPv4 or IPv6, is reachable): one per client flow.
pub(crate) async fn upstream_socket(upstream: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind: SocketAddr = if upstream.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(bind).await?;
    s.connect(upstream).await?;
    Ok(s)
}

/// The proxy loop on an already-bound socket, impaired as `link` says.
pub async fn serve(
    front: UdpSocket,
    args: ImpairArgs,
    link: Arc<Link>,
    stats: Arc<ImpairStats>,
) -> anyhow::Result<()> {
    let front = Arc::new(front);
    let sessions: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let up_shaper = Arc::new(Mutex::new(Shaper {
        args: args.clone(),
        link: link.clone(),
        rng: Rng::new(args.seed),
        free_at: Instant::now(),
    }));
    let up_line = Line::spawn(stats.clone());
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = front.recv_from(&mut buf).await?;
        let existing = sessions.lock().expect("not poisoned").get(&client).cloned();
        let back = match existing {
            Some(s) => s,
            None => {
                let s = Arc::new(upstream_socket(args.upstream).await?);
                sessions
                    .lock()
                    .expect("not poisoned")
                    .insert(client, s.clone());
                tokio::spawn(downstream(
                    s.clone(),
                    front.clone(),
                    client,
                    args.clone(),
                    link.clone(),
                    stats.clone(),
                ));
                s
            }
        };
        let at = up_shaper.lock().expect("not poisoned").schedule(n);
        up_line.send(at, &buf[..n], &back, None);
    }
}

/// Upstream → client direction for one session.
async fn downstream(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    args: ImpairArgs,
    link: Arc<Link>,
    stats: Arc<ImpairStats>,
) {
    let mut shaper = Shaper {
        rng: Rng::new(args.seed ^ 0x5eed),
        args,
        link,
        free_at: Instant::now(),
    };
    let line = Line::spawn(stats);
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = up.recv(&mut buf).await {
        let at = shaper.schedule(n);
        line.send(at, &buf[..n], &front, Some(client));
    }
}

/// A datagram waiting for its delivery time.
struct Held {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
    sock: Arc<UdpSocket>,
    /// Destination of an unconnected socket.
    to: Option<SocketAddr>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    /// Reversed: the earliest (then the first scheduled) on top of the max-heap.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// One direction's delivery line: datagrams leave in order of delivery time, and in arrival
/// order when their times are equal, so the proxy reorders only what jitter or `reorder`
/// asks for (a task per datagram would let the scheduler reorder datagrams due in the same
/// timer tick, which a real link does not).
#[derive(Clone)]
struct Line {
    tx: tokio::sync::mpsc::UnboundedSender<Held>,
    stats: Arc<ImpairStats>,
}

impl Line {
    fn spawn(stats: Arc<ImpairStats>) -> Line {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Held>();
        tokio::spawn(async move {
            let mut heap = std::collections::BinaryHeap::new();
            let mut open = true;
            loop {
                // The sender is gone (its socket's task ended) and everything was delivered.
                if !open && heap.is_empty() {
                    return;
                }
                let next = heap.peek().map(|h: &Held| h.at);
                tokio::select! {
                    held = rx.recv(), if open => match held {
                        Some(h) => heap.push(h),
                        None if heap.is_empty() => return,
                        None => open = false,
                    },
                    _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                        let now = Instant::now();
                        while heap.peek().is_some_and(|h| h.at <= now) {
                            let h = heap.pop().expect("peeked");
                            let _ = match h.to {
                                Some(to) => h.sock.send_to(&h.data, to).await,
                                None => h.sock.send(&h.data).await,
                            };
                        }
                    }
                }
            }
        });
        Line { tx, stats }
    }

    /// Schedules `data` (dropped when `at` is `None`).
    fn send(
        &self,
        at: Option<Instant>,
        data: &[u8],
        sock: &Arc<UdpSocket>,
        to: Option<SocketAddr>,
    ) {
        let Some(at) = at else {
            self.stats.dropped.fetch_add(1, Relaxed);
            return;
        };
        let seq = self.stats.forwarded.fetch_add(1, Relaxed);
        let _ = self.tx.send(Held {
            at,
            seq,
            data: data.to_vec(),
            sock: sock.clone(),
            to,
        });
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
    ) -> (UdpSocket, Arc<Link>, Arc<ImpairStats>) {
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
        let args = a(echo_addr);
        let (link, stats) = (Arc::new(Link::new(&args)), Arc::new(ImpairStats::default()));
        tokio::spawn(serve(front, args, link.clone(), stats.clone()));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(proxy).await.unwrap();
        (client, link, stats)
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

        let (client, link, stats) = setup(args).await;
        link.command("partition on").unwrap();
        client.send(b"lost").await.unwrap();
        while stats.dropped.load(Relaxed) < 1 {
            tokio::task::yield_now().await;
        }
        link.command("partition off").unwrap();
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

    #[test]
    fn commands_change_the_link_and_bad_ones_are_refused() {
        let link = Link::new(&args("127.0.0.1:9".parse().unwrap()));
        let state = link.command("delay 300").unwrap();
        assert!(state.contains("delay 300 ms"), "{state}");
        assert_eq!(link.delay_ms.get(), 300.0);
        link.command("loss 2").unwrap();
        assert_eq!(link.loss.get(), 1.0, "a probability is capped at 1");
        assert!(link.command("delay -1").is_err());
        assert!(link.command("delay soon").is_err());
        assert!(link
            .command("flood")
            .unwrap_err()
            .contains("unknown command"));
        assert!(!link.partitioned.load(Relaxed));
        link.command("partition on").unwrap();
        assert!(link.partitioned.load(Relaxed));
    }
}

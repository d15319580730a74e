//! QUIC-LB connection IDs behind a real (user-space) L4 balancer: two edges with their own
//! `[quic_lb] server_id`, `meridian-bench quic-lb` in front of them, and a client whose
//! address changes mid-stream (NAT rebinding, `Client::rebind`). Routed by connection ID,
//! the stream and the connection survive on the same edge; routed per client address (a
//! 4-tuple hash), or with `[edge] migration = false`, the same rebinding loses the
//! connection.

use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use meridian_fabric::config::ServerTls;
use meridian_fabric::edge::EdgeHandle;
use meridian_fabric::shutdown::Shutdown;
use meridian_fabric::tls::Identity;
use meridian_fabric::worker;
use meridian_protocol::client::{Client, ClientConfig, Request, Trust};

use crate::bench_procs::Controlled;
use crate::support::*;

const IDS: [&str; 2] = ["0x0a0a0a0a0a0a0a0a", "0x0b0b0b0b0b0b0b0b"];

fn edge_toml(worker: &str, pin: &Path, server_id: &str, migration: bool) -> String {
    format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\nmigration = {migration}\n[tls]\ndev_cert_dir = \"edge\"\n[auth]\nrequired = false\n\
         [quic_lb]\nserver_id = \"{server_id}\"\n[[region]]\nname = \"r\"\n\
         [[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"{worker}\"\nmodels = [\"m\"]\npin = \"{}\"\n",
        pin.display()
    )
}

/// A client of the balancer at `lb` whose connection dies after 1 s without an answer.
async fn client(lb: &str, cert: &Path) -> Client {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(Duration::from_secs(1).try_into().unwrap()));
    let mut cfg = ClientConfig::new(Trust::pin_file(cert).unwrap());
    cfg.transport = Some(Arc::new(t));
    within("connect", Client::connect(lb.parse().unwrap(), cfg))
        .await
        .expect("connects through the balancer")
}

fn long(tokens: u64) -> Request {
    let mut r = Request::new("m", "hello");
    r.headers.max_tokens = Some(tokens);
    r
}

/// Connections each edge accepted so far.
fn accepted(edges: &[EdgeHandle]) -> Vec<u64> {
    edges
        .iter()
        .map(|e| e.stats.connections.load(Relaxed))
        .collect()
}

fn rebind(c: &Client) {
    c.rebind(UdpSocket::bind("127.0.0.1:0").unwrap())
        .expect("rebinds");
}

/// Whether a new client of the balancer at `lb`, served once, can still be served after it
/// rebinds to a new address.
async fn survives_rebinding(lb: &Controlled, cert: &Path) -> bool {
    let addr = lb.started["quic_lb"].as_str().unwrap().to_owned();
    let c = client(&addr, cert).await;
    within("served", c.generate(long(3)).await.unwrap().collect())
        .await
        .unwrap();
    rebind(&c);
    within("after rebinding", async {
        c.generate(long(3)).await?.collect().await
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_client_keeps_its_connection_behind_a_connection_id_balancer() {
    let dir = scratch("quic-lb");
    let wcfg = worker_config(ServerTls::Dev { dir: dir.join("w") }, (1, 10, 1000));
    let wid = Identity::load(&wcfg.tls).unwrap();
    let w = worker::spawn(wcfg, &wid, Shutdown::new()).unwrap();
    let id = Identity::load(&ServerTls::Dev {
        dir: dir.join("edge"),
    })
    .unwrap();
    let cert = dir.join("edge").join("cert.pem");
    let pin = dir.join("w").join("cert.pem");
    let path = dir.join("edge.toml");
    let mut edges = Vec::new();
    for sid in IDS {
        let toml = edge_toml(&w.addr.to_string(), &pin, sid, true);
        edges.push(edge_from(&toml, &path, &id, 1).await);
    }
    let backends: Vec<String> = (IDS.iter().zip(&edges))
        .map(|(sid, e)| format!("{sid}={}", e.addr))
        .collect();
    let balancer = |mode: &'static str| {
        let b = backends.clone();
        async move {
            let args = [
                "quic-lb",
                "--listen",
                "127.0.0.1:0",
                "--mode",
                mode,
                "--backend",
                &b[0],
                "--backend",
                &b[1],
            ];
            Controlled::start(&args).await
        }
    };

    // Routed by connection ID: the stream and the connection survive the rebinding.
    let mut lb = balancer("cid").await;
    let addr = lb.started["quic_lb"].as_str().unwrap().to_owned();
    let c = client(&addr, &cert).await;
    let mut g = c.generate(long(100)).await.unwrap();
    routed(&mut g).await;
    tokens(&mut g).await;
    let before = accepted(&edges);
    assert_eq!(
        before.iter().sum::<u64>(),
        1,
        "one edge took the connection: {before:?}"
    );
    rebind(&c);
    let (n, end) = finish(&mut g, 1).await;
    assert_eq!((n, end.completion_tokens), (100, 100));
    let (_, _, end) = within(
        "served after rebinding",
        c.generate(long(3)).await.unwrap().collect(),
    )
    .await
    .expect("the connection lives on");
    assert_eq!(end.completion_tokens, 3);
    assert_eq!(
        accepted(&edges),
        before,
        "no new connection anywhere: the same edge kept it"
    );
    let stats = lb.command("stats").await;
    assert_eq!(stats["by_hash"], 1, "the client's first Initial: {stats}");
    assert_eq!(
        stats["by_server_id"], 1,
        "the rebound flow, by the server id in its connection ID: {stats}"
    );
    c.close().await;

    // Routed per client address: the rebound client reaches the other edge, which does not
    // know the connection.
    let lb = balancer("flow").await;
    assert!(
        !survives_rebinding(&lb, &cert).await,
        "a 4-tuple balancer loses the connection"
    );

    // `[edge] migration = false` (applied by a reload to new connections): even the
    // connection-ID balancer's correct edge drops the rebound client's packets.
    for (e, sid) in edges.iter().zip(IDS) {
        let toml = edge_toml(&w.addr.to_string(), &pin, sid, false);
        let cfg = meridian_fabric::config::parse_config(&toml, &path).unwrap();
        e.reload(cfg).await.expect("reloaded");
    }
    let lb = balancer("cid").await;
    assert!(
        !survives_rebinding(&lb, &cert).await,
        "migration disabled: the rebound client is dropped"
    );
    for e in edges {
        e.stop().await;
    }
    w.stop().await;
}

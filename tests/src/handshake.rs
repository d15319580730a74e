//! Half-open QUIC handshakes cannot lock real clients out: they take no connection slot,
//! past `validate_addresses_above` of them unvalidated sources get a stateless Retry, and
//! each is dropped after `handshake_timeout_ms`.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use meridian_fabric::config::ServerTls;
use meridian_fabric::shutdown::Shutdown;
use meridian_fabric::tls::Identity;
use meridian_fabric::worker;
use meridian_protocol::client::{Client, ClientConfig, Trust};
use tokio::net::UdpSocket;

use crate::support::*;

/// Real QUIC Initial packets from `n` clients that will never answer: each stub client sends
/// its Initial to `tap`, which keeps the first datagram of each and drops the client.
async fn initials(n: usize, trust: &Trust) -> Vec<Vec<u8>> {
    let tap = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tap_addr = tap.local_addr().unwrap();
    let mut stubs = Vec::new();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(ClientConfig::new(trust.clone()).quinn_config().unwrap());
        let connecting = ep.connect(tap_addr, "localhost").unwrap();
        stubs.push((ep, connecting));
        let mut buf = vec![0u8; 2048];
        loop {
            let (len, from) = within("a stub's Initial", tap.recv_from(&mut buf))
                .await
                .unwrap();
            if seen.insert(from) {
                out.push(buf[..len].to_vec());
                break;
            }
        }
    }
    drop(stubs);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unanswered_initials_does_not_lock_out_real_clients() {
    let dir = scratch("handshake");
    let mut id = Identity::self_signed().unwrap();
    id.write(&dir).unwrap();
    let cert = id.cert_path.clone().unwrap();
    let wc = worker_config(ServerTls::Dev { dir: dir.clone() }, (20, 10, 32));
    let w = worker::spawn(wc, &id, Shutdown::new()).unwrap();
    let toml = format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\nmax_connections = 100\nhandshake_timeout_ms = 20000\n\
         [auth]\nrequired = false\n[[region]]\nname = \"r\"\n[[worker]]\nname = \"w\"\n\
         region = \"r\"\naddress = \"{}\"\nmodels = [\"m\"]\npin = \"{}\"\n",
        w.addr,
        cert.display()
    );
    let e = edge_from(&toml, Path::new("hs.toml"), &id, 1).await;

    // 150 half-open handshakes (more than max_connections), from a source that never
    // answers — as a spoofed flood would look.
    let trust = Trust::pin_file(&cert).unwrap();
    let flood = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for packet in initials(150, &trust).await {
        flood.send_to(&packet, e.addr).await.unwrap();
    }
    within("the edge sees the flood", async {
        while e.stats.address_retries.load(Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let half_open = e.stats.handshaking.load(Relaxed);
    assert!(
        (1..=64).contains(&half_open),
        "{half_open} handshakes held, at most validate_addresses_above"
    );

    // A real client still connects (after a Retry it validates its address) and is served.
    let client = within(
        "a real client connects during the flood",
        Client::connect(e.addr, ClientConfig::new(trust)),
    )
    .await
    .expect("not locked out");
    let (text, _) = served(&client, "m").await;
    assert!(!text.is_empty());
    client.close().await;
    e.stop().await;
    w.stop().await;
}

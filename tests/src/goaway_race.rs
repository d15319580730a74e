//! A worker's answer to a stream that crossed its GOAWAY (ERROR UNAVAILABLE before anything
//! else, PROTOCOL.md §5.4) is not the client's answer: the edge retries the request on
//! another worker. The draining worker here is a real QUIC endpoint that answers every
//! request that way, so the race is not left to timing.

use std::path::Path;

use bytes::BytesMut;
use meridian_fabric::config::ServerTls;
use meridian_fabric::shutdown::Shutdown;
use meridian_fabric::tls::Identity;
use meridian_fabric::worker;
use meridian_protocol::client::{Client, ClientConfig, Event, Request, Trust};
use meridian_protocol::{
    varint, ErrorCode, ErrorFrame, Frame, Settings, ALPN, CONTROL_STREAM_TYPE,
};

use crate::support::*;

/// A worker endpoint that sends SETTINGS and answers every request UNAVAILABLE.
async fn always_draining(id: &Identity) -> std::net::SocketAddr {
    let server = id
        .server_config(&[ALPN], quinn::TransportConfig::default())
        .unwrap();
    let ep = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = ep.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let mut control = conn.open_uni().await.unwrap();
                let mut b = BytesMut::new();
                varint::encode(CONTROL_STREAM_TYPE, &mut b);
                Frame::Settings(Settings {
                    max_concurrent_requests: Some(64),
                    max_prompt_bytes: None,
                })
                .encode(&mut b);
                control.write_all(&b).await.unwrap();
                while let Ok((mut send, _recv)) = conn.accept_bi().await {
                    let e = ErrorFrame::new(ErrorCode::UNAVAILABLE, "draining");
                    let _ = send.write_all(&Frame::Error(e).to_bytes()).await;
                    let _ = send.finish();
                }
                drop(control);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_from_a_draining_worker_is_retried_elsewhere() {
    let dir = scratch("goaway-race");
    let mut id = Identity::self_signed().unwrap();
    id.write(&dir).unwrap();
    let cert = id.cert_path.clone().unwrap();
    let draining = always_draining(&id).await;
    let wc = worker_config(ServerTls::Dev { dir: dir.clone() }, (1, 1, 2));
    let w = worker::spawn(wc, &id, Shutdown::new()).unwrap();
    let toml = format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\n[auth]\nrequired = false\n[[region]]\nname = \"r\"\n\
         [[worker]]\nname = \"draining\"\nregion = \"r\"\naddress = \"{draining}\"\nmodels = [\"m\"]\npin = \"{c}\"\n\
         [[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"{}\"\nmodels = [\"m\"]\npin = \"{c}\"\n",
        w.addr,
        c = cert.display()
    );
    let e = edge_from(&toml, Path::new("race.toml"), &id, 2).await;
    let client = Client::connect(e.addr, ClientConfig::new(Trust::pin_file(&cert).unwrap()))
        .await
        .unwrap();
    let mut retried = 0;
    for i in 0..20 {
        let mut r = Request::new("m", "hi");
        r.headers.shard_key = Some(format!("key-{i}").into());
        let mut g = client.generate(r).await.unwrap();
        let mut routes = Vec::new();
        let mut done = false;
        while let Some(ev) = within("answer", g.next())
            .await
            .expect("served, not failed")
        {
            match ev {
                Event::Routed(r) => routes.push(r.worker),
                Event::End(_) => done = true,
                Event::Tokens(_) => {}
            }
        }
        assert!(done, "request {i} ended with END");
        assert_eq!(routes.last().map(String::as_str), Some("w"), "{routes:?}");
        if routes.first().map(String::as_str) == Some("draining") {
            retried += 1;
        }
    }
    assert!(
        retried > 0,
        "no request was first routed to the draining worker"
    );
    client.close().await;
    e.stop().await;
    w.stop().await;
}

//! Worker discovery against a real DNS server: NSD (Debian package `nsd`, which
//! `scripts/test.sh` installs) serves a zone on loopback; the edge follows a headless-Service
//! style A record set and an SRV record set. Membership changes when the zone changes: a new
//! worker gets traffic, a removed one is drained (its stream finishes) and disconnected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use meridian_fabric::config::ServerTls;
use meridian_fabric::tls::Identity;
use meridian_protocol::client::Request;
use tokio::process::{Child, Command};

use crate::support::*;

/// An NSD process serving zone `workers.test.` on 127.0.0.1:`port`.
struct Nsd {
    child: Child,
    dir: PathBuf,
    port: u16,
    serial: u32,
}

impl Nsd {
    fn start(dir: &Path, records: &str) -> Option<Nsd> {
        let Ok(nsd) = which("nsd") else {
            return None;
        };
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port")
            .port();
        let d = dir.display();
        std::fs::write(
            dir.join("nsd.conf"),
            format!(
                "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  \
                 zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  \
                 zonelistfile: \"{d}/zone.list\"\n  xfrdir: \"{d}\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n\
                 remote-control:\n  control-enable: no\n\
                 zone:\n  name: \"workers.test.\"\n  zonefile: \"workers.test.zone\"\n"
            ),
        )
        .unwrap();
        let mut n = Nsd {
            child: Command::new("true").spawn().unwrap(),
            dir: dir.to_owned(),
            port,
            serial: 1,
        };
        n.write_zone(records);
        n.child = Command::new(nsd)
            .args(["-d", "-c"])
            .arg(dir.join("nsd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nsd starts");
        Some(n)
    }

    fn write_zone(&mut self, records: &str) {
        self.serial += 1;
        std::fs::write(
            self.dir.join("workers.test.zone"),
            format!(
                "$ORIGIN workers.test.\n$TTL 1\n@ IN SOA ns admin ( {} 60 60 60 1 )\n@ IN NS ns\nns IN A 127.0.0.1\n{records}",
                self.serial
            ),
        )
        .unwrap();
    }

    /// Serves `records` from now on (zone rewritten, SIGHUP).
    fn serve(&mut self, records: &str) {
        self.write_zone(records);
        let pid = self.child.id().expect("running").to_string();
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

fn which(bin: &str) -> Result<PathBuf, ()> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
        .ok_or(())
}

fn edge_toml(certs: &Path, nsd: SocketAddr, target: &str) -> String {
    format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\n[tls]\ndev_cert_dir = \"edge\"\n[auth]\nrequired = false\n\
         [[region]]\nname = \"r\"\n\
         [[discovery]]\nname = \"pool\"\nkind = \"dns\"\n{target}\nresolver = \"{nsd}\"\ninterval_ms = 100\n\
         region = \"r\"\nmodels = [\"m\"]\npin = \"{}\"\n",
        certs.join("cert.pem").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_follows_a_records_and_srv_records_of_a_real_nameserver() {
    let dir = scratch("dns");
    let certs = dir.join("workers");
    // Three workers on one port at three loopback addresses, as pods behind a headless
    // Service would be.
    let a = worker_at("a", &certs, "127.0.0.2:0".parse().unwrap(), 150);
    let port = a.addr.port();
    let b = worker_at("b", &certs, SocketAddr::from(([127, 0, 0, 3], port)), 150);
    let c = worker_at("c", &certs, SocketAddr::from(([127, 0, 0, 4], port)), 150);
    let Some(mut nsd) = Nsd::start(&dir, "@ IN A 127.0.0.2\n@ IN A 127.0.0.3\n") else {
        panic!("nsd is not installed: apt-get install nsd (scripts/test.sh does)");
    };
    let toml = edge_toml(
        &certs,
        nsd.addr(),
        &format!("host = \"workers.test.\"\nport = {port}"),
    );
    let path = dir.join("edge.toml");
    let id = Identity::load(&ServerTls::Dev {
        dir: dir.join("edge"),
    })
    .unwrap();
    let edge = edge_from(&toml, &path, &id, 2).await;
    let (pa, pb, pc) = (
        format!("pool/127.0.0.2:{port}"),
        format!("pool/127.0.0.3:{port}"),
        format!("pool/127.0.0.4:{port}"),
    );
    assert_eq!(names(&edge), [pa.clone(), pb.clone()]);
    let metrics = edge.stats.render(&edge.router);
    for line in [
        "meridian_discovery_workers{meridian_discovery_source=\"pool\"} 2",
        "meridian_discovery_errors_total{meridian_discovery_source=\"pool\"} 0",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
    assert!(
        !metrics.contains("meridian_discovery_last_answer_timestamp_seconds{meridian_discovery_source=\"pool\"} 0\n"),
        "the source answered"
    );
    let client = pinned_client(edge.addr, &dir.join("edge").join("cert.pem")).await;

    // A stream in flight on .2, then the zone drops .2 and adds .4.
    let mut on_a = None;
    for shard in 0..32u32 {
        let mut r = Request::new("m", "hello");
        r.headers.shard_key = Some(shard.to_le_bytes().to_vec().into());
        let mut g = client.generate(r).await.unwrap();
        if routed(&mut g).await.worker == pa {
            tokens(&mut g).await;
            on_a = Some(g);
            break;
        }
        drop(g);
    }
    let mut on_a = on_a.expect("a shard key lands on 127.0.0.2");
    nsd.serve("@ IN A 127.0.0.3\n@ IN A 127.0.0.4\n");
    until_workers(&edge, &[&pb, &pc]).await;
    within(
        "both connected",
        edge.router.wait_until(|r| r.healthy_workers() == 2),
    )
    .await;
    // The stream on the removed worker finishes with every token.
    let (n, end) = finish(&mut on_a, 1).await;
    assert_eq!((n, end.completion_tokens), (150, 150));
    disconnected(&a).await;
    let mut r = Request::new("m", "hello");
    r.headers.max_tokens = Some(2);
    let (route, _, _) = within("served", client.generate(r).await.unwrap().collect())
        .await
        .unwrap();
    assert!([pb.as_str(), pc.as_str()].contains(&route[0].worker.as_str()));

    // The same edge reloaded to follow SRV records instead (each with its port): the
    // source changes, so its set is rebuilt from the SRV answer.
    nsd.serve(&format!(
        "@ IN A 127.0.0.3\n_meridian._udp IN SRV 0 1 {port} c\nc IN A 127.0.0.4\n"
    ));
    let srv = edge_toml(&certs, nsd.addr(), "srv = \"_meridian._udp.workers.test.\"");
    edge.reload(meridian_fabric::config::parse_config(&srv, &path).unwrap())
        .await
        .expect("reloaded");
    until_workers(&edge, &[&pc]).await;
    // A name with no records (in two answers in a row) is an empty set: the pool empties,
    // and a request for its model is UNAVAILABLE (retry later), not MODEL_NOT_FOUND.
    nsd.serve("@ IN A 127.0.0.3\n");
    // No SRV records, no workers.
    until_workers(&edge, &[]).await;
    let g = client.generate(Request::new("m", "anyone?")).await.unwrap();
    let err = within("refused", g.collect())
        .await
        .expect_err("no worker left");
    assert_eq!(
        err.code(),
        Some(meridian_protocol::ErrorCode::UNAVAILABLE),
        "{err}"
    );
    client.close().await;
    edge.stop().await;
    for w in [a, b, c] {
        w.stop().await;
    }
}

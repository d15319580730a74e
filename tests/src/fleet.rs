//! Fleet-wide tenant limits through a real `redis-server` (started here; `.ci/run` installs
//! it): what several edges admit together stays at the tenant's limit, and with Redis down
//! each edge falls back to its local limit (fail open to per-edge limits, as documented).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meridian_fabric::auth::Auth;
use meridian_fabric::config::parse_config;
use meridian_fabric::redis::{cmd, Redis, Reply};
use meridian_protocol::{Credential, ErrorCode, RequestHeaders};

use crate::support::*;

/// A `redis-server` on a free loopback port, killed on drop.
struct RedisServer {
    child: Child,
    addr: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn redis_server() -> RedisServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (.ci/run installs the Debian package)");
    let addr = format!("127.0.0.1:{port}");
    within("redis-server answers PING", async {
        loop {
            if let Ok(mut r) = Redis::connect(&addr, Duration::from_secs(1)).await {
                if let Ok(rs) = r.pipeline(&[cmd([b"PING"])]).await {
                    assert_eq!(rs, vec![Reply::Status("PONG".into())]);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    RedisServer { child, addr }
}

fn headers(key: &str) -> RequestHeaders {
    let mut h = RequestHeaders::new("m");
    h.credential = Some(Credential(key.into()));
    h.max_tokens = Some(1);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_sharing_redis_hold_the_fleet_limit_and_fail_open_to_local_limits() {
    let redis = redis_server().await;
    let key = meridian_fabric::auth::key::generate("a1");
    let toml = format!(
        "[[region]]\nname = \"r\"\n[tenants]\nalpha = {{ requests_per_s = 10, burst = 10 }}\n\
         [limits]\nredis = \"{}\"\nkey_prefix = \"test-{}\"\n\
         [auth]\n[[auth.api_keys]]\nid = \"a1\"\ntenant = \"alpha\"\nsha256 = \"{}\"\n",
        redis.addr,
        std::process::id(),
        meridian_fabric::auth::key::hex(&meridian_fabric::auth::key::digest(&key))
    );
    let cfg = parse_config(&toml, Path::new("fleet.toml")).unwrap();
    let prefix = cfg.shared_limits.as_ref().unwrap().key_prefix.clone();
    let (a, b) = (Auth::new(&cfg), Auth::new(&cfg));
    let h = headers(&key);
    let now = meridian_fabric::auth::unix_now();
    // Both edges in the same wall-clock second, 500 ms into it.
    let wall_ms = now * 1000 + 500;
    let t0 = 1_000_000_000;

    // Each edge alone may admit 10 at once; together they admit 12 before syncing.
    for _ in 0..6 {
        a.admit(&h, now, t0).unwrap();
        b.admit(&h, now, t0).unwrap();
    }
    let mut ra = Redis::connect(&redis.addr, Duration::from_secs(1))
        .await
        .unwrap();
    let mut rb = Redis::connect(&redis.addr, Duration::from_secs(1))
        .await
        .unwrap();
    a.sync_fleet(Some(&mut ra), &prefix, wall_ms, t0)
        .await
        .unwrap();
    b.sync_fleet(Some(&mut rb), &prefix, wall_ms, t0)
        .await
        .unwrap();
    a.sync_fleet(Some(&mut ra), &prefix, wall_ms, t0)
        .await
        .unwrap();
    // The fleet is at 12 of 10: both edges refuse for the rest of the second, although
    // each one's local bucket still has room.
    for auth in [&a, &b] {
        let e = auth.admit(&h, now, t0).unwrap_err();
        assert_eq!(e.code, ErrorCode::RATE_LIMITED);
        assert!(e.message.contains("fleet-wide"), "{}", e.message);
        assert_eq!(e.retry_after_ms, Some(500));
    }
    // The next second admits again.
    let t1 = t0 + 600_000_000;
    a.admit(&h, now, t1).unwrap();

    // While the edge has no connection, what it admits is dropped at each sync, so the
    // outage does not land in one window later and block the tenant on recovery.
    let t2 = t1 + 10_000_000_000;
    let mut during_outage = 0;
    for tick in 0..3u64 {
        let t = t2 + tick * 2_000_000_000;
        during_outage += (0..10).filter(|_| a.admit(&h, now, t).is_ok()).count();
        assert!(a
            .sync_fleet(None, &prefix, wall_ms + 1000, t)
            .await
            .is_err());
    }
    assert!(
        during_outage >= 20,
        "local limits keep admitting: {during_outage}"
    );
    let t3 = t2 + 8_000_000_000;
    a.admit(&h, now, t3).unwrap();
    a.sync_fleet(Some(&mut ra), &prefix, wall_ms + 5000, t3)
        .await
        .unwrap();
    a.admit(&h, now, t3)
        .expect("one admission in a fresh window is under the fleet limit");

    // Redis down: syncs fail and each edge enforces its local limit alone (fail open).
    drop(redis);
    let sync = a
        .sync_fleet(Some(&mut ra), &prefix, wall_ms + 6000, t3)
        .await;
    assert!(
        sync.is_err(),
        "sync with redis down must fail, got {sync:?}"
    );
    let t4 = t3 + 10_000_000_000; // local buckets full again
    let admitted = (0..20).filter(|_| a.admit(&h, now, t4).is_ok()).count();
    assert_eq!(admitted, 10, "the local burst, no more");
}

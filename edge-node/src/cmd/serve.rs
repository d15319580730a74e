//! `meridian edge` and `meridian worker`: long-running servers, stopped by Ctrl-C/SIGTERM
//! with a graceful drain.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use meridian_fabric::config::{load_config, load_worker_config};
use meridian_fabric::shutdown::Shutdown;
use meridian_fabric::tls::Identity;
use meridian_fabric::{edge, worker};

fn cert_display(identity: &Identity) -> String {
    identity
        .cert_path
        .as_ref()
        .map(|p| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        })
        .unwrap_or_default()
}

pub async fn edge(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    // Caught before anything is printed: a SIGHUP sent as soon as the edge says it listens
    // reloads, never kills it.
    let hup = super::Hangups::new();
    let config = load_config(path).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    let identity = Identity::load(&config.edge.tls).context("setting up the edge certificate")?;
    let pop = config.edge.pop.clone();
    // The second line waits for every static worker, and with discovery for one at least.
    let workers = match config.discovery.is_empty() {
        true => config.workers.len(),
        false => config.workers.len().max(1),
    };
    let (admin_addr, http_addr) = (config.edge.admin, config.edge.http);
    let (alt_svc_port, https) = (config.edge.alt_svc_port, config.edge.http_tls);
    let http_tenant = config.edge.http_tenant.clone();
    let admin_token: Option<Arc<str>> = match &config.edge.admin_token_env {
        Some(var) => Some(
            std::env::var(var)
                .with_context(|| format!("reading the admin token from ${var}"))?
                .into(),
        ),
        None => None,
    };
    // `[edge] http` also serves HTTP/3 on the edge's UDP port (ALPN h3 beside meridian/1).
    let h3 = http_addr.map(|_| crate::http::h3::handler(http_tenant.clone()));
    let handle = edge::spawn_with_h3(Arc::new(config), &identity, Shutdown::new(), h3)?;
    let cert = cert_display(&identity);
    let admin_url = match admin_addr {
        Some(a) => {
            let admin = crate::admin::Admin {
                router: handle.router.clone(),
                stats: handle.stats.clone(),
                traces: handle.trace_stats(),
                token: admin_token.clone(),
            };
            let bound = crate::admin::spawn(a, admin)
                .await
                .with_context(|| format!("binding the admin listener {a}"))?;
            Some(format!("http://{bound}"))
        }
        None => None,
    };
    let http_url = match http_addr {
        Some(a) => {
            // HTTP/3 is on the edge's UDP port (or the port a load balancer exposes it on).
            let h3_port = alt_svc_port.unwrap_or(handle.addr.port());
            let front =
                crate::http::Front::new(handle.submitter(), http_tenant).with_alt_svc(h3_port);
            let bound = crate::http::spawn(a, front)
                .await
                .with_context(|| format!("binding the HTTP front door {a}"))?;
            let scheme = if https { "https" } else { "http" };
            Some(format!("{scheme}://{bound}"))
        }
        None => None,
    };
    if json {
        let line = serde_json::json!({
            "role": "edge",
            "pop": pop,
            "edge_addr": handle.addr.to_string(),
            "cert": cert,
            "admin_url": admin_url,
            "http_url": http_url,
        });
        println!("{line}");
    } else {
        println!(
            "meridian edge `{pop}` listening on {} (QUIC, ALPN meridian/1); certificate: {cert}",
            handle.addr
        );
        if let Some(u) = &http_url {
            println!("OpenAI-compatible HTTP front door: {u}/v1");
        }
        if let Some(u) = &admin_url {
            println!("admin: {u}/metrics {u}/healthz {u}/readyz {u}/routes");
        }
    }
    // A second line once every upstream is connected (scripts and tests wait for it).
    let router = handle.router.clone();
    let ready = async move {
        router.wait_until(|r| r.healthy_workers() >= workers).await;
        if json {
            println!(
                "{}",
                serde_json::json!({ "ready": true, "workers": router.healthy_workers() })
            );
        } else {
            println!("connected to {} workers", router.healthy_workers());
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = super::terminated() => {}
        _ = ready => {}
        _ = reloads(path, &handle, hup) => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
    handle.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// The content of what the edge watches: its config file and the running config's
/// certificate and key files (a renewed Secret is reloaded too); `None` while the config file
/// cannot be read (being replaced).
fn watched(path: &Path, handle: &edge::EdgeHandle) -> Option<Vec<u8>> {
    let mut all = std::fs::read(path).ok()?;
    all.extend(edge::certificate_bytes(&handle.router.config()));
    Some(all)
}

/// Reloads the config on SIGHUP, and whenever the file's content changes (checked every
/// `[edge] watch_config_ms`; a mounted ConfigMap changes by an atomic symlink swap, which
/// reading the path follows). Runs until the process ends.
async fn reloads(path: &Path, handle: &edge::EdgeHandle, mut hup: super::Hangups) {
    let mut seen = watched(path, handle);
    loop {
        let every = handle.router.config().edge.watch_config;
        let changed = async {
            match every {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
            watched(path, handle)
        };
        tokio::select! {
            _ = hup.recv() => tracing::info!(config = %path.display(), "SIGHUP: reloading the config"),
            now = changed => {
                // A file that cannot be read for a moment (being replaced) is not a change.
                if now.is_none() || now == seen {
                    continue;
                }
                tracing::info!(config = %path.display(), "config or certificate changed: reloading");
            }
        }
        // Taken before the reload, so a change while it runs is seen next time.
        seen = watched(path, handle);
        let tls = handle.router.config().edge.tls.clone();
        // Logged and counted (meridian_config_reloads_total) by the edge.
        let _ = handle.reload_file(path).await;
        if handle.router.config().edge.tls != tls {
            // New certificate paths: their content is what is watched from now on (not a
            // change to reload again).
            seen = watched(path, handle);
        }
    }
}

pub async fn worker(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut hup = super::Hangups::new();
    let config = load_worker_config(path).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    let identity = Identity::load(&config.tls).context("setting up the worker certificate")?;
    let name = config.name.clone();
    let region = config.region.clone();
    let health = config.health;
    let handle = worker::spawn(config, &identity, Shutdown::new())?;
    // Readiness falls to 503 as soon as the worker drains, so an orchestrator stops sending.
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let health_url = match health {
        Some(a) => {
            let bound = crate::admin::spawn_worker_probes(a, draining.clone())
                .await
                .with_context(|| format!("binding the health listener {a}"))?;
            Some(format!("http://{bound}"))
        }
        None => None,
    };
    let cert = cert_display(&identity);
    if json {
        println!(
            "{}",
            serde_json::json!({ "role": "worker", "worker": name, "region": region, "addr": handle.addr.to_string(), "cert": cert, "health_url": health_url })
        );
    } else {
        println!(
            "meridian worker `{name}` (region {region}) listening on {}; certificate: {cert}",
            handle.addr
        );
    }
    // A worker takes its config at start: SIGHUP is logged, not fatal (its default action
    // would kill the process and cut its streams).
    // One SIGTERM listener for the whole loop: one made anew per iteration would miss a
    // SIGTERM delivered between two (after a SIGHUP), and the worker would not drain.
    let term = super::terminated();
    tokio::pin!(term);
    loop {
        tokio::select! {
            _ = &mut term => break,
            _ = hup.recv() => tracing::warn!("SIGHUP: a worker does not reload its config; restart it (SIGTERM drains it first)"),
        }
    }
    draining.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!("shutting down: GOAWAY sent, draining in-flight requests");
    handle.stop().await;
    Ok(ExitCode::SUCCESS)
}

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
    let config = load_config(path).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    let identity = Identity::load(&config.edge.tls).context("setting up the edge certificate")?;
    let pop = config.edge.pop.clone();
    let workers = config.workers.len();
    let handle = edge::spawn(Arc::new(config), &identity, Shutdown::new())?;
    let cert = cert_display(&identity);
    if json {
        println!(
            "{}",
            serde_json::json!({ "role": "edge", "pop": pop, "edge_addr": handle.addr.to_string(), "cert": cert })
        );
    } else {
        println!(
            "meridian edge `{pop}` listening on {} (QUIC, ALPN meridian/1); certificate: {cert}",
            handle.addr
        );
    }
    // A second line once every upstream is connected (scripts and tests wait for it).
    let router = handle.router.clone();
    let ready = async move {
        router.wait_until(|r| r.healthy_workers() == workers).await;
        if json {
            println!(
                "{}",
                serde_json::json!({ "ready": true, "workers": workers })
            );
        } else {
            println!("connected to all {workers} workers");
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = super::terminated() => {}
        _ = ready => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
    handle.stop().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn worker(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = load_worker_config(path).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    let identity = Identity::load(&config.tls).context("setting up the worker certificate")?;
    let name = config.name.clone();
    let region = config.region.clone();
    let handle = worker::spawn(config, &identity, Shutdown::new())?;
    let cert = cert_display(&identity);
    if json {
        println!(
            "{}",
            serde_json::json!({ "role": "worker", "worker": name, "region": region, "addr": handle.addr.to_string(), "cert": cert })
        );
    } else {
        println!(
            "meridian worker `{name}` (region {region}) listening on {}; certificate: {cert}",
            handle.addr
        );
    }
    super::terminated().await;
    tracing::info!("shutting down: GOAWAY sent, draining in-flight requests");
    handle.stop().await;
    Ok(ExitCode::SUCCESS)
}

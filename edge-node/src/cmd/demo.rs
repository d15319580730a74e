//! `meridian demo`: run the scenario, or serve the topology until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use meridian_fabric::config::SyntheticBackend;
use meridian_fabric::demo::{run_scenario, Demo, StepOutcome};
use meridian_protocol::client::{Client, ClientConfig, Trust};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Print one JSON object per request (or, with --serve, one startup line).
    #[arg(long)]
    json: bool,
    /// Start the topology and keep it running until Ctrl-C instead of running the scenario.
    #[arg(long)]
    serve: bool,
    /// Edge address (default: 127.0.0.1:4433 with --serve, any free port otherwise).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// OpenAI-compatible HTTP front door with --serve.
    #[arg(long, default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// Admin listener (metrics, health, routes) with --serve.
    #[arg(long, default_value = "127.0.0.1:0")]
    admin: SocketAddr,
    /// Where to write the demo certificate (default: a fresh temporary directory).
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Synthetic workers' time to first token, milliseconds.
    #[arg(long, default_value_t = 25)]
    ttft_ms: u64,
    /// Synthetic workers' delay between tokens, milliseconds.
    #[arg(long, default_value_t = 8)]
    itl_ms: u64,
    /// Tokens per response.
    #[arg(long, default_value_t = 16)]
    max_tokens: u64,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let temp = args.cert_dir.is_none();
    let cert_dir = args.cert_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("meridian-demo-{}", std::process::id()))
    });
    let listen = args.listen.unwrap_or_else(|| {
        if args.serve {
            "127.0.0.1:4433"
        } else {
            "127.0.0.1:0"
        }
        .parse()
        .expect("valid")
    });
    let backend = SyntheticBackend {
        ttft: Duration::from_millis(args.ttft_ms),
        itl: Duration::from_millis(args.itl_ms),
        max_tokens: args.max_tokens,
    };
    // With --serve the edge's UDP port also speaks HTTP/3 (the OpenAI front door).
    let h3 = args.serve.then(|| crate::http::h3::handler(None));
    let mut demo = Demo::start_with_h3(&cert_dir, listen, backend, h3).await?;
    let cert = std::fs::canonicalize(&demo.cert_path)?;
    let code = if args.serve {
        let admin = crate::admin::Admin {
            router: demo.edge.router.clone(),
            stats: demo.edge.stats.clone(),
            traces: demo.edge.trace_stats(),
            token: None,
        };
        let admin_url = format!("http://{}", crate::admin::spawn(args.admin, admin).await?);
        let front = crate::http::Front::new(demo.edge.submitter(), None)
            .with_alt_svc(demo.edge.addr.port());
        let http_url = format!("http://{}", crate::http::spawn(args.http, front).await?);
        serve(&demo, &cert, &admin_url, &http_url, args.json).await;
        ExitCode::SUCCESS
    } else {
        scenario(&mut demo, &cert, args.json).await?
    };
    demo.shutdown().await;
    if temp {
        let _ = std::fs::remove_dir_all(&cert_dir);
    }
    Ok(code)
}

async fn serve(demo: &Demo, cert: &std::path::Path, admin_url: &str, http_url: &str, json: bool) {
    let addr = demo.edge.addr;
    // Set by OTEL_EXPORTER_OTLP_ENDPOINT (the demo has no config file).
    let traces =
        (demo.config.telemetry.as_ref()).map(|t| format!("http://{}{}", t.authority, t.path));
    if json {
        println!(
            "{}",
            serde_json::json!({
                "edge_addr": addr.to_string(),
                "cert": cert.display().to_string(),
                "model": meridian_fabric::demo::MODEL,
                "admin_url": admin_url,
                "http_url": http_url,
                "otlp_traces": traces,
                "api_keys": meridian_fabric::demo::DEMO_KEYS
                    .iter()
                    .map(|(t, k)| (t.to_string(), k.to_string()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            })
        );
    } else {
        println!(
            "Meridian demo topology running: {} regions, {} workers, edge on {addr}",
            demo.config.regions.len(),
            demo.config.workers.len()
        );
        println!("  certificate to pin: {}", cert.display());
        let acme = meridian_fabric::demo::demo_key("acme").expect("demo key");
        for (tenant, key) in meridian_fabric::demo::DEMO_KEYS {
            println!("  demo API key of tenant {tenant}: {key}");
        }
        println!("  try: cargo run --example generate -p meridian-protocol -- --edge {addr} --cert {} --api-key {acme} --area jp \"Hello\"", cert.display());
        println!("  OpenAI-compatible HTTP: {http_url}/v1  (curl {http_url}/v1/chat/completions -H 'authorization: Bearer {acme}' -H 'content-type: application/json' -H 'x-meridian-area: jp' -d '{{\"model\":\"llama-3-8b\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}],\"stream\":true}}')");
        println!("  admin: {admin_url}/metrics {admin_url}/healthz {admin_url}/readyz {admin_url}/routes");
        match &traces {
            Some(url) => println!("  traces: OTLP/HTTP to {url}"),
            None => println!("  traces: off (set OTEL_EXPORTER_OTLP_ENDPOINT to export them)"),
        }
        println!("Ctrl-C to stop.");
    }
    super::terminated().await;
}

async fn scenario(demo: &mut Demo, cert: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::connect(demo.edge.addr, ClientConfig::new(Trust::pin_file(cert)?)).await?;
    if !json {
        println!(
            "Meridian demo: {} regions, {} synthetic workers, edge on {} (QUIC, ALPN meridian/1)\n",
            demo.config.regions.len(),
            demo.config.workers.len(),
            demo.edge.addr
        );
    }
    let outcomes = run_scenario(demo, &client).await;
    for o in &outcomes {
        if json {
            println!("{}", serde_json::to_string(o)?);
        } else {
            print_step(o);
        }
    }
    client.close().await;
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if !json {
        if failed == 0 {
            println!("All {} requests behaved as expected.", outcomes.len());
        } else {
            println!(
                "{failed} of {} requests did NOT behave as expected.",
                outcomes.len()
            );
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_step(o: &StepOutcome) {
    let who = match (o.tenant, o.residency) {
        (Some(t), Some(r)) => format!("area {} · tenant {t} (residency {r})", o.area),
        (Some(t), None) => format!("area {} · tenant {t}", o.area),
        _ => format!("area {}", o.area),
    };
    let key = o
        .shard_key
        .map(|k| format!(" · shard key {k}"))
        .unwrap_or_default();
    println!("[{}] {}", o.step, o.title);
    match (&o.region, &o.worker, &o.error) {
        (Some(r), Some(w), None) => println!(
            "    {who}{key} → region {r}, worker {w} · ttft {:.1} ms · {} tokens",
            o.ttft_ms.unwrap_or_default(),
            o.tokens
        ),
        _ => println!(
            "    {who}{key} → error {}: {}",
            o.error.as_deref().unwrap_or("?"),
            o.message.as_deref().unwrap_or("")
        ),
    }
    if !o.text.is_empty() {
        println!("    “{}”", o.text.trim_end());
    }
    println!(
        "    expected: {} — {}\n",
        o.expected,
        if o.ok { "ok" } else { "MISMATCH" }
    );
}

//! Sends one prompt to a Meridian edge and streams the answer.
//!
//! ```text
//! cargo run -p meridian-protocol --example generate -- \
//!     --edge 127.0.0.1:4433 --cert /tmp/meridian-demo-123/cert.pem --area jp "Hello"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use meridian_protocol::client::{Client, ClientConfig, Event, Request, Trust};

/// Send one prompt through a Meridian edge.
#[derive(Parser, Debug)]
struct Args {
    /// Edge address.
    #[arg(long, default_value = "127.0.0.1:4433")]
    edge: SocketAddr,
    /// Certificate to pin (development), e.g. what `meridian demo --serve` printed.
    #[arg(long, conflicts_with = "ca")]
    cert: Option<PathBuf>,
    /// CA certificate to verify the edge against (production).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// TLS server name.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Model.
    #[arg(long, default_value = "llama-3-8b")]
    model: String,
    /// Client area (ISO country code or group).
    #[arg(long)]
    area: Option<String>,
    /// API key or signed token (or MERIDIAN_API_KEY); it decides the tenant.
    #[arg(long, env = "MERIDIAN_API_KEY")]
    api_key: Option<String>,
    /// Tenant claimed; must match the credential's tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Residency policy.
    #[arg(long)]
    residency: Option<String>,
    /// Session id used as the shard key.
    #[arg(long)]
    session: Option<String>,
    /// Most tokens to generate.
    #[arg(long)]
    max_tokens: Option<u64>,
    /// The prompt.
    prompt: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let trust = match (&args.cert, &args.ca) {
        (Some(c), _) => Trust::pin_file(c)?,
        (None, Some(ca)) => Trust::ca_file(ca)?,
        (None, None) => anyhow::bail!("pass --cert <pinned cert.pem> or --ca <ca.pem>"),
    };
    let mut config = ClientConfig::new(trust);
    config.server_name = args.server_name.clone();
    if let Some(key) = &args.api_key {
        config = config.with_credential(key.clone());
    }
    let client = Client::connect(args.edge, config).await?;
    let mut request = Request::new(args.model, args.prompt);
    request.headers.area = args.area;
    request.headers.tenant = args.tenant;
    request.headers.residency = args.residency;
    request.headers.shard_key = args.session.map(Into::into);
    request.headers.max_tokens = args.max_tokens;
    let start = Instant::now();
    let mut generation = client.generate(request).await?;
    let mut first = None;
    loop {
        match generation.next().await {
            Ok(Some(Event::Routed(r))) => eprintln!(
                "[routed to region {} worker {} (attempt {})]",
                r.region, r.worker, r.attempt
            ),
            Ok(Some(Event::Tokens(t))) => {
                first.get_or_insert_with(|| start.elapsed());
                print!("{t}");
            }
            Ok(Some(Event::End(e))) => {
                println!();
                eprintln!(
                    "[end: {} · {} tokens · ttft {:.1} ms]",
                    e.finish_reason.as_str(),
                    e.completion_tokens,
                    first.unwrap_or_default().as_secs_f64() * 1e3
                );
            }
            Ok(None) => break,
            Err(e) => {
                println!();
                eprintln!("[error: {e}]");
                client.close().await;
                std::process::exit(1);
            }
        }
    }
    client.close().await;
    Ok(())
}

//! `meridian`: run an edge, a worker, or the embedded demo; check configs; explain routes.
//!
//! This crate owns the command line, config loading, signals, and printing. All routing,
//! transport and relay logic lives in `meridian-fabric`.
#![forbid(unsafe_code)]

mod admin;
mod cmd;
mod http;
mod listen;
mod routes_api;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Meridian: a QUIC request-sharding fabric for LLM inference.
#[derive(Parser, Debug)]
#[command(name = "meridian", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Runtime worker threads for edge, worker and demo (1 = a single-threaded runtime).
    /// Default: one per CPU.
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Log level (error, warn, info, debug, trace). Default: warn for demo, route and
    /// check; info for edge and worker. `MERIDIAN_LOG` also sets it.
    #[arg(long, global = true)]
    log_level: Option<tracing::Level>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded demo topology (5 regions, 10 synthetic workers, 1 edge on
    /// loopback) and its routing scenario. No files or setup needed.
    Demo(cmd::demo::DemoArgs),
    /// Run an edge node: terminate client QUIC connections and route requests to workers.
    Edge {
        /// Edge/topology config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Print the startup line as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a worker beside an inference backend.
    Worker {
        /// Worker config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Print the startup line as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file (edge or worker); print every error with file:line.
    Check {
        /// Config file to check.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Explain a routing decision: candidates, filters, region, worker, or the error.
    Route(cmd::route::RouteArgs),
    /// Make an API key (prints the key once and the `[[auth.api_keys]]` entry with its
    /// digest), or with --signing a token-signing key file.
    Keygen(cmd::keys::KeygenArgs),
    /// Issue a signed token (HS256 JWT) for a tenant with a signing-key file.
    Token(cmd::keys::TokenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Edge { .. } | Command::Worker { .. } => tracing::Level::INFO,
        _ => tracing::Level::WARN,
    };
    let level = cli
        .log_level
        .or_else(|| {
            std::env::var("MERIDIAN_LOG")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(default_level);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let result = match cli.command {
        Command::Check { config } => return cmd::check::run(&config),
        Command::Route(args) => return cmd::route::run(&args),
        Command::Keygen(args) => cmd::keys::keygen(&args),
        Command::Token(args) => cmd::keys::token(&args),
        Command::Demo(args) => {
            runtime(cli.threads).and_then(|rt| rt.block_on(cmd::demo::run(args)))
        }
        Command::Edge { config, json } => {
            runtime(cli.threads).and_then(|rt| rt.block_on(cmd::serve::edge(&config, json)))
        }
        Command::Worker { config, json } => {
            runtime(cli.threads).and_then(|rt| rt.block_on(cmd::serve::worker(&config, json)))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meridian: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = match threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    Ok(b.enable_all().build()?)
}

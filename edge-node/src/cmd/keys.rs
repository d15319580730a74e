//! `meridian keygen` and `meridian token`: credentials for `[auth]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use meridian_fabric::auth::{key, token, unix_now};

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Key id (1-32 of a-z, 0-9, '-', '.'): names the key for rotation and revocation.
    #[arg(long)]
    id: String,
    /// Tenant the API key authenticates (an API key needs one).
    #[arg(long, required_unless_present = "signing")]
    tenant: Option<String>,
    /// Expiry of the API key, RFC 3339 (e.g. 2027-01-31T00:00:00Z); written to the config
    /// snippet.
    #[arg(long)]
    expires: Option<String>,
    /// Make a token-signing key instead (HS256), written to this file (mode 0600).
    #[arg(long, value_name = "FILE", conflicts_with = "tenant")]
    signing: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Signing-key file (from `meridian keygen --signing FILE`).
    #[arg(long)]
    key: PathBuf,
    /// The signing key's id, as configured in `[[auth.signing_keys]]`.
    #[arg(long)]
    id: String,
    /// Tenant the token is for.
    #[arg(long)]
    tenant: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

pub fn keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    if !key::valid_id(&args.id) {
        bail!("--id must be 1-32 characters of a-z, 0-9, '-' or '.'");
    }
    if let Some(path) = &args.signing {
        let secret = key::random::<32>();
        write_private(path, token::format_secret(&secret).as_bytes())?;
        println!(
            "# signing key written to {}; give it to every edge and to the token issuer",
            path.display()
        );
        println!(
            "[[auth.signing_keys]]\nid = \"{}\"\nsecret_file = \"{}\"",
            args.id,
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let tenant = args.tenant.as_deref().expect("clap requires --tenant");
    let k = key::generate(&args.id);
    println!("# API key for tenant {tenant} (shown once; the edge stores only its digest):");
    println!("# {k}");
    println!("[[auth.api_keys]]");
    println!("id = \"{}\"\ntenant = \"{tenant}\"", args.id);
    println!("sha256 = \"{}\"", key::hex(&key::digest(&k)));
    if let Some(e) = &args.expires {
        println!("expires = {e}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn token(args: &TokenArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.key)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let secret =
        token::parse_secret(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.key.display()))?;
    if args.ttl == 0 {
        bail!("--ttl must be at least 1 second");
    }
    let now = unix_now();
    println!(
        "{}",
        token::issue(
            &args.id,
            &secret,
            &args.tenant,
            now,
            now.saturating_add(args.ttl)
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

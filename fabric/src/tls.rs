//! Server certificates: PEM files for production, a generated self-signed certificate for
//! development (written to disk so clients can pin it), and the quinn server config.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use meridian_protocol::client::tls::{load_certs, provider, TlsError};
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ServerTls;

/// A server's certificate chain and key.
#[derive(Debug)]
pub struct Identity {
    /// Certificate chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// Private key.
    pub key: PrivateKeyDer<'static>,
    /// The PEM file clients can pin or trust.
    pub cert_path: Option<PathBuf>,
}

/// Why a server identity could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A certificate file is unusable: check `[tls] cert`.
    #[error(transparent)]
    Cert(#[from] TlsError),
    /// The key file is unusable: check `[tls] key`.
    #[error("{path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The development certificate directory could not be written.
    #[error("writing development certificate to {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// rcgen failed to generate a certificate.
    #[error("generating a development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls/quinn rejected the certificate or key.
    #[error("TLS server configuration: {0}")]
    Config(String),
}

impl Identity {
    /// A fresh self-signed certificate for `localhost`, `127.0.0.1` and `::1`, in memory.
    pub fn self_signed() -> Result<Identity, IdentityError> {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ])?;
        Ok(Identity {
            certs: vec![ck.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into()),
            cert_path: None,
        })
    }

    /// Loads or creates the identity `tls` describes. A development identity is reused
    /// from `dir/cert.pem` + `dir/key.pem` if present, so restarts keep the same pin.
    pub fn load(tls: &ServerTls) -> Result<Identity, IdentityError> {
        match tls {
            ServerTls::Files { cert, key } => Ok(Identity {
                certs: load_certs(cert)?,
                key: load_key(key)?,
                cert_path: Some(cert.clone()),
            }),
            ServerTls::Dev { dir } => {
                let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
                if cert.exists() && key.exists() {
                    return Ok(Identity {
                        certs: load_certs(&cert)?,
                        key: load_key(&key)?,
                        cert_path: Some(cert),
                    });
                }
                let mut id = Identity::self_signed()?;
                id.write(dir)?;
                Ok(id)
            }
        }
    }

    /// Writes the certificate and key as `dir/cert.pem` and `dir/key.pem` (key mode 0600).
    pub fn write(&mut self, dir: &Path) -> Result<(), IdentityError> {
        let werr = |path: &Path| {
            let path = path.display().to_string();
            move |source| IdentityError::Write { path, source }
        };
        fs::create_dir_all(dir).map_err(werr(dir))?;
        let key_path = dir.join("key.pem");
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&key_path).map_err(werr(&key_path))?;
        f.write_all(pem("PRIVATE KEY", self.key.secret_der()).as_bytes())
            .map_err(werr(&key_path))?;
        let cert_path = dir.join("cert.pem");
        let certs: String = self.certs.iter().map(|c| pem("CERTIFICATE", c)).collect();
        fs::write(&cert_path, certs).map_err(werr(&cert_path))?;
        self.cert_path = Some(cert_path);
        Ok(())
    }

    /// A quinn server config offering `alpn`, with `transport`.
    pub fn server_config(
        &self,
        alpn: &[&[u8]],
        transport: quinn::TransportConfig,
    ) -> Result<quinn::ServerConfig, IdentityError> {
        self.server_config_verifying(alpn, transport, None)
    }

    /// [`Identity::server_config`] that, with `client_ca`, requires every client to present a
    /// certificate issued by that CA (mutual TLS); a client without one gets a TLS alert and
    /// no connection.
    pub fn server_config_verifying(
        &self,
        alpn: &[&[u8]],
        transport: quinn::TransportConfig,
        client_ca: Option<&Path>,
    ) -> Result<quinn::ServerConfig, IdentityError> {
        let crypto = self.rustls_config(alpn, client_ca, false)?;
        let crypto =
            QuicServerConfig::try_from(crypto).map_err(|e| IdentityError::Config(e.to_string()))?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        cfg.transport_config(Arc::new(transport));
        Ok(cfg)
    }

    /// The server config of this identity offering `alpn`, requiring client certificates
    /// from `client_ca` if given: TLS 1.3 only (what QUIC requires), or also TLS 1.2 with
    /// `tls12` (for a TLS listener over TCP — the HTTPS front door — whose clients and load
    /// balancers may not all speak 1.3).
    pub fn rustls_config(
        &self,
        alpn: &[&[u8]],
        client_ca: Option<&Path>,
        tls12: bool,
    ) -> Result<rustls::ServerConfig, IdentityError> {
        let cfg_err = |e: &dyn std::fmt::Display| IdentityError::Config(e.to_string());
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| cfg_err(&e))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in load_certs(path)? {
                    roots.add(c).map_err(|e| cfg_err(&e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .map_err(|e| cfg_err(&e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut crypto = builder
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| cfg_err(&e))?;
        crypto.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(crypto)
    }
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| IdentityError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// PEM-armours `der` (RFC 7468).
fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_identity_round_trips_through_pem_and_is_reused() {
        let dir = std::env::temp_dir().join(format!("meridian-tls-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let tls = ServerTls::Dev { dir: dir.clone() };
        let first = Identity::load(&tls).unwrap();
        let again = Identity::load(&tls).unwrap();
        assert_eq!(
            first.certs, again.certs,
            "restart keeps the pinned certificate"
        );
        assert_eq!(load_certs(&dir.join("cert.pem")).unwrap(), first.certs);
        first
            .server_config(&[b"meridian/1"], quinn::TransportConfig::default())
            .unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_files_are_clear_errors() {
        let err = Identity::load(&ServerTls::Files {
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }
}

//! Client-side TLS for `meridian/1`: trust CA roots, or pin exact server certificates.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// How a client decides to trust a server.
#[derive(Clone)]
pub enum Trust {
    /// Verify the server's chain against these CA certificates and its name.
    Roots(Vec<CertificateDer<'static>>),
    /// Development: accept exactly these certificates (e.g. the self-signed certificate a dev
    /// edge wrote to disk), whatever their names or issuers.
    Pinned(Vec<CertificateDer<'static>>),
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::Roots(c) => write!(f, "Roots({} certs)", c.len()),
            Trust::Pinned(c) => write!(f, "Pinned({} certs)", c.len()),
        }
    }
}

/// A certificate file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The PEM file could not be read or holds no certificate: check the path.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls rejected the configuration (e.g. an invalid CA certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

impl Trust {
    /// Trusts the CA certificates in a PEM file.
    pub fn ca_file(path: impl AsRef<Path>) -> Result<Self, TlsError> {
        load_certs(path.as_ref()).map(Trust::Roots)
    }

    /// Pins the certificates in a PEM file.
    pub fn pin_file(path: impl AsRef<Path>) -> Result<Self, TlsError> {
        load_certs(path.as_ref()).map(Trust::Pinned)
    }
}

/// The crypto provider Meridian uses everywhere: rustls on *ring*.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS 1.3 client configuration offering `alpn`.
pub fn client_crypto(trust: &Trust, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
    client_crypto_with(trust, alpn, None)
}

/// A client certificate chain and its key, presented to servers that require one (mutual
/// TLS: an edge to its workers). `Debug` never shows the key.
pub struct ClientIdentity {
    /// Certificate chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certs", &self.certs.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClientIdentity {
    /// Loads a PEM certificate chain and a PEM private key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        use rustls::pki_types::pem::PemObject;
        let certs = load_certs(cert)?;
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
                path: key.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(ClientIdentity { certs, key })
    }
}

/// [`client_crypto`], presenting `identity` to servers that ask for a client certificate.
pub fn client_crypto_with(
    trust: &Trust,
    alpn: &[&[u8]],
    identity: Option<&ClientIdentity>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut cfg = match trust {
        Trust::Roots(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots.add(c.clone())?;
            }
            let b = builder.with_root_certificates(roots);
            match identity {
                Some(id) => b.with_client_auth_cert(id.certs.clone(), id.key.clone_key())?,
                None => b.with_no_client_auth(),
            }
        }
        Trust::Pinned(certs) => {
            let b = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    certs: certs.clone(),
                    provider,
                }));
            match identity {
                Some(id) => b.with_client_auth_cert(id.certs.clone(), id.key.clone_key())?,
                None => b.with_no_client_auth(),
            }
        }
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// Accepts exactly the pinned end-entity certificates; handshake signatures are still
/// verified, so the server must hold the pinned certificate's private key.
#[derive(Debug)]
struct PinnedVerifier {
    certs: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

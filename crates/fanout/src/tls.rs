//! TLS for the fan-out protocol (rustls, ring): server certificates, and mutual TLS where
//! the server requires client certificates signed by a CA and, optionally, with given names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::Error;

/// The server side of TLS.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca_pem: Option<PathBuf>,
    /// When not empty, the client certificate must be valid for one of these names (its
    /// subjectAltName DNS names, as Typha's ClientCN/ClientURISAN checks).
    pub allowed_client_cns: Vec<String>,
}

/// The client side of TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// CA that signed the servers' certificates.
    pub ca_pem: PathBuf,
    /// This client's certificate and key, for servers that require one.
    pub cert_pem: Option<PathBuf>,
    pub key_pem: Option<PathBuf>,
    /// The name the servers' certificates must carry.
    pub server_name: String,
}

fn tls_err(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{what} {}: {e}", path.display()))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err("reading certificates from", path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err("parsing certificates in", path, e))?;
    if certs.is_empty() {
        return Err(tls_err(
            "reading certificates from",
            path,
            "no certificate found",
        ));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_err("reading the private key", path, e))
}

fn roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for c in certs(path)? {
        roots
            .add(c)
            .map_err(|e| tls_err("adding the CA certificate", path, e))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The acceptor for `tls`, with its files read and checked now (errors name the file).
pub fn acceptor(tls: &ServerTls) -> Result<TlsAcceptor, Error> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let builder = match &tls.client_ca_pem {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| tls_err("client CA", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let cfg = builder
        .with_single_cert(certs(&tls.cert_pem)?, key(&tls.key_pem)?)
        .map_err(|e| tls_err("server certificate and key", &tls.cert_pem, e))?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Whether the verified client certificate is valid for one of `allowed` (any when empty).
pub fn client_name_allowed(cert: Option<&CertificateDer<'_>>, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(cert) = cert else {
        return false;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    allowed.iter().any(|name| {
        ServerName::try_from(name.as_str())
            .is_ok_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok())
    })
}

/// A prepared client-side TLS connector and the server name to verify.
pub type Tls = (TlsConnector, ServerName<'static>);

/// The connector for `tls` and the server name to verify.
pub fn connector(tls: &ClientTls) -> Result<Tls, Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots(&tls.ca_pem)?);
    let cfg = match (&tls.cert_pem, &tls.key_pem) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(certs(c)?, key(k)?)
            .map_err(|e| tls_err("client certificate and key", c, e))?,
        _ => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(tls.server_name.clone())
        .map_err(|e| Error::Tls(format!("server name {:?}: {e}", tls.server_name)))?;
    Ok((TlsConnector::from(Arc::new(cfg)), name))
}

//! A throwaway CA for `bench fanout --tls`: a server certificate for the fan-out server and one
//! client certificate every simulated agent presents (mutual TLS, as Typha deployments use).

use std::path::PathBuf;

use furynet_fanout::{ClientTls, Tls};

/// The name in the server certificate (the fan-out client's default server name).
const SERVER_NAME: &str = "furynet-fanout";
const CLIENT_NAME: &str = "bench-agent";

pub struct Pki {
    dir: tempfile::TempDir,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("bench TLS certificates: {e}")
}

impl Pki {
    /// Writes ca.pem, server.{pem,key} and client.{pem,key} into a temporary directory.
    pub fn new() -> Result<Pki, String> {
        let dir = tempfile::tempdir().map_err(err)?;
        let ca_key = rcgen::KeyPair::generate().map_err(err)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = params.self_signed(&ca_key).map_err(err)?;
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).map_err(err)?;
        let ca = rcgen::Issuer::new(params, ca_key);
        for (file, name) in [("server", SERVER_NAME), ("client", CLIENT_NAME)] {
            let key = rcgen::KeyPair::generate().map_err(err)?;
            let cert = rcgen::CertificateParams::new(vec![name.to_string()])
                .map_err(err)?
                .signed_by(&key, &ca)
                .map_err(err)?;
            std::fs::write(dir.path().join(format!("{file}.pem")), cert.pem()).map_err(err)?;
            std::fs::write(dir.path().join(format!("{file}.key")), key.serialize_pem())
                .map_err(err)?;
        }
        Ok(Pki { dir })
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `furynet fanout` arguments: TLS, client certificates from this CA, the client's name.
    pub fn server_args(&self) -> Vec<String> {
        let p = |f: &str| self.path(f).display().to_string();
        vec![
            "--tls-cert".into(),
            p("server.pem"),
            "--tls-key".into(),
            p("server.key"),
            "--tls-client-ca".into(),
            p("ca.pem"),
            "--tls-client-cn".into(),
            CLIENT_NAME.into(),
        ]
    }

    /// The simulated agents' connector (built once, shared by all of them).
    pub fn connector(&self) -> Result<Tls, String> {
        furynet_fanout::tls::connector(&ClientTls {
            ca_pem: self.path("ca.pem"),
            cert_pem: Some(self.path("client.pem")),
            key_pem: Some(self.path("client.key")),
            server_name: SERVER_NAME.into(),
        })
        .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_make_a_working_server_and_client_configuration() {
        let pki = Pki::new().unwrap();
        let args = pki.server_args();
        let server = furynet_fanout::ServerTls {
            cert_pem: PathBuf::from(&args[1]),
            key_pem: PathBuf::from(&args[3]),
            client_ca_pem: Some(PathBuf::from(&args[5])),
            allowed_client_cns: vec![args[7].clone()],
        };
        furynet_fanout::tls::acceptor(&server).unwrap();
        let (_, name) = pki.connector().unwrap();
        assert_eq!(name.to_str(), SERVER_NAME);
    }
}

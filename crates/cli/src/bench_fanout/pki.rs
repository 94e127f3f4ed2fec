//! A throwaway CA for `bench fanout --tls`: a server certificate for the fan-out server and one
//! client certificate every simulated agent presents (mutual TLS, as Typha deployments use).

use std::path::PathBuf;

use furynet_fanout::{ClientTls, ServerTls, Tls};

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

    /// The server side: its certificate, client certificates from this CA, the client's name.
    pub fn server_tls(&self) -> ServerTls {
        ServerTls {
            cert_pem: self.path("server.pem"),
            key_pem: self.path("server.key"),
            client_ca_pem: Some(self.path("ca.pem")),
            allowed_client_cns: vec![CLIENT_NAME.into()],
        }
    }

    /// [`Pki::server_tls`] as `furynet fanout` arguments.
    pub fn server_args(&self) -> Vec<String> {
        let t = self.server_tls();
        let mut args = vec![
            "--tls-cert".into(),
            t.cert_pem.display().to_string(),
            "--tls-key".into(),
            t.key_pem.display().to_string(),
        ];
        if let Some(ca) = &t.client_ca_pem {
            args.extend(["--tls-client-ca".into(), ca.display().to_string()]);
        }
        for cn in t.allowed_client_cns {
            args.extend(["--tls-client-cn".into(), cn]);
        }
        args
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
        furynet_fanout::tls::acceptor(&pki.server_tls()).unwrap();
        let args = pki.server_args();
        assert!(args.contains(&"--tls-client-ca".to_string()), "{args:?}");
        assert!(args.contains(&CLIENT_NAME.to_string()), "{args:?}");
        let (_, name) = pki.connector().unwrap();
        assert_eq!(name.to_str(), SERVER_NAME);
    }
}

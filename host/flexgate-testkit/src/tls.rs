//! A throwaway CA and a `localhost` / `127.0.0.1` server certificate signed by it, written to files
//! for the gateway's `tls: {cert, key}`.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;

/// Generated certificates; the files live as long as this value.
#[derive(Debug)]
pub struct TestCerts {
    dir: tempfile::TempDir,
    /// PEM: the server certificate followed by the CA certificate.
    pub cert_path: PathBuf,
    /// PEM: the server's PKCS#8 private key.
    pub key_path: PathBuf,
    /// PEM of the CA certificate alone.
    pub ca_path: PathBuf,
    /// The CA certificate to trust.
    pub ca_der: CertificateDer<'static>,
}

impl TestCerts {
    /// Generates a CA and a server certificate for `localhost` and `127.0.0.1`.
    pub fn generate() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "flexgate test CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca cert");

        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf cert");

        let dir = tempfile::tempdir().expect("tempdir");
        let cert_path = dir.path().join("server.crt");
        let key_path = dir.path().join("server.key");
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca.pem())).expect("write cert");
        std::fs::write(&key_path, leaf_key.serialize_pem()).expect("write key");
        std::fs::write(&ca_path, ca.pem()).expect("write ca");
        Self {
            ca_der: ca.der().clone(),
            dir,
            cert_path,
            key_path,
            ca_path,
        }
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The `tls:` section for a gateway config.
    pub fn yaml(&self) -> String {
        format!(
            "tls:\n  cert: \"{}\"\n  key: \"{}\"\n",
            self.cert_path.display(),
            self.key_path.display()
        )
    }

    /// A rustls client config that trusts only this CA and offers `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A rustls server config with this certificate (for testing the kit itself and TLS upstreams).
    pub fn server_config(&self, alpn: &[&[u8]]) -> rustls::ServerConfig {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert_path)
            .expect("cert file")
            .collect::<Result<_, _>>()
            .expect("certs");
        let key = PrivateKeyDer::from_pem_file(&self.key_path).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server cert");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

//! TLS to a server whose certificate is pinned by the SHA-256 of its DER
//! (self-signed certificates of PVE nodes and audit witnesses): exactly
//! that certificate is accepted, handshake signatures are still verified.

use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Accepts exactly one server certificate, by the SHA-256 of its DER;
/// handshake signatures are still verified. Never "accept any certificate".
#[derive(Debug)]
pub struct CertPin {
    expected: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// Who the server is, for the error ("the PVE server").
    server: String,
    /// The state member that pins it.
    pin: String,
    /// What to do when the certificate differs.
    hint: String,
}

impl CertPin {
    pub fn new(expected: &str, server: &str, pin: &str, hint: &str) -> Self {
        CertPin {
            expected: expected.to_ascii_lowercase(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            server: server.to_string(),
            pin: pin.to_string(),
            hint: hint.to_string(),
        }
    }

    /// A rustls client configuration that trusts only the pinned certificate.
    pub fn client_config(self: &Arc<Self>) -> Result<rustls::ClientConfig, rustls::Error> {
        Ok(
            rustls::ClientConfig::builder_with_provider(self.provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(self.clone())
                .with_no_client_auth(),
        )
    }
}

impl rustls::client::danger::ServerCertVerifier for CertPin {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let actual = hex::encode(Sha256::digest(end_entity.as_ref()));
        if actual == self.expected {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        Err(rustls::Error::General(format!(
            "{}'s certificate has SHA-256 {actual}, but {} pins {}: \
             the certificate changed or someone is in between; {}",
            self.server, self.pin, self.expected, self.hint
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

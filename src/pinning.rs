//! Certificates for peering by invitation: the fingerprint an invitation
//! carries, the pinned handshake that checks it, and the CA certificate a
//! peer record keeps afterwards.
//!
//! An invitation pins the inviting server's TLS certificate by the SHA-256
//! of its DER, as kubeadm's join token pins its cluster's CA by a hash.
//! The joining registry opens one TLS connection whose verifier accepts
//! that certificate and nothing else ([`pinned_chain`]), and so learns,
//! from the server itself, the chain it presents. The peer record then
//! keeps the chain's trust anchor ([`Chain::anchor_for`]): the certificate
//! itself when it is self-signed, else the self-signed CA certificate the
//! chain ends with. Every later call verifies the peer the usual way
//! against it (the chain, the dates, the URL's host name), and keeps
//! working when the peer renews its certificate under the same CA.
//!
//! A chain that reaches no self-signed certificate (a server whose
//! `--tls-cert` file holds its own certificate but not its CA's) names no
//! anchor a peer could keep: [`Chain::anchor_for`] says so, and a server
//! checks its own chain that way before it invites or joins, so the error
//! comes there, naming the fix, rather than at a peer's first refresh.
//!
//! rustls's own verifier ([`WebPkiServerVerifier`]) does every check but
//! the pin, which is the one custom verifier here (`Pin`): it records
//! the chain and accepts only the pinned certificate; the handshake's
//! signatures are still checked, so only a server holding that
//! certificate's key completes it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use webpki::EndEntityCert;

use crate::error::Error;

/// SHA-256 of a certificate's DER.
pub type Fingerprint = [u8; 32];

/// The SHA-256 of `cert`'s DER.
pub fn fingerprint(cert: &CertificateDer<'_>) -> Fingerprint {
    Sha256::digest(cert.as_ref()).into()
}

/// Why a peer's certificate cannot be trusted, or not checked.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// No TLS handshake with the server completed.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server presented another certificate than the pinned one.
    #[error(
        "the TLS certificate {url} presents does not match the invitation: its SHA-256 is \
         {presented}, the invitation's {expected}"
    )]
    Mismatch {
        /// The server's URL.
        url: String,
        /// Hex SHA-256 of the certificate it presented.
        presented: String,
        /// Hex SHA-256 the invitation pins.
        expected: String,
    },
    /// The chain names no anchor a peer could verify it with, or does not
    /// verify for the URL's host.
    #[error("{0}")]
    Untrusted(String),
}

impl From<PinError> for Error {
    fn from(e: PinError) -> Error {
        match e {
            PinError::Unreachable { .. } => Error::Unavailable(e.to_string()),
            PinError::Mismatch { .. } | PinError::Untrusted(_) => {
                Error::FailedPrecondition(e.to_string())
            }
        }
    }
}

/// A TLS certificate chain as a server presents it: its own certificate
/// first, then the certificates that issued it, if any.
#[derive(Debug, Clone)]
pub struct Chain(Vec<CertificateDer<'static>>);

impl Chain {
    /// The chain in the PEM file `path` (a server's `--tls-cert`).
    pub fn load(path: &Path) -> Result<Chain, Error> {
        let unreadable = |e: &dyn std::fmt::Display| {
            Error::Unavailable(format!(
                "reading the certificates of {}: {e}",
                path.display()
            ))
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| unreadable(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unreadable(&e))?;
        if certs.is_empty() {
            return Err(unreadable(&"it holds no PEM certificate"));
        }
        Ok(Chain(certs))
    }

    /// The server's own certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.0[0]
    }

    /// The SHA-256 of the server's own certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint(self.leaf())
    }

    /// The PEM certificate a peer reaching this chain's server at `url`
    /// keeps to verify it: the trust anchor the chain ends with, checked
    /// to verify the chain for the URL's host now. `whose` names the chain
    /// in errors ("the certificate of https://...").
    pub fn anchor_for(&self, url: &str, whose: &str) -> Result<String, PinError> {
        let leaf = self.leaf();
        let last = &self.0[self.0.len() - 1];
        let anchor = if self_signed(leaf) {
            leaf
        } else if self_signed(last) {
            last
        } else {
            return Err(PinError::Untrusted(format!(
                "{whose} is issued by a CA whose certificate the server does not send, so a \
                 peer cannot learn it: append the CA certificate to the server's --tls-cert \
                 file, or peer by hand (`peer add --peer-cacert`)"
            )));
        };
        let (host, _) = host_port(url).map_err(PinError::Untrusted)?;
        self.verify(anchor, &host).map_err(|reason| {
            PinError::Untrusted(format!(
                "{whose} does not verify for {url} against its own CA: {reason}"
            ))
        })?;
        Ok(pem(anchor))
    }

    /// Verifies the chain for `host` with `anchor` as the one trust
    /// anchor, as a TLS client would.
    fn verify(&self, anchor: &CertificateDer<'static>, host: &str) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone()).map_err(|e| e.to_string())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        verifier
            .verify_server_cert(&self.0[0], &self.0[1..], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Whether `cert` names itself as its issuer.
fn self_signed(cert: &CertificateDer<'_>) -> bool {
    EndEntityCert::try_from(cert).is_ok_and(|c| c.subject() == c.issuer())
}

/// `cert` as a PEM block.
fn pem(cert: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The host (without IPv6 brackets) and port of an `https://` URL.
fn host_port(url: &str) -> Result<(String, u16), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url} is not a URL: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("{url} names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

/// The crypto provider of every TLS client of fedreg (tonic's too).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// The chain the server at the `https://` `url` presents, provided its
/// certificate is the one `pin` names and the server completes a TLS
/// handshake with it (proving it holds its key), within `timeout`.
pub async fn pinned_chain(
    url: &str,
    pin: &Fingerprint,
    timeout: Duration,
) -> Result<Chain, PinError> {
    let unreachable = |reason: String| PinError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let (host, port) = host_port(url).map_err(unreachable)?;
    let name = ServerName::try_from(host.clone()).map_err(|e| unreachable(e.to_string()))?;
    let recorder = Arc::new(Pin::new(*pin));
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| unreachable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    };
    let completed = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no TLS handshake within {} s",
            timeout.as_secs_f64()
        )),
    };
    match (recorder.presented(), completed) {
        (Some(chain), _) if chain.fingerprint() != *pin => Err(PinError::Mismatch {
            url: url.to_owned(),
            presented: hex::encode(chain.fingerprint()),
            expected: hex::encode(pin),
        }),
        (Some(chain), Ok(())) => Ok(chain),
        (_, Err(reason)) => Err(unreachable(reason)),
        (None, Ok(())) => Err(unreachable("the server presented no certificate".into())),
    }
}

/// A verifier that accepts one certificate, named by its fingerprint, and
/// records the chain the server presented.
#[derive(Debug)]
struct Pin {
    pin: Fingerprint,
    presented: Mutex<Option<Chain>>,
    algorithms: crypto::WebPkiSupportedAlgorithms,
}

impl Pin {
    fn new(pin: Fingerprint) -> Pin {
        Pin {
            pin,
            presented: Mutex::new(None),
            algorithms: provider().signature_verification_algorithms,
        }
    }

    /// The chain the server presented, if it presented one.
    fn presented(&self) -> Option<Chain> {
        self.presented
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ServerCertVerifier for Pin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        *self.presented.lock().unwrap_or_else(|e| e.into_inner()) = Some(Chain(chain));
        if fingerprint(end_entity) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports() {
        assert_eq!(
            host_port("https://localhost:8443").unwrap(),
            ("localhost".into(), 8443)
        );
        assert_eq!(host_port("https://[::1]:1").unwrap(), ("::1".into(), 1));
        assert_eq!(
            host_port("https://plc.example.org").unwrap(),
            ("plc.example.org".into(), 443)
        );
        assert!(host_port("not a url").is_err());
    }

    #[test]
    fn pem_blocks_read_back() {
        let der = CertificateDer::from((0u8..200).collect::<Vec<u8>>());
        let text = pem(&der);
        assert!(text.lines().all(|l| l.len() <= 64));
        let back = CertificateDer::from_pem_slice(text.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_ref());
    }
}

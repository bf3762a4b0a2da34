//! Test certificates, made with rcgen when the test runs: certificate
//! authorities, and server and client certificates signed by them, written
//! as PEM files into a temporary directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, date_time_ymd,
};

/// A certificate authority whose certificate is in a PEM file.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate's PEM file.
    pub pem: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    /// The certificate's PEM file.
    pub cert: PathBuf,
    /// The private key's PEM file.
    pub key: PathBuf,
}

impl Issued {
    /// (certificate, key), as the server configuration takes them.
    pub fn pair(&self) -> (PathBuf, PathBuf) {
        (self.cert.clone(), self.key.clone())
    }

    /// The certificate followed by `ca`'s, as a server that sends its
    /// whole chain holds it, written beside it (`<file>-chain.pem`), with
    /// the same key.
    pub fn with_chain(&self, ca: &Ca) -> Issued {
        let mut chain = std::fs::read(&self.cert).expect("read certificate");
        chain.extend(std::fs::read(&ca.pem).expect("read CA certificate"));
        let cert = self.cert.with_extension("chain.pem");
        std::fs::write(&cert, chain).expect("write chain");
        Issued {
            cert,
            key: self.key.clone(),
        }
    }
}

/// A self-signed server certificate with subject CN `common_name` and the
/// alternative names `sans`, written to `dir/<file>.pem` and
/// `dir/<file>.key`.
pub fn self_signed(dir: &Path, file: &str, common_name: &str, sans: &[&str]) -> Issued {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("alternative names");
    params.distinguished_name = distinguished_name(common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-sign");
    let issued = Issued {
        cert: dir.join(format!("{file}.pem")),
        key: dir.join(format!("{file}.key")),
    };
    std::fs::write(&issued.cert, cert.pem()).expect("write certificate");
    std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
    issued
}

/// What a certificate is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server.
    Server,
    /// A TLS client.
    Client,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/<name>.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, issuer.pem()).expect("write CA certificate");
        Ca { issuer, pem }
    }

    /// A certificate for `usage` with subject CN `common_name`, which is
    /// also its one alternative name unless [`Cert::sans`] says otherwise;
    /// [`Cert::issue`] signs and writes it.
    pub fn cert(&self, usage: Usage, common_name: &str) -> Cert<'_> {
        Cert {
            ca: self,
            usage,
            common_name: common_name.to_owned(),
            sans: vec![common_name.to_owned()],
            expired: false,
        }
    }
}

/// A certificate to be signed by a [`Ca`], made by [`Ca::cert`].
pub struct Cert<'a> {
    ca: &'a Ca,
    usage: Usage,
    common_name: String,
    sans: Vec<String>,
    expired: bool,
}

impl Cert<'_> {
    /// Its alternative names (DNS names or IP addresses).
    pub fn sans(mut self, sans: &[&str]) -> Self {
        self.sans = sans.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Makes it one whose validity ended in 2020.
    pub fn expired(mut self) -> Self {
        self.expired = true;
        self
    }

    /// Signs it and writes it to `dir/<file>.pem` and `dir/<file>.key`.
    pub fn issue(self, dir: &Path, file: &str) -> Issued {
        let mut params = CertificateParams::new(self.sans).expect("alternative names");
        params.distinguished_name = distinguished_name(&self.common_name);
        params.extended_key_usages = vec![match self.usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if self.expired {
            params.not_before = date_time_ymd(2019, 1, 1);
            params.not_after = date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca.issuer).expect("sign");
        let issued = Issued {
            cert: dir.join(format!("{file}.pem")),
            key: dir.join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

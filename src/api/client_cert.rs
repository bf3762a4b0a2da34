//! The identities a TLS client certificate names, and whether one of them is
//! the identity a peer record requires.
//!
//! The TLS layer has already verified the certificate (its chain to the
//! `--client-ca`, its validity dates) before any call arrives; this module
//! only reads names from it: the subject's common name (CN) and the DNS,
//! IP and URI subject alternative names. The SANs are read by
//! `rustls-webpki` (already what verifies the chain); the CN by the small
//! DER reader below, as webpki gives only the subject's raw bytes. Names
//! compare exactly (DNS names without regard to case): a wildcard in a
//! certificate matches only the same wildcard.

use std::net::IpAddr;

use rustls_pki_types::{CertificateDer, ServerName};
use webpki::EndEntityCert;

/// DER tag of a SEQUENCE.
const SEQUENCE: u8 = 0x30;
/// DER tag of a SET.
const SET: u8 = 0x31;
/// DER tag of an OBJECT IDENTIFIER.
const OID: u8 = 0x06;
/// The contents of the OID of the commonName attribute (2.5.4.3).
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// Whether the end-entity certificate `cert` names `identity` as its
/// subject CN or as one of its DNS, IP or URI alternative names.
pub fn names(cert: &CertificateDer<'_>, identity: &str) -> bool {
    let Ok(parsed) = EndEntityCert::try_from(cert) else {
        return false;
    };
    if let Ok(ip) = identity.parse::<IpAddr>()
        && parsed
            .verify_is_valid_for_subject_name(&ServerName::from(ip))
            .is_ok()
    {
        return true;
    }
    common_name(parsed.subject()).as_deref() == Some(identity)
        || parsed
            .valid_dns_names()
            .any(|name| name.eq_ignore_ascii_case(identity))
        || parsed.valid_uri_names().any(|uri| uri == identity)
}

/// The names of `cert` for error messages: `CN=...`, `DNS:...`, `URI:...`
/// (IP names are not listed).
pub fn describe(cert: &CertificateDer<'_>) -> String {
    let Ok(parsed) = EndEntityCert::try_from(cert) else {
        return "an unreadable certificate".into();
    };
    let mut names: Vec<String> = common_name(parsed.subject())
        .map(|cn| format!("CN={cn}"))
        .into_iter()
        .collect();
    names.extend(parsed.valid_dns_names().map(|n| format!("DNS:{n}")));
    names.extend(parsed.valid_uri_names().map(|n| format!("URI:{n}")));
    if names.is_empty() {
        "no CN, DNS or URI name".into()
    } else {
        names.join(", ")
    }
}

/// The first commonName of a DER-encoded X.509 Name given without its outer
/// SEQUENCE header (a series of RDN SETs of attribute SEQUENCEs).
fn common_name(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let (tag, mut rdn, rest) = tlv(name)?;
        name = rest;
        if tag != SET {
            return None;
        }
        while !rdn.is_empty() {
            let (tag, attribute, rest) = tlv(rdn)?;
            rdn = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = tlv(attribute)?;
            if tag == OID && oid == COMMON_NAME {
                // UTF8String, PrintableString, IA5String...: text either way.
                let (_, text, _) = tlv(value)?;
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
        }
    }
    None
}

/// Splits one DER element off `input`: (tag, contents, what follows).
/// Only the short tag form and lengths up to 4 bytes, which certificate
/// names never exceed.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    (rest.len() >= len).then(|| {
        let (contents, rest) = rest.split_at(len);
        (tag, contents, rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SET { SEQUENCE { OID, value } }` for one attribute.
    fn rdn(oid: &[u8], value: &[u8]) -> Vec<u8> {
        let mut attribute = vec![OID, oid.len() as u8];
        attribute.extend_from_slice(oid);
        attribute.extend_from_slice(&[0x0c, value.len() as u8]);
        attribute.extend_from_slice(value);
        let mut sequence = vec![SEQUENCE, attribute.len() as u8];
        sequence.extend(attribute);
        let mut set = vec![SET, sequence.len() as u8];
        set.extend(sequence);
        set
    }

    #[test]
    fn common_names() {
        let organization = [0x55, 0x04, 0x0a];
        let mut name = rdn(&organization, b"PlanetLab");
        name.extend(rdn(COMMON_NAME, b"plc2.example.org"));
        assert_eq!(common_name(&name).as_deref(), Some("plc2.example.org"));
        assert_eq!(common_name(&rdn(&organization, b"PlanetLab")), None);
        // Truncated input is no name, not a panic.
        assert_eq!(common_name(&name[..name.len() - 3]), None);
        assert_eq!(tlv(&[0x04, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(
            tlv(&[0x04, 0x81, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
    }
}

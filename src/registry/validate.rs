//! Validation rules for the fields of registry objects.
//!
//! Pure functions: each takes a raw value, returns it normalised (trimmed,
//! lowercased where the field is case-insensitive) or an
//! [`Error::InvalidArgument`] naming the field and the value. The same rules
//! apply to objects received from peers.

use std::collections::HashSet;

use crate::error::{Error, Result};

/// A site's login_base: lowercase letters, digits and dots, 1 to 32 long.
pub fn login_base(value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() || v.len() > 32 {
        return Err(Error::invalid(
            "login_base",
            value,
            "must be 1 to 32 characters",
        ));
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
    {
        return Err(Error::invalid(
            "login_base",
            value,
            "only lowercase letters, digits and dots are allowed",
        ));
    }
    Ok(v.to_owned())
}

/// A required free-text field: not blank, at most `max` characters.
pub fn required_text(field: &'static str, value: &str, max: usize) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::invalid(field, value, "must not be empty"));
    }
    optional_text(field, v, max)
}

/// An optional free-text field: at most `max` characters, no NUL
/// character (PostgreSQL cannot store one, so neither backend takes it).
pub fn optional_text(field: &'static str, value: &str, max: usize) -> Result<String> {
    if value.chars().count() > max {
        return Err(Error::invalid(
            field,
            value,
            format!("must be at most {max} characters"),
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid(
            field,
            value,
            "must not contain NUL characters",
        ));
    }
    Ok(value.trim().to_owned())
}

/// Longest token name.
pub const MAX_TOKEN_NAME: usize = 128;

/// A token's name: free text of at most [`MAX_TOKEN_NAME`] characters.
pub fn token_name(value: &str) -> Result<String> {
    optional_text("name", value, MAX_TOKEN_NAME)
}

/// An id an object has at the registry that sent it: positive.
pub fn peer_object_id(field: &'static str, value: i64) -> Result<i64> {
    if value <= 0 {
        return Err(Error::invalid(field, value, "must be positive"));
    }
    Ok(value)
}

/// A latitude in degrees.
pub fn latitude(value: f64) -> Result<f64> {
    if !(-90.0..=90.0).contains(&value) {
        return Err(Error::invalid(
            "latitude",
            value,
            "must be between -90 and 90",
        ));
    }
    Ok(value)
}

/// A longitude in degrees.
pub fn longitude(value: f64) -> Result<f64> {
    if !(-180.0..=180.0).contains(&value) {
        return Err(Error::invalid(
            "longitude",
            value,
            "must be between -180 and 180",
        ));
    }
    Ok(value)
}

/// A count that may not be negative.
pub fn non_negative(field: &'static str, value: i32) -> Result<i32> {
    if value < 0 {
        return Err(Error::invalid(field, value, "must not be negative"));
    }
    Ok(value)
}

/// An e-mail address: `local@domain`, the domain a valid hostname; lowercased.
pub fn email(value: &str) -> Result<String> {
    let v = value.trim().to_ascii_lowercase();
    let bad = |reason: &str| Error::invalid("email", value, reason);
    let (local, domain) = v
        .split_once('@')
        .ok_or_else(|| bad("must be local@domain"))?;
    if local.is_empty() || local.len() > 64 {
        return Err(bad("the part before @ must be 1 to 64 characters"));
    }
    let local_ok = local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(bad(
            "the part before @ has characters not allowed in an address",
        ));
    }
    if !is_hostname(domain) || !domain.contains('.') {
        return Err(bad("the domain must be a valid DNS name with a dot"));
    }
    Ok(v)
}

/// A node hostname: a fully qualified DNS name; lowercased.
pub fn hostname(value: &str) -> Result<String> {
    let v = value.trim().to_ascii_lowercase();
    if !is_hostname(&v) || !v.contains('.') {
        return Err(Error::invalid(
            "hostname",
            value,
            "must be a fully qualified DNS name (labels of letters, digits and inner hyphens, separated by dots)",
        ));
    }
    Ok(v)
}

/// Key types this registry knows, mirroring the `key_types` table.
pub const KEY_TYPES: &[&str] = &["ssh"];

/// Public-key algorithms accepted in an OpenSSH key line.
pub const SSH_KEY_ALGORITHMS: &[&str] = &[
    "ssh-rsa",
    "ssh-ed25519",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Longest key line accepted (an RSA key of 16384 bits is about 2,800 characters).
const MAX_KEY_LEN: usize = 16 * 1024;

/// A public key of type `key_type`, given in the field `field`.
///
/// `key_type` must be one of [`KEY_TYPES`] (otherwise the error names
/// `key_type`). For `ssh` the key must be an OpenSSH v2 public key line,
/// `<algorithm> <base64> [comment]`: the algorithm one of
/// [`SSH_KEY_ALGORITHMS`], the base64 decoding to a key blob whose first
/// length-prefixed string is that algorithm. Returns the line trimmed, with
/// the algorithm and the base64 separated by single spaces.
pub fn ssh_key(field: &'static str, key_type: &str, key: &str) -> Result<String> {
    if !KEY_TYPES.contains(&key_type) {
        return Err(Error::invalid(
            "key_type",
            key_type,
            format!("unknown key type; known: {}", KEY_TYPES.join(", ")),
        ));
    }
    let bad = |reason: &str| Error::invalid(field, key, reason);
    if key.len() > MAX_KEY_LEN {
        return Err(bad(&format!("must be at most {MAX_KEY_LEN} characters")));
    }
    let line = key.trim();
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(bad("must be a single line of printable characters"));
    }
    let (algo, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
    let rest = rest.trim_start();
    let (blob64, comment) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    let comment = comment.trim();
    if algo.is_empty() || blob64.is_empty() {
        return Err(bad(
            "must be an OpenSSH public key line: <algorithm> <base64> [comment]",
        ));
    }
    if !SSH_KEY_ALGORITHMS.contains(&algo) {
        return Err(bad(&format!(
            "unknown algorithm {algo:?}; known: {}",
            SSH_KEY_ALGORITHMS.join(", ")
        )));
    }
    use base64::Engine as _;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(blob64)
        .map_err(|_| bad("the key data is not valid base64"))?;
    match ssh_string(&blob) {
        Some((name, rest)) if name == algo.as_bytes() && !rest.is_empty() => {}
        Some((name, _)) if name != algo.as_bytes() => {
            return Err(bad(&format!(
                "the key data is for algorithm {:?}, not {algo:?}",
                String::from_utf8_lossy(name)
            )));
        }
        _ => return Err(bad("the key data is not an OpenSSH public key blob")),
    }
    Ok(if comment.is_empty() {
        format!("{algo} {blob64}")
    } else {
        format!("{algo} {blob64} {comment}")
    })
}

/// Splits an SSH wire-format string (a big-endian u32 length, then the
/// bytes) off the front of `data`.
fn ssh_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let len_bytes: [u8; 4] = data.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).ok()?;
    let end = 4usize.checked_add(len)?;
    Some((data.get(4..end)?, data.get(end..)?))
}

/// Roles a person can hold, mirroring the `roles` table.
pub const ROLES: &[(i32, &str)] = &[(10, "admin"), (20, "pi"), (30, "user"), (40, "tech")];

/// A role id: one of [`ROLES`].
pub fn role_id(value: i32) -> Result<i32> {
    if ROLES.iter().any(|&(id, _)| id == value) {
        return Ok(value);
    }
    let known: Vec<String> = ROLES
        .iter()
        .map(|(id, name)| format!("{id} {name}"))
        .collect();
    Err(Error::invalid(
        "role_id",
        value,
        format!("unknown role; known: {}", known.join(", ")),
    ))
}

/// Longest password accepted, in characters (PLCAPI's limit).
const MAX_PASSWORD_LEN: usize = 254;

/// A password: empty for none, at most 254 characters. Returned as given,
/// not trimmed (spaces may be part of it); errors never echo it.
pub fn password(value: &str) -> Result<&str> {
    let len = value.chars().count();
    if len > MAX_PASSWORD_LEN {
        return Err(Error::invalid(
            "password",
            format!("<{len} characters>"),
            format!("must be at most {MAX_PASSWORD_LEN} characters"),
        ));
    }
    Ok(value)
}

/// A value of an enumeration table (node types, boot states, slice
/// instantiations...): `known` is the table's content, read by the caller.
pub fn one_of(field: &'static str, value: &str, known: &HashSet<String>) -> Result<String> {
    let v = value.trim();
    if known.contains(v) {
        return Ok(v.to_owned());
    }
    let mut values: Vec<&str> = known.iter().map(String::as_str).collect();
    values.sort_unstable();
    Err(Error::invalid(
        field,
        value,
        format!("must be one of {}", values.join(", ")),
    ))
}

/// A slice name `<login_base>_<rest>`: the login_base of the owning site,
/// then a rest of lowercase letters, digits, `_` and `.`. Returns the name
/// and its login_base.
pub fn slice_name(value: &str) -> Result<(String, String)> {
    let v = value.trim();
    let bad = |reason: &str| Error::invalid("name", value, reason);
    if v.len() > 64 {
        return Err(bad("must be at most 64 characters"));
    }
    let (base, rest) = v
        .split_once('_')
        .ok_or_else(|| bad("must be <login_base>_<name>"))?;
    if base.is_empty() || rest.is_empty() {
        return Err(bad("must be <login_base>_<name>, both parts non-empty"));
    }
    if login_base(base).is_err() {
        return Err(bad(
            "the part before the first _ must be a login_base (lowercase letters, digits and dots)",
        ));
    }
    if !rest
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    {
        return Err(bad(
            "the part after the first _ may hold only lowercase letters, digits, _ and .",
        ));
    }
    Ok((v.to_owned(), base.to_owned()))
}

/// A time (Unix seconds) that must be later than `now`.
pub fn future_time(field: &'static str, secs: i64, now: i64) -> Result<i64> {
    if secs <= now {
        return Err(Error::invalid(field, secs, "must be in the future"));
    }
    Ok(secs)
}

/// A non-empty list of ids, sorted and without duplicates.
pub fn id_list(field: &'static str, ids: &[i64]) -> Result<Vec<i64>> {
    if ids.is_empty() {
        return Err(Error::invalid(field, "[]", "must name at least one id"));
    }
    let mut out = ids.to_vec();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

// Peer records.

/// A peer name: letters, digits, `-`, `_` and `.`, 1 to 64 long.
pub fn peername(value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() || v.len() > 64 {
        return Err(Error::invalid(
            "peername",
            value,
            "must be 1 to 64 characters",
        ));
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::invalid(
            "peername",
            value,
            "only letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    Ok(v.to_owned())
}

/// A peer's short name: free text of at most 32 characters.
pub fn shortname(value: &str) -> Result<String> {
    optional_text("shortname", value, 32)
}

/// The root of a peer's human-readable names: free text of at most 64
/// characters.
pub fn hrn_root(value: &str) -> Result<String> {
    optional_text("hrn_root", value, 64)
}

/// A peer URL: `http://host:port` or `https://host:port`.
pub fn peer_url(value: &str) -> Result<String> {
    url("peer_url", value)
}

/// A registry's gRPC URL in field `field`: `http://host:port` or
/// `https://host:port`, without a trailing slash.
pub fn url(field: &'static str, value: &str) -> Result<String> {
    let v = value.trim();
    let uri: http::Uri = v
        .parse()
        .map_err(|e| Error::invalid(field, value, format!("not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(v.trim_end_matches('/').to_owned()),
        _ => Err(Error::invalid(
            field,
            value,
            "must be http://host:port or https://host:port",
        )),
    }
}

/// An optional PEM CA certificate.
pub fn cacert(value: &str) -> Result<Option<String>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > MAX_CACERT {
        return Err(Error::invalid(
            "cacert",
            v,
            format!("must be at most {MAX_CACERT} bytes"),
        ));
    }
    if !v.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::invalid(
            "cacert",
            v.chars().take(40).collect::<String>(),
            "must be a PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(Some(v.to_owned()))
}

/// Why a peer URL deserves a warning: plain `http://` to a host that is not
/// this machine sends the outbound token and the peer's data in clear text.
pub fn plaintext_warning(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| {
        format!(
            "peer_url {url} is plain http:// to another host: the outbound token and the \
             peer's data cross the network unencrypted; use https://"
        )
    })
}

/// An optional client certificate identity (a subject CN or a DNS, IP or
/// URI name): empty means none.
pub fn client_identity(value: &str) -> Result<Option<String>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > 255 || v.chars().any(char::is_control) {
        return Err(Error::invalid(
            "client_identity",
            v.chars().take(40).collect::<String>(),
            "must be at most 255 characters, without control characters",
        ));
    }
    Ok(Some(v.to_owned()))
}

/// Longest outbound token accepted.
pub const MAX_OUTBOUND_TOKEN: usize = 1024;
/// Longest CA certificate accepted.
pub const MAX_CACERT: usize = 64 * 1024;

/// An optional outbound token: empty means none; at most
/// [`MAX_OUTBOUND_TOKEN`] printable characters (it goes in a header).
pub fn outbound_token(value: &str) -> Result<Option<String>> {
    token("outbound_token", value)
}

/// An optional token for calling a peer, in field `field`, as
/// [`outbound_token`] takes it; the error never shows it.
pub fn token(field: &'static str, value: &str) -> Result<Option<String>> {
    let v = value.trim();
    if v.len() > MAX_OUTBOUND_TOKEN || v.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(Error::invalid(
            field,
            "<secret>",
            format!("must be at most {MAX_OUTBOUND_TOKEN} printable characters without spaces"),
        ));
    }
    Ok((!v.is_empty()).then(|| v.to_owned()))
}

/// Seconds between scheduled refreshes: 0 (none) or at least 10.
pub fn refresh_interval(value: i64) -> Result<i64> {
    if value == 0 || (10..=7 * 24 * 3600).contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(
            "refresh_interval_seconds",
            value,
            "must be 0 (no schedule) or between 10 and 604800",
        ))
    }
}

/// A mass-delete threshold: a fraction between 0 and 1.
pub fn max_delete_fraction(value: f64) -> Result<f64> {
    fraction("max_delete_fraction", value)
}

/// A fraction: between 0 and 1, both included.
pub fn fraction(field: &'static str, value: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(field, value, "must be between 0 and 1"))
    }
}

fn is_hostname(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_base_charset() {
        assert_eq!(login_base("inria.fr1").unwrap(), "inria.fr1");
        assert!(login_base("Inria").is_err());
        assert!(login_base("in_ria").is_err());
        assert!(login_base("").is_err());
    }

    #[test]
    fn email_syntax() {
        assert_eq!(
            email("Jane.Doe@Example.org").unwrap(),
            "jane.doe@example.org"
        );
        for bad in [
            "jane",
            "jane@",
            "@example.org",
            "jane@localhost",
            "ja..ne@x.org",
            "jane@-x.org",
        ] {
            assert!(email(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn hostname_syntax() {
        assert_eq!(hostname("Node1.Example.org").unwrap(), "node1.example.org");
        for bad in ["node1", "-a.example.org", "a_b.example.org", "a..b.org", ""] {
            assert!(hostname(bad).is_err(), "{bad} accepted");
        }
    }

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPvvqw9iINxFT3PSUP8rf7ccpPL6cmKkdqN8pHQ7ob+c jane@laptop";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDMXwBs0ZIW1Q1d4beWmcCa8WNFRQFj71ocCCukvWbN8scCRp2sVEKwH4gRmt/MSrq9PS9SH1Kxrc5tJTCtoobmyHMsuB9wG502Sh3yAmyIypEY62o8qFdnwa/XMmHKMyYn9aRGGabtkOWYZMP5oH6ZWVhs4lKEvaV8z60MbpUpWw==";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBP3qcUK5iASIHF/sZ9lBGUzwpgQkZiaz3m3OvQRfSbYVXcXnwsCw6g3gmKA9mKuwJtc2iB+yEsCN+d2avWX0ErE= ec key";

    /// The field named by an invalid-argument error.
    fn field_of(e: Error) -> &'static str {
        match e {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("not an invalid argument: {other}"),
        }
    }

    #[test]
    fn ssh_key_accepts_openssh_lines() {
        assert_eq!(ssh_key("key", "ssh", ED25519).unwrap(), ED25519);
        assert_eq!(ssh_key("key", "ssh", RSA).unwrap(), RSA);
        assert_eq!(ssh_key("key", "ssh", ECDSA).unwrap(), ECDSA);
        // Surrounding and separating whitespace is normalised, the comment kept.
        let messy = format!("  {}\t {}  \n", &ED25519[..11], &ED25519[12..]);
        assert_eq!(ssh_key("key", "ssh", &messy).unwrap(), ED25519);
    }

    #[test]
    fn ssh_key_rejects_unknown_key_type() {
        let e = ssh_key("key", "x509", ED25519).unwrap_err();
        assert!(e.to_string().contains("x509"), "{e}");
        assert_eq!(field_of(e), "key_type");
        assert_eq!(
            field_of(ssh_key("key", "", ED25519).unwrap_err()),
            "key_type"
        );
    }

    #[test]
    fn ssh_key_rejects_malformed_lines() {
        let blob = ED25519.split(' ').nth(1).unwrap();
        let cases = [
            String::new(),
            "ssh-ed25519".to_owned(),
            format!("ssh-foo {blob}"),
            format!("ssh-ed25519 {}", &blob[..blob.len() - 3]),
            "ssh-ed25519 not*base64".to_owned(),
            // Valid base64 of an ed25519 blob announced as another algorithm.
            format!("ssh-rsa {blob} x"),
            // Valid base64 that is not a key blob.
            "ssh-ed25519 aGVsbG8gd29ybGQ=".to_owned(),
            format!("ssh-ed25519 {blob} two\nlines"),
            format!("ssh-ed25519 {blob} {}", "x".repeat(MAX_KEY_LEN)),
        ];
        for bad in cases {
            let e = ssh_key("keys.key", "ssh", &bad).unwrap_err();
            assert_eq!(field_of(e), "keys.key", "{bad:?}");
        }
        let e = ssh_key("key", "ssh", &format!("ssh-rsa {blob}")).unwrap_err();
        assert!(e.to_string().contains("ssh-ed25519"), "{e}");
    }

    #[test]
    fn ssh_key_blob_must_name_its_algorithm() {
        use base64::Engine as _;
        let encode = |blob: &[u8]| base64::engine::general_purpose::STANDARD.encode(blob);
        let mut blob = Vec::new();
        blob.extend_from_slice(&11u32.to_be_bytes());
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend_from_slice(&[7u8; 32]);
        assert!(ssh_key("key", "ssh", &format!("ssh-ed25519 {}", encode(&blob))).is_ok());
        // The name alone, with no key material after it.
        assert!(
            ssh_key(
                "key",
                "ssh",
                &format!("ssh-ed25519 {}", encode(&blob[..15]))
            )
            .is_err()
        );
        // A length prefix running past the end of the blob.
        let mut short = blob.clone();
        short[3] = 200;
        assert!(ssh_key("key", "ssh", &format!("ssh-ed25519 {}", encode(&short))).is_err());
    }

    #[test]
    fn role_ids() {
        for id in [10, 20, 30, 40] {
            assert_eq!(role_id(id).unwrap(), id);
        }
        for bad in [0, 15, 50, -10] {
            let e = role_id(bad).unwrap_err();
            assert!(e.to_string().contains(&bad.to_string()), "{e}");
            assert_eq!(field_of(e), "role_id");
        }
    }

    #[test]
    fn password_length_is_bounded_and_never_echoed() {
        assert_eq!(password("").unwrap(), "");
        assert_eq!(password(" s3cret ").unwrap(), " s3cret ");
        let long = "p".repeat(255);
        let e = password(&long).unwrap_err();
        assert!(!e.to_string().contains(&long[..20]), "{e}");
        assert_eq!(field_of(e), "password");
    }

    #[test]
    fn one_of_known_values() {
        let known: HashSet<String> = ["safeboot".to_owned(), "boot".to_owned()].into();
        assert_eq!(one_of("boot_state", " boot ", &known).unwrap(), "boot");
        let err = one_of("boot_state", "dbg", &known).unwrap_err().to_string();
        assert!(err.contains("boot_state") && err.contains("dbg"), "{err}");
        assert!(err.contains("boot, safeboot"), "{err}");
        assert!(one_of("boot_state", "Boot", &known).is_err());
        assert!(one_of("boot_state", "", &known).is_err());
    }

    #[test]
    fn slice_name_syntax() {
        assert_eq!(
            slice_name("inria_my.exp_2").unwrap(),
            ("inria_my.exp_2".to_owned(), "inria".to_owned())
        );
        assert_eq!(slice_name("a.b_c").unwrap().1, "a.b");
        for bad in [
            "inria",
            "_exp",
            "inria_",
            "Inria_exp",
            "inria_Exp",
            "inria_ex-p",
            "in ria_exp",
            "",
        ] {
            let err = slice_name(bad).expect_err(bad).to_string();
            assert!(err.contains("name"), "{err}");
        }
        assert!(slice_name(&format!("inria_{}", "x".repeat(60))).is_err());
    }

    #[test]
    fn future_times() {
        assert_eq!(future_time("expires", 101, 100).unwrap(), 101);
        let err = future_time("expires", 100, 100).unwrap_err().to_string();
        assert!(err.contains("expires") && err.contains("100"), "{err}");
    }

    #[test]
    fn id_lists() {
        assert_eq!(id_list("node_ids", &[3, 1, 3]).unwrap(), [1, 3]);
        let err = id_list("node_ids", &[]).unwrap_err().to_string();
        assert!(err.contains("node_ids"), "{err}");
    }
}

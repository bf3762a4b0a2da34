//! Validation rules for the fields of registry objects.
//!
//! Pure functions: each takes a raw value, returns it normalised (trimmed,
//! lowercased where the field is case-insensitive) or an
//! [`Error::InvalidArgument`] naming the field and the value. The same rules
//! apply to objects received from peers.

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

/// An optional free-text field: at most `max` characters.
pub fn optional_text(field: &'static str, value: &str, max: usize) -> Result<String> {
    if value.chars().count() > max {
        return Err(Error::invalid(
            field,
            truncate(value, 40),
            format!("must be at most {max} characters"),
        ));
    }
    Ok(value.trim().to_owned())
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

fn truncate(value: &str, max: usize) -> String {
    if value.chars().count() <= max {
        value.to_owned()
    } else {
        format!("{}...", value.chars().take(max).collect::<String>())
    }
}

// PEERING-TEMP: replaced by the registry's own validators on merge.
/// A key line.
pub fn ssh_key(field: &'static str, _key_type: &str, key: &str) -> Result<String> {
    let v = key.trim();
    if v.split_whitespace().count() < 2 {
        return Err(Error::invalid(field, v, "not an OpenSSH public key line"));
    }
    Ok(v.to_owned())
}

/// A slice name and its login_base.
pub fn slice_name(value: &str) -> Result<(String, String)> {
    let (base, _) = value
        .split_once('_')
        .ok_or_else(|| Error::invalid("name", value, "must be <login_base>_<name>"))?;
    Ok((value.to_owned(), base.to_owned()))
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
}

//! API-server validation rules that matter for semantics: names, label keys and values, port
//! names and numbers, IP addresses and CIDRs.
//!
//! Each check returns the API server's messages (`k8s.io/apimachinery/pkg/util/validation`),
//! empty when the value is valid, so callers can attach them to a field path exactly as the API
//! server does (`metadata.labels: Invalid value: "a b": name part must consist of ...`).

use std::net::IpAddr;

use ipnet::IpNet;

/// Maximum length of a DNS-1123 label (namespace names, label name parts, ...).
pub const DNS1123_LABEL_MAX_LEN: usize = 63;
/// Maximum length of a DNS-1123 subdomain (most object names, label key prefixes).
pub const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;
/// Maximum length of a label value.
pub const LABEL_VALUE_MAX_LEN: usize = 63;
/// Maximum length of an IANA service name (named ports).
pub const PORT_NAME_MAX_LEN: usize = 15;

const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and \
     must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
     characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case \
     alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric \
     characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";

/// `validation.RegexError`: the message, examples and the regular expression used.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(e);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            is_lower_alnum(f)
                && is_lower_alnum(l)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `IsDNS1123Label`: namespace names, service port names.
pub fn dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LEN {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LEN));
    }
    if !matches_dns1123_label(value) {
        errs.push(regex_error(
            DNS1123_LABEL_MSG,
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// `IsDNS1123Subdomain`: most object names, label key prefixes.
pub fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LEN));
    }
    if !value.split('.').all(matches_dns1123_label) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// `IsDNS1035Label`: Service names.
pub fn dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LEN {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LEN));
    }
    let starts_alpha = value.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
    if !starts_alpha || !matches_dns1123_label(value) {
        errs.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `IsQualifiedName`: label keys (`[prefix/]name`).
pub fn qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. \
                 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > DNS1123_LABEL_MAX_LEN {
        errs.push(format!(
            "name part {}",
            max_len_error(DNS1123_LABEL_MAX_LEN)
        ));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`: empty, or up to 63 characters of the qualified-name charset.
pub fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LEN {
        errs.push(max_len_error(LABEL_VALUE_MAX_LEN));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `IsValidPortName`: an IANA_SVC_NAME (named container ports, named policy ports).
pub fn port_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > PORT_NAME_MAX_LEN {
        errs.push(max_len_error(PORT_NAME_MAX_LEN));
    }
    let b = value.as_bytes();
    if b.is_empty() || !b.iter().all(|&c| is_lower_alnum(c) || c == b'-') {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !b.iter().any(u8::is_ascii_lowercase) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if value.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if b.first() == Some(&b'-') || b.last() == Some(&b'-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// `IsValidPortNum`: 1..=65535.
pub fn port_number(n: i64) -> Vec<String> {
    if (1..=65535).contains(&n) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_string()]
    }
}

/// Parses an IP address as the API server does (no zones, no surrounding whitespace).
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Parses a CIDR (host bits allowed, as Go's `ParseCIDR`) and normalises it to its network.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().map(|n| n.trunc())
}

/// Whether `inner` is a strict subset of `outer`: same family, longer prefix, inside it.
/// This is the API server's rule for `ipBlock.except`.
pub fn is_strict_subset(inner: &IpNet, outer: &IpNet) -> bool {
    let same_family = matches!(
        (inner, outer),
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
    );
    same_family && inner.prefix_len() > outer.prefix_len() && outer.contains(&inner.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(dns1123_label("my-ns").is_empty());
        assert!(dns1123_label("0abc").is_empty());
        assert!(!dns1123_label("My-ns").is_empty());
        assert!(!dns1123_label("-a").is_empty());
        assert!(!dns1123_label("a-").is_empty());
        assert!(!dns1123_label("").is_empty());
        assert!(!dns1123_label("a.b").is_empty());
        assert_eq!(
            dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_string()]
        );
        assert!(dns1123_label(&"a".repeat(63)).is_empty());
    }

    #[test]
    fn dns_subdomains() {
        assert!(dns1123_subdomain("web-0.svc.local").is_empty());
        assert!(!dns1123_subdomain("web..x").is_empty());
        assert!(!dns1123_subdomain("web.-x").is_empty());
        assert!(!dns1123_subdomain("Web").is_empty());
        assert!(!dns1123_subdomain("a_b").is_empty());
        assert!(!dns1123_subdomain(&"a".repeat(254)).is_empty());
        assert!(dns1123_subdomain(&"a".repeat(253)).is_empty());
    }

    #[test]
    fn dns1035() {
        assert!(dns1035_label("web").is_empty());
        assert!(!dns1035_label("1web").is_empty());
        assert!(!dns1035_label("web.x").is_empty());
    }

    #[test]
    fn qualified_names() {
        assert!(qualified_name("app").is_empty());
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(qualified_name("My_Key.x").is_empty());
        assert_eq!(
            qualified_name("/x"),
            vec!["prefix part must be non-empty".to_string()]
        );
        assert_eq!(
            qualified_name("x/"),
            vec![
                "name part must be non-empty".to_string(),
                format!(
                    "name part {}",
                    regex_error(
                        QUALIFIED_NAME_MSG,
                        QUALIFIED_NAME_FMT,
                        &["MyName", "my.name", "123-abc"]
                    )
                )
            ]
        );
        assert!(!qualified_name("a/b/c").is_empty());
        assert!(!qualified_name("Example.com/x").is_empty());
        assert!(!qualified_name("a b").is_empty());
        assert!(!qualified_name(&"a".repeat(64)).is_empty());
        assert!(qualified_name(&format!("{}/{}", "a".repeat(253), "b".repeat(63))).is_empty());
    }

    #[test]
    fn regex_error_matches_go_wording() {
        assert_eq!(
            regex_error("m", "f", &["a", "b"]),
            "m (e.g. 'a',  or 'b', regex used for validation is 'f')"
        );
    }

    #[test]
    fn label_values() {
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_x-Y").is_empty());
        assert!(!label_value("-x").is_empty());
        assert!(!label_value("a b").is_empty());
        assert!(!label_value(&"a".repeat(64)).is_empty());
    }

    #[test]
    fn port_names() {
        assert!(port_name("http").is_empty());
        assert!(port_name("h2c-8080").is_empty());
        assert_eq!(
            port_name("80"),
            vec!["must contain at least one letter (a-z)".to_string()]
        );
        assert!(!port_name("HTTP").is_empty());
        assert!(!port_name("a--b").is_empty());
        assert!(!port_name("-ab").is_empty());
        assert!(!port_name("abcdefghijklmnop").is_empty());
        assert!(!port_name("").is_empty());
    }

    #[test]
    fn port_numbers() {
        assert!(port_number(1).is_empty());
        assert!(port_number(65535).is_empty());
        assert!(!port_number(0).is_empty());
        assert!(!port_number(65536).is_empty());
        assert!(!port_number(-1).is_empty());
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.0.0.7/8").map(|c| c.to_string()),
            Some("10.0.0.0/8".to_string())
        );
        assert_eq!(parse_cidr("10.0.0.7"), None);
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        let outer = parse_cidr("10.0.0.0/16");
        let inner = parse_cidr("10.0.1.0/24");
        let other = parse_cidr("10.1.0.0/24");
        let v6 = parse_cidr("fd00::/120");
        match (outer, inner, other, v6) {
            (Some(o), Some(i), Some(x), Some(v6)) => {
                assert!(is_strict_subset(&i, &o));
                assert!(!is_strict_subset(&o, &o), "equal is not strict");
                assert!(!is_strict_subset(&o, &i));
                assert!(!is_strict_subset(&x, &o));
                assert!(!is_strict_subset(&v6, &o));
            }
            _ => unreachable!("test CIDRs parse"),
        }
    }
}

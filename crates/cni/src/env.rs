//! The `CNI_*` environment: command, attachment parameters, `CNI_ARGS`.
//!
//! Every problem with the environment is reported at once, as error 4 naming each variable.

use std::path::PathBuf;

use crate::error::{code, CniError};

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Whether the verb is about one attachment (needs container id and ifname).
    pub fn is_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// Reads `CNI_COMMAND`.
pub fn command(get: &dyn Fn(&str) -> Option<String>) -> Result<Command, CniError> {
    let raw = non_empty(get("CNI_COMMAND"));
    match raw.as_deref() {
        Some("ADD") => Ok(Command::Add),
        Some("DEL") => Ok(Command::Del),
        Some("CHECK") => Ok(Command::Check),
        Some("STATUS") => Ok(Command::Status),
        Some("GC") => Ok(Command::Gc),
        Some("VERSION") => Ok(Command::Version),
        Some(other) => Err(CniError::new(
            code::INVALID_ENV,
            "invalid environment variables: CNI_COMMAND",
            format!("CNI_COMMAND={other:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
        )),
        None => Err(CniError::new(
            code::INVALID_ENV,
            "invalid environment variables: CNI_COMMAND",
            "CNI_COMMAND is not set",
        )),
    }
}

/// The Kubernetes keys of `CNI_ARGS` (recorded on the allocation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_infra_container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// Parameters of one attachment (ADD, DEL, CHECK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachEnv {
    pub container_id: String,
    pub ifname: String,
    /// Required for ADD and CHECK, optional for DEL.
    pub netns: Option<PathBuf>,
    pub args: CniArgs,
}

/// Reads and validates the attachment variables for `cmd`, reporting every problem together.
pub fn attachment(
    cmd: Command,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<AttachEnv, CniError> {
    let mut bad: Vec<&'static str> = Vec::new();
    let mut details: Vec<String> = Vec::new();
    let mut problem = |var: &'static str, d: String| {
        if !bad.contains(&var) {
            bad.push(var);
        }
        details.push(d);
    };

    let container_id = non_empty(get("CNI_CONTAINERID"));
    match &container_id {
        None => problem("CNI_CONTAINERID", "CNI_CONTAINERID is not set".into()),
        Some(id) => {
            if let Err(e) = validate_container_id(id) {
                problem("CNI_CONTAINERID", format!("CNI_CONTAINERID: {e}"));
            }
        }
    }
    let ifname = non_empty(get("CNI_IFNAME"));
    match &ifname {
        None => problem("CNI_IFNAME", "CNI_IFNAME is not set".into()),
        Some(n) => {
            if let Err(e) = validate_ifname(n) {
                problem("CNI_IFNAME", format!("CNI_IFNAME: {e}"));
            }
        }
    }
    let netns = non_empty(get("CNI_NETNS")).map(PathBuf::from);
    if netns.is_none() && cmd != Command::Del {
        problem("CNI_NETNS", "CNI_NETNS is not set".into());
    }
    let args = match parse_cni_args(get("CNI_ARGS").as_deref().unwrap_or("")) {
        Ok(a) => a,
        Err(e) => {
            problem("CNI_ARGS", format!("CNI_ARGS: {e}"));
            CniArgs::default()
        }
    };

    match (container_id, ifname) {
        (Some(container_id), Some(ifname)) if bad.is_empty() => Ok(AttachEnv {
            container_id,
            ifname,
            netns,
            args,
        }),
        _ => Err(CniError::new(
            code::INVALID_ENV,
            format!("invalid environment variables: {}", bad.join(", ")),
            details.join("; "),
        )),
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (the spec's rule for container ids and network names).
pub fn is_cni_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub fn validate_container_id(id: &str) -> Result<(), String> {
    if is_cni_name(id) {
        Ok(())
    } else {
        Err(format!(
            "{id:?} must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
        ))
    }
}

/// The spec's interface-name rules (Linux's, in short): 1–15 bytes, not `.`/`..`, no `/`, `:`
/// or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.len() > 15 {
        return Err(format!("{name:?} is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("{name:?} contains '/', ':' or whitespace"));
    }
    Ok(())
}

/// Parses `CNI_ARGS` (`K=V;K=V`).
///
/// Decision (the reference plugins' rule): the Kubernetes keys are understood; any other key is
/// an error unless `IgnoreUnknown` is true (`1`, `t`, `true`, ... as Go's `ParseBool`). Kubelet
/// always sends `IgnoreUnknown=1`. Empty segments are skipped; a segment without `=` is an error.
pub fn parse_cni_args(raw: &str) -> Result<CniArgs, String> {
    let mut args = CniArgs::default();
    let mut ignore_unknown = false;
    let mut unknown = Vec::new();
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not KEY=VALUE"));
        };
        let v = v.to_string();
        match k {
            "IgnoreUnknown" => {
                ignore_unknown = parse_go_bool(&v)
                    .ok_or_else(|| format!("IgnoreUnknown={v:?} is not a boolean"))?
            }
            "K8S_POD_NAMESPACE" => args.pod_namespace = Some(v),
            "K8S_POD_NAME" => args.pod_name = Some(v),
            "K8S_POD_INFRA_CONTAINER_ID" => args.pod_infra_container_id = Some(v),
            "K8S_POD_UID" => args.pod_uid = Some(v),
            _ => unknown.push(k.to_string()),
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(format!(
            "unknown keys {} (set IgnoreUnknown=1 to ignore them)",
            unknown.join(", ")
        ));
    }
    Ok(args)
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn getter(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn commands() {
        assert_eq!(command(&getter(&[("CNI_COMMAND", "GC")])), Ok(Command::Gc));
        let e = command(&getter(&[])).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_COMMAND"));
        let e = command(&getter(&[("CNI_COMMAND", "add")])).unwrap_err();
        assert_eq!(e.code, 4);
        let e = command(&getter(&[("CNI_COMMAND", "")])).unwrap_err();
        assert!(e.details.contains("not set"));
    }

    #[test]
    fn attachment_ok_and_del_without_netns() {
        let vars = [
            ("CNI_CONTAINERID", "abc-1.2_x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/p"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;FOO=bar",
            ),
        ];
        let a = attachment(Command::Add, &getter(&vars)).unwrap();
        assert_eq!(a.container_id, "abc-1.2_x");
        assert_eq!(a.netns, Some(PathBuf::from("/run/netns/p")));
        assert_eq!(a.args.pod_name.as_deref(), Some("web-0"));
        assert_eq!(a.args.pod_uid.as_deref(), Some("u-1"));
        let a = attachment(
            Command::Del,
            &getter(&[("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")]),
        )
        .unwrap();
        assert_eq!(a.netns, None);
    }

    #[test]
    fn every_bad_variable_is_named() {
        let e = attachment(
            Command::Add,
            &getter(&[("CNI_IFNAME", "eth0:1"), ("CNI_ARGS", "FOO=1")]),
        )
        .unwrap_err();
        assert_eq!(e.code, 4);
        for var in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS"] {
            assert!(e.msg.contains(var), "{var} not in {}", e.msg);
        }
        let e = attachment(
            Command::Check,
            &getter(&[
                ("CNI_CONTAINERID", "-bad"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/x"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.msg, "invalid environment variables: CNI_CONTAINERID");
    }

    #[test]
    fn ifnames() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("abcdefghijklmno").is_ok());
        for bad in ["abcdefghijklmnop", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cni_args_rules() {
        assert_eq!(parse_cni_args("").unwrap(), CniArgs::default());
        assert_eq!(
            parse_cni_args(";K8S_POD_NAME=a=b;")
                .unwrap()
                .pod_name
                .as_deref(),
            Some("a=b")
        );
        assert!(parse_cni_args("FOO=1").unwrap_err().contains("FOO"));
        assert!(parse_cni_args("FOO=1;IgnoreUnknown=true").is_ok());
        assert!(parse_cni_args("IgnoreUnknown=0;FOO=1").is_err());
        assert!(parse_cni_args("IgnoreUnknown=maybe").is_err());
        assert!(parse_cni_args("novalue").is_err());
    }
}

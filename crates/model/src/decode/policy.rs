//! `networking.k8s.io/v1` NetworkPolicy: decoding, the API server's defaulting of
//! `policyTypes`, and its validation (`ValidateNetworkPolicySpec`).

use serde_json::Value;

use super::core::{decode_protocol, render, CIDR_MSG};
use super::meta::{decode_selector, Meta};
use super::value::{
    as_obj, child, field, index, opt_arr, opt_i32, opt_int_or_string, opt_obj, opt_str, str_items,
    Errors, IntOrString, Obj,
};
use crate::net::{IpBlock, PortSpec};
use crate::objects::{NetworkPolicy, Peer, PolicyPort, PolicyRule, PolicyTypes};
use crate::validate;

pub(crate) fn decode_network_policy(obj: &Obj, meta: &Meta, errs: &mut Errors) -> NetworkPolicy {
    let empty = Obj::new();
    let spec = opt_obj(obj, "spec", "", errs).unwrap_or(&empty);
    let pod_selector = field(spec, "podSelector")
        .map(|v| decode_selector(v, "spec.podSelector", errs))
        .unwrap_or_default();

    let ingress_raw = opt_arr(spec, "ingress", "spec", errs);
    let ingress = ingress_raw
        .iter()
        .enumerate()
        .map(|(i, r)| decode_rule(r, &index("spec.ingress", i), "from", errs))
        .collect();
    let egress_raw = opt_arr(spec, "egress", "spec", errs);
    let egress = egress_raw
        .iter()
        .enumerate()
        .map(|(i, r)| decode_rule(r, &index("spec.egress", i), "to", errs))
        .collect();

    let types_raw = opt_arr(spec, "policyTypes", "spec", errs);
    let policy_types = if types_raw.is_empty() {
        // SetDefaults_NetworkPolicy: Ingress always, Egress only with at least one egress rule.
        PolicyTypes {
            ingress: true,
            egress: !egress_raw.is_empty(),
        }
    } else if types_raw.len() > 2 {
        errs.invalid(
            "spec.policyTypes".to_string(),
            render(&Value::Array(types_raw.to_vec())),
            "may not specify more than two policyTypes",
        );
        PolicyTypes::default()
    } else {
        let mut t = PolicyTypes::default();
        for (i, s) in str_items(types_raw, "spec.policyTypes", errs) {
            match s {
                "Ingress" => t.ingress = true,
                "Egress" => t.egress = true,
                other => {
                    errs.not_supported(index("spec.policyTypes", i), other, &["Ingress", "Egress"])
                }
            }
        }
        t
    };

    NetworkPolicy {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        pod_selector,
        ingress,
        egress,
        policy_types,
    }
}

/// One ingress (`from`) or egress (`to`) rule. Missing and empty peer/port lists both mean
/// "all", so both decode to empty vectors.
fn decode_rule(v: &Value, path: &str, peers_key: &str, errs: &mut Errors) -> PolicyRule {
    let mut rule = PolicyRule::default();
    let Some(r) = as_obj(v, path, errs) else {
        return rule;
    };
    let peers_path = child(path, peers_key);
    for (i, p) in opt_arr(r, peers_key, path, errs).iter().enumerate() {
        if let Some(peer) = decode_peer(p, &index(&peers_path, i), errs) {
            rule.peers.push(peer);
        }
    }
    let ports_path = child(path, "ports");
    for (i, p) in opt_arr(r, "ports", path, errs).iter().enumerate() {
        if let Some(port) = decode_port(p, &index(&ports_path, i), errs) {
            rule.ports.push(port);
        }
    }
    rule
}

/// `ValidateNetworkPolicyPeer`: exactly one of ipBlock or (podSelector and/or
/// namespaceSelector).
fn decode_peer(v: &Value, path: &str, errs: &mut Errors) -> Option<Peer> {
    let p = as_obj(v, path, errs)?;
    let pod_selector =
        field(p, "podSelector").map(|s| decode_selector(s, &child(path, "podSelector"), errs));
    let namespace_selector = field(p, "namespaceSelector")
        .map(|s| decode_selector(s, &child(path, "namespaceSelector"), errs));
    let ip_block = field(p, "ipBlock").map(|b| decode_ip_block(b, &child(path, "ipBlock"), errs));
    let count = usize::from(pod_selector.is_some())
        + usize::from(namespace_selector.is_some())
        + usize::from(ip_block.is_some());
    if count == 0 {
        errs.required(path.to_string(), "must specify a peer");
        return None;
    }
    match ip_block {
        Some(_) if count > 1 => {
            errs.forbidden(
                path.to_string(),
                "may not specify both ipBlock and another peer",
            );
            None
        }
        Some(b) => b.map(Peer::IpBlock),
        None => Some(Peer::Selector {
            pod_selector,
            namespace_selector,
        }),
    }
}

/// `ValidateIPBlock`: a valid CIDR (host bits allowed; normalised), and every `except` a valid
/// CIDR that is a strict subset of it.
fn decode_ip_block(v: &Value, path: &str, errs: &mut Errors) -> Option<IpBlock> {
    let b = as_obj(v, path, errs)?;
    let cidr_str = opt_str(b, "cidr", path, errs).unwrap_or("");
    let except_path = child(path, "except");
    let excepts = str_items(opt_arr(b, "except", path, errs), &except_path, errs);
    if cidr_str.is_empty() {
        errs.required(child(path, "cidr"), "");
        return None;
    }
    let Some(cidr) = validate::parse_cidr(cidr_str) else {
        errs.invalid_str(child(path, "cidr"), cidr_str, CIDR_MSG);
        return None;
    };
    let mut except = Vec::new();
    let mut ok = true;
    for (i, s) in excepts {
        let ep = index(&except_path, i);
        match validate::parse_cidr(s) {
            None => {
                ok = false;
                errs.invalid_str(ep, s, CIDR_MSG);
            }
            Some(e) if !validate::is_strict_subset(&e, &cidr) => {
                ok = false;
                errs.invalid_str(ep, s, "must be a strict subset of `cidr`");
            }
            Some(e) => except.push(e),
        }
    }
    ok.then_some(IpBlock { cidr, except })
}

/// `ValidateNetworkPolicyPort`: protocol TCP/UDP/SCTP (default TCP); a numeric port in range
/// or a valid IANA service name (a quoted `"80"` is a name, and an invalid one); `endPort`
/// only with a numeric `port`, not below it and in range.
fn decode_port(v: &Value, path: &str, errs: &mut Errors) -> Option<PolicyPort> {
    let p = as_obj(v, path, errs)?;
    let before = errs.list.len();
    let protocol = decode_protocol(p, path, errs);
    let port = opt_int_or_string(p, "port", path, errs);
    let end_port = opt_i32(p, "endPort", path, errs);
    let port_path = child(path, "port");
    let end_path = child(path, "endPort");
    let spec = match port {
        Some(IntOrString::Int(n)) => {
            for m in validate::port_number(i64::from(n)) {
                errs.invalid(port_path.clone(), n, &m);
            }
            if let Some(end) = end_port {
                if end < n {
                    errs.invalid(
                        end_path.clone(),
                        end,
                        "must be greater than or equal to `port`",
                    );
                }
                for m in validate::port_number(i64::from(end)) {
                    errs.invalid(end_path.clone(), end, &m);
                }
            }
            u16::try_from(n).ok().map(PortSpec::Number)
        }
        Some(IntOrString::Str(s)) => {
            if let Some(end) = end_port {
                errs.invalid(
                    end_path.clone(),
                    end,
                    "may not be specified when `port` is non-numeric",
                );
            }
            for m in validate::port_name(&s) {
                errs.invalid_str(port_path.clone(), &s, &m);
            }
            Some(PortSpec::Name(s))
        }
        None => {
            if let Some(end) = end_port {
                errs.invalid(
                    end_path.clone(),
                    end,
                    "may not be specified when `port` is not specified",
                );
            }
            None
        }
    };
    if errs.list.len() != before {
        return None;
    }
    Some(PolicyPort {
        protocol: protocol?,
        port: spec,
        end_port: end_port.and_then(|e| u16::try_from(e).ok()),
    })
}

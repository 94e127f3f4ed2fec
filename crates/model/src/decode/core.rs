//! Core `v1` kinds: Pod (and the pod spec that workload templates share), Node, Service.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::Value;

use super::meta::{validate_labels, Meta};
use super::value::{
    as_obj, child, field, index, opt_arr, opt_bool, opt_int_or_string, opt_obj, opt_str,
    opt_string_map, str_items, Errors, IntOrString, Obj,
};
use crate::labels::Labels;
use crate::net::{PortSpec, Protocol};
use crate::objects::{ContainerPort, Node, Pod, Service, ServicePort};
use crate::validate;

/// Protocols the API server accepts, in its (sorted) spelling for error messages.
pub(crate) const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
pub(crate) const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// A protocol field, defaulted to TCP; `None` (with an error) when unsupported.
pub(crate) fn decode_protocol(obj: &Obj, path: &str, errs: &mut Errors) -> Option<Protocol> {
    match opt_str(obj, "protocol", path, errs) {
        None => Some(Protocol::Tcp),
        Some(s) => {
            let p = Protocol::parse(s);
            if p.is_none() {
                errs.not_supported(child(path, "protocol"), s, &PROTOCOLS);
            }
            p
        }
    }
}

/// The parts of a pod spec the network model needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodSpecParts {
    pub ports: Vec<ContainerPort>,
    pub node_name: Option<String>,
    pub host_network: bool,
    pub node_selector: Labels,
}

/// Decodes a pod spec at `path` (`spec` for pods, `spec.template.spec` for workloads).
pub(crate) fn decode_pod_spec(spec: Option<&Obj>, path: &str, errs: &mut Errors) -> PodSpecParts {
    let mut out = PodSpecParts::default();
    let Some(spec) = spec else {
        return out;
    };
    let cpath = child(path, "containers");
    for (i, c) in opt_arr(spec, "containers", path, errs).iter().enumerate() {
        let p = index(&cpath, i);
        if let Some(c) = as_obj(c, &p, errs) {
            decode_container_ports(c, &p, errs, &mut out.ports);
        }
    }
    // Sidecars (init containers with `restartPolicy: Always`) keep running and serve their
    // ports; ordinary init containers have exited before the pod is ready.
    let ipath = child(path, "initContainers");
    for (i, c) in opt_arr(spec, "initContainers", path, errs)
        .iter()
        .enumerate()
    {
        let p = index(&ipath, i);
        if let Some(c) = as_obj(c, &p, errs) {
            let mut ports = Vec::new();
            decode_container_ports(c, &p, errs, &mut ports);
            if opt_str(c, "restartPolicy", &p, errs) == Some("Always") {
                out.ports.extend(ports);
            }
        }
    }
    out.node_name = opt_str(spec, "nodeName", path, errs)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    out.host_network = opt_bool(spec, "hostNetwork", path, errs).unwrap_or(false);
    out.node_selector = opt_string_map(spec, "nodeSelector", path, errs).unwrap_or_default();
    out
}

/// `validateContainerPorts`: names unique within the container and valid IANA service names,
/// `containerPort` required and in range, protocol supported.
fn decode_container_ports(c: &Obj, cpath: &str, errs: &mut Errors, out: &mut Vec<ContainerPort>) {
    let mut names: HashSet<&str> = HashSet::new();
    let ports_path = child(cpath, "ports");
    for (i, p) in opt_arr(c, "ports", cpath, errs).iter().enumerate() {
        let pp = index(&ports_path, i);
        let Some(p) = as_obj(p, &pp, errs) else {
            continue;
        };
        let mut ok = true;
        let name = opt_str(p, "name", &pp, errs).filter(|n| !n.is_empty());
        if let Some(n) = name {
            let msgs = validate::port_name(n);
            if !msgs.is_empty() {
                ok = false;
                for m in msgs {
                    errs.invalid_str(child(&pp, "name"), n, &m);
                }
            } else if !names.insert(n) {
                ok = false;
                errs.duplicate(child(&pp, "name"), n);
            }
        }
        let port = port_field(p, "containerPort", &pp, errs);
        let protocol = decode_protocol(p, &pp, errs);
        match (port, protocol) {
            (Some(port), Some(protocol)) if ok => out.push(ContainerPort {
                name: name.map(str::to_string),
                port,
                protocol,
            }),
            _ => {}
        }
    }
}

/// A required numeric port field (`containerPort`, service `port`): 1..=65535.
fn port_field(obj: &Obj, k: &str, path: &str, errs: &mut Errors) -> Option<u16> {
    let p = child(path, k);
    let n = match field(obj, k) {
        None => {
            errs.required(p, "");
            return None;
        }
        Some(v) => super::value::as_i32(v, &p, errs)?,
    };
    if n == 0 {
        errs.required(p, "");
        return None;
    }
    let msgs = validate::port_number(i64::from(n));
    if !msgs.is_empty() {
        for m in msgs {
            errs.invalid(p.clone(), n, &m);
        }
        return None;
    }
    u16::try_from(n).ok()
}

/// Parses a list of IP strings, reporting each invalid one at its index.
fn parse_ips<'a>(
    items: impl IntoIterator<Item = (String, &'a str)>,
    errs: &mut Errors,
) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (path, s) in items {
        match validate::parse_ip(s) {
            Some(ip) => {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
            None => errs.invalid_str(path, s, IP_MSG),
        }
    }
    out
}

/// A Pod, plus its `status.phase`.
pub(crate) fn decode_pod(obj: &Obj, meta: &Meta, errs: &mut Errors) -> (Pod, Option<String>) {
    let spec = opt_obj(obj, "spec", "", errs);
    let parts = decode_pod_spec(spec, "spec", errs);
    let mut ips = Vec::new();
    let mut phase = None;
    if let Some(status) = opt_obj(obj, "status", "", errs) {
        phase = opt_str(status, "phase", "status", errs).map(str::to_string);
        let mut items = Vec::new();
        for (i, e) in opt_arr(status, "podIPs", "status", errs).iter().enumerate() {
            let p = index("status.podIPs", i);
            if let Some(e) = as_obj(e, &p, errs) {
                if let Some(ip) = opt_str(e, "ip", &p, errs) {
                    items.push((child(&p, "ip"), ip));
                }
            }
        }
        if items.is_empty() {
            if let Some(ip) = opt_str(status, "podIP", "status", errs).filter(|s| !s.is_empty()) {
                items.push(("status.podIP".to_string(), ip));
            }
        }
        ips = parse_ips(items, errs);
    }
    let pod = Pod {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        labels: meta.labels.clone(),
        ips,
        ports: parts.ports,
        node_name: parts.node_name,
        host_network: parts.host_network,
    };
    (pod, phase)
}

/// A Node: labels, InternalIP/ExternalIP addresses, pod CIDRs.
pub(crate) fn decode_node(obj: &Obj, meta: &Meta, errs: &mut Errors) -> Node {
    let mut pod_cidrs = Vec::new();
    if let Some(spec) = opt_obj(obj, "spec", "", errs) {
        let arr = opt_arr(spec, "podCIDRs", "spec", errs);
        let mut items: Vec<(String, &str)> = str_items(arr, "spec.podCIDRs", errs)
            .into_iter()
            .map(|(i, s)| (index("spec.podCIDRs", i), s))
            .collect();
        if items.is_empty() {
            if let Some(c) = opt_str(spec, "podCIDR", "spec", errs).filter(|s| !s.is_empty()) {
                items.push(("spec.podCIDR".to_string(), c));
            }
        }
        for (path, s) in items {
            match validate::parse_cidr(s) {
                Some(c) => pod_cidrs.push(c),
                None => errs.invalid_str(path, s, CIDR_MSG),
            }
        }
    }
    let mut addresses = Vec::new();
    if let Some(status) = opt_obj(obj, "status", "", errs) {
        let mut items = Vec::new();
        for (i, a) in opt_arr(status, "addresses", "status", errs)
            .iter()
            .enumerate()
        {
            let p = index("status.addresses", i);
            let Some(a) = as_obj(a, &p, errs) else {
                continue;
            };
            let ty = opt_str(a, "type", &p, errs);
            let addr = opt_str(a, "address", &p, errs);
            if let (Some("InternalIP" | "ExternalIP"), Some(addr)) = (ty, addr) {
                items.push((child(&p, "address"), addr));
            }
        }
        addresses = parse_ips(items, errs);
    }
    Node {
        name: meta.name.clone().unwrap_or_default(),
        labels: meta.labels.clone(),
        addresses,
        pod_cidrs,
    }
}

/// A Service: selector, cluster IPs (`None` = headless), ports.
pub(crate) fn decode_service(obj: &Obj, meta: &Meta, errs: &mut Errors) -> Service {
    let empty = Obj::new();
    let spec = opt_obj(obj, "spec", "", errs).unwrap_or(&empty);
    let selector = opt_string_map(spec, "selector", "spec", errs);
    if let Some(sel) = &selector {
        validate_labels(sel, "spec.selector", errs);
    }
    let selector = selector.filter(|s| !s.is_empty());

    let mut items: Vec<(String, &str)> = str_items(
        opt_arr(spec, "clusterIPs", "spec", errs),
        "spec.clusterIPs",
        errs,
    )
    .into_iter()
    .map(|(i, s)| (index("spec.clusterIPs", i), s))
    .collect();
    if items.is_empty() {
        if let Some(ip) = opt_str(spec, "clusterIP", "spec", errs) {
            items.push(("spec.clusterIP".to_string(), ip));
        }
    }
    items.retain(|(_, s)| !s.is_empty() && *s != "None");
    let cluster_ips = parse_ips(items, errs);

    let ports_arr = opt_arr(spec, "ports", "spec", errs);
    let mut ports = Vec::new();
    let mut names: HashSet<&str> = HashSet::new();
    for (i, p) in ports_arr.iter().enumerate() {
        let pp = index("spec.ports", i);
        let Some(p) = as_obj(p, &pp, errs) else {
            continue;
        };
        if let Some(sp) = decode_service_port(p, &pp, ports_arr.len() > 1, &mut names, errs) {
            ports.push(sp);
        }
    }
    Service {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        selector,
        cluster_ips,
        ports,
    }
}

/// `validateServicePort`: names are DNS labels, required and unique when there are several
/// ports; `targetPort` defaults to `port`.
fn decode_service_port<'a>(
    p: &'a Obj,
    pp: &str,
    several: bool,
    names: &mut HashSet<&'a str>,
    errs: &mut Errors,
) -> Option<ServicePort> {
    let before = errs.list.len();
    let name = opt_str(p, "name", pp, errs).filter(|n| !n.is_empty());
    match name {
        None if several => errs.required(child(pp, "name"), ""),
        None => {}
        Some(n) => {
            for m in validate::dns1123_label(n) {
                errs.invalid_str(child(pp, "name"), n, &m);
            }
            if !names.insert(n) {
                errs.duplicate(child(pp, "name"), n);
            }
        }
    }
    let port = port_field(p, "port", pp, errs);
    let protocol = decode_protocol(p, pp, errs);
    let target = match opt_int_or_string(p, "targetPort", pp, errs) {
        None | Some(IntOrString::Int(0)) => port.map(PortSpec::Number),
        Some(IntOrString::Str(s)) if s.is_empty() => port.map(PortSpec::Number),
        Some(IntOrString::Int(n)) => {
            let msgs = validate::port_number(i64::from(n));
            for m in &msgs {
                errs.invalid(child(pp, "targetPort"), n, m);
            }
            u16::try_from(n).ok().map(PortSpec::Number)
        }
        Some(IntOrString::Str(s)) => {
            for m in validate::port_name(&s) {
                errs.invalid_str(child(pp, "targetPort"), &s, &m);
            }
            Some(PortSpec::Name(s))
        }
    };
    if errs.list.len() != before {
        return None;
    }
    Some(ServicePort {
        name: name.map(str::to_string),
        port: port?,
        protocol: protocol?,
        target_port: target,
    })
}

/// A JSON value rendered compactly for `Invalid value:` messages.
pub(crate) fn render(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

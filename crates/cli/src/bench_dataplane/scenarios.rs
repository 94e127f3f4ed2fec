//! Part of `furynet bench dataplane` (see `mod.rs`).

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Scenario 1: policy cost

/// The two benchmark pods and the two policies that select them and allow their traffic,
/// the server's ingress peer list padded with `filler` non-adjacent `/32` ipBlocks.
pub(super) fn own_yaml(filler: usize) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {BENCH_NS}}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: {BENCH_NS}, labels: {{app: fnyb-client}}}}\n\
         spec: {{containers: [{{name: c, image: bench}}]}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: server, namespace: {BENCH_NS}, labels: {{app: fnyb-server}}}}\n\
         spec: {{containers: [{{name: c, image: bench, ports: [{{containerPort: {PORT}, protocol: TCP}}]}}]}}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: client-egress, namespace: {BENCH_NS}}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: fnyb-client}}}}\n  policyTypes: [Egress]\n  egress:\n\
         \x20 - to: [{{podSelector: {{matchLabels: {{app: fnyb-server}}}}}}]\n    ports: [{{protocol: TCP, port: {PORT}}}]\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: server-ingress, namespace: {BENCH_NS}}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: fnyb-server}}}}\n  policyTypes: [Ingress]\n  ingress:\n\
         \x20 - ports: [{{protocol: TCP, port: {PORT}}}]\n    from:\n    - podSelector: {{matchLabels: {{app: fnyb-client}}}}\n"
    );
    for ip in filler_addrs(filler) {
        y.push_str(&format!("    - ipBlock: {{cidr: {ip}/32}}\n"));
    }
    y
}

/// `n` distinct, pairwise non-adjacent IPv4 addresses in 100.64.0.0/10 (so an interval set
/// cannot merge them into ranges).
pub(super) fn filler_addrs(n: usize) -> impl Iterator<Item = Ipv4Addr> {
    (0..n.min(1 << 21)).map(|i| Ipv4Addr::from(0x6440_0000u32 + 2 * i as u32))
}

/// The synthetic cluster (all pods on the benchmark node) plus the benchmark's own objects.
pub(super) fn policy_cluster(
    policies: usize,
    filler: usize,
    client: IpAddr,
    server: IpAddr,
) -> Res<Cluster> {
    let synth_policies = policies.saturating_sub(2);
    let mut c = synth::cluster(&SynthSpec {
        pods: (synth_policies * 5).max(10),
        policies: synth_policies,
        ..SynthSpec::default()
    });
    for p in &mut c.pods {
        p.node_name = Some(NODE.into());
    }
    let l = furynet_model::load_str("bench-dataplane", &own_yaml(filler));
    if let Some(d) = l.diagnostics.iter().find(|d| d.severity == Severity::Error) {
        return Err(format!("benchmark objects: {d}"));
    }
    let mut own = l.cluster;
    for p in &mut own.pods {
        p.node_name = Some(NODE.into());
        p.ips = vec![if p.name == "client" { client } else { server }];
    }
    c.namespaces.append(&mut own.namespaces);
    c.pods.append(&mut own.pods);
    c.policies.append(&mut own.policies);
    Ok(c)
}

#[derive(Debug, Default, Serialize)]
pub(super) struct NftCounts {
    pub(super) policies: usize,
    pub(super) local_pods: usize,
    pub(super) chains: usize,
    pub(super) rules: usize,
    pub(super) sets: usize,
    pub(super) set_elements: usize,
    /// Entries of the two interface verdict maps.
    pub(super) vmap_entries: usize,
    /// `/32` ipBlocks added to the benchmark server's policy to reach `--set-entries`.
    pub(super) filler_ipblocks: usize,
    /// Read back from the kernel after the first apply (`nft -j list table`).
    pub(super) kernel_chains: usize,
    pub(super) kernel_rules: usize,
    pub(super) kernel_set_elements: usize,
    pub(super) script_bytes: usize,
    pub(super) calc_ms: f64,
    pub(super) apply_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub(super) struct PolicyReport {
    pub(super) nft: NftCounts,
    /// A: no nftables table at all (no netfilter hook, no conntrack).
    pub(super) no_policy: Measure,
    pub(super) policy: Measure,
    pub(super) ratio: Ratios,
    /// The second comparison, A': furynet's table for the same pods with no NetworkPolicy (what
    /// a node runs before anyone writes a policy: base chains, conntrack, verdict maps) ...
    pub(super) furynet_no_policy: Measure,
    /// ... against the policies in force again, measured alternately with A'.
    pub(super) policy_again: Measure,
    pub(super) ratio_vs_furynet_no_policy: Ratios,
}

pub(super) fn elements(state: &furynet_calc::NftState) -> usize {
    state.sets.values().map(|s| s.elements.len()).sum()
}

pub(super) fn policy_scenario(args: &DataplaneBench, tag: &str, cni: &Path) -> Res<PolicyReport> {
    eprintln!("policy: one node, two pods wired by furynet-cni");
    let ds = TempDir::new(format!("{tag}-ds-policy"))?;
    let node = node_ns(format!("{tag}-n1"))?;
    let client = new_ns(format!("{tag}-p1"))?;
    let server = new_ns(format!("{tag}-p2"))?;
    let client_ip = cni_add(cni, &node, NODE, &ds.0, &client)?;
    let server_ip = cni_add(cni, &node, NODE, &ds.0, &server)?;
    let ifaces_of = |c: &Cluster| -> HashMap<String, String> {
        c.pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let iface = match (p.namespace.as_str(), p.name.as_str()) {
                    (BENCH_NS, "client") => furynet_cni::host_veth_name(&client.name, "eth0"),
                    (BENCH_NS, "server") => furynet_cni::host_veth_name(&server.name, "eth0"),
                    // Not wired: the chains exist, no packet ever matches the interface.
                    _ => format!("fnx{i:08x}"),
                };
                (p.key(), iface)
            })
            .collect()
    };

    eprintln!(
        "policy: computing the node's table ({} policies, {} set elements wanted)",
        args.policies, args.set_entries
    );
    let started = Instant::now();
    let mut cluster = policy_cluster(args.policies, 0, client_ip, server_ip)?;
    let mut state = furynet_calc::compute(&Engine::new(&cluster), NODE, &ifaces_of(&cluster));
    let filler = args.set_entries.saturating_sub(elements(&state));
    if filler > 0 {
        cluster = policy_cluster(args.policies, filler, client_ip, server_ip)?;
        state = furynet_calc::compute(&Engine::new(&cluster), NODE, &ifaces_of(&cluster));
    }
    let script = furynet_calc::render_full(&state);
    let calc_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut bare = cluster.clone();
    bare.policies.clear();
    let empty_state = furynet_calc::compute(&Engine::new(&bare), NODE, &ifaces_of(&bare));
    let empty_script = furynet_calc::render_resync(&empty_state);
    let resync_script = furynet_calc::render_resync(&state);
    let (chains, sets) = state.summary();
    let mut counts = NftCounts {
        policies: cluster.policies.len(),
        local_pods: state.pods.len(),
        chains: chains.len(),
        rules: chains.values().sum(),
        sets: state.sets.len(),
        set_elements: elements(&state),
        vmap_entries: sets.get("from_pod").copied().unwrap_or(0)
            + sets.get("to_pod").copied().unwrap_or(0),
        filler_ipblocks: filler,
        script_bytes: script.len(),
        calc_ms,
        ..NftCounts::default()
    };
    eprintln!(
        "policy: {} policies, {} local pods, {} chains, {} rules, {} sets with {} elements, {} vmap entries ({} filler ipBlocks; calc {:.0} ms)",
        counts.policies,
        counts.local_pods,
        counts.chains,
        counts.rules,
        counts.sets,
        counts.set_elements,
        counts.vmap_entries,
        filler,
        calc_ms
    );
    let client_chain = state
        .pods
        .values()
        .find(|p| p.pod == format!("{BENCH_NS}/client"))
        .map(|p| p.egress.len());
    let server_chain = state
        .pods
        .values()
        .find(|p| p.pod == format!("{BENCH_NS}/server"))
        .map(|p| p.ingress.len());
    if client_chain.unwrap_or(0) == 0 || server_chain.unwrap_or(0) == 0 {
        return Err(
            "the benchmark pods are not isolated by policy (no rules in their chains)".into(),
        );
    }

    let nft = furynet_dataplane::nft::Nft::in_netns(node.name.clone());
    let dst = SocketAddr::new(server_ip, PORT);
    let _sink = sink(&server, dst)?;
    let mut read_back = false;
    let mut apply_ms = Vec::new();
    let mut kernel = (0, 0, 0);
    let mut switch = |on: bool| -> Res<()> {
        if on {
            let t = Instant::now();
            nft.apply(&script).map_err(|e| format!("nft apply: {e}"))?;
            apply_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if !read_back {
                read_back = true;
                if let Ok(Some(view)) = nft.read_table() {
                    kernel = (
                        view.chains.len(),
                        view.chains.values().sum(),
                        view.sets
                            .iter()
                            .filter(|(n, _)| n.as_str() != "from_pod" && n.as_str() != "to_pod")
                            .map(|(_, n)| n)
                            .sum(),
                    );
                }
            }
            eprintln!("  (policy table applied)");
        } else {
            // Absent at the start; `delete` fails then, which is fine.
            let _ = node.exec(&["nft", "delete", "table", "inet", "furynet"]);
            eprintln!("  (no nftables table)");
        }
        Ok(())
    };
    let (a, b) = compare(args, ["no policy", "policy"], &client, dst, &mut switch)?;
    eprintln!("policy: the same against furynet's table with no NetworkPolicy");
    let mut switch_table = |on: bool| -> Res<()> {
        let t = Instant::now();
        nft.apply(if on { &resync_script } else { &empty_script })
            .map_err(|e| format!("nft apply: {e}"))?;
        if on {
            apply_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        eprintln!(
            "  ({})",
            if on {
                "policy table applied"
            } else {
                "table without policies applied"
            }
        );
        Ok(())
    };
    let (a2, b2) = compare(
        args,
        ["no NetworkPolicy", "policy"],
        &client,
        dst,
        &mut switch_table,
    )?;
    let _ = node.exec(&["nft", "delete", "table", "inet", "furynet"]);
    counts.apply_ms = apply_ms;
    (
        counts.kernel_chains,
        counts.kernel_rules,
        counts.kernel_set_elements,
    ) = kernel;
    Ok(PolicyReport {
        nft: counts,
        ratio: Ratios::of(&a, &b),
        no_policy: a,
        policy: b,
        ratio_vs_furynet_no_policy: Ratios::of(&a2, &b2),
        furynet_no_policy: a2,
        policy_again: b2,
    })
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: VXLAN

#[derive(Debug, Serialize)]
pub(super) struct VxlanReport {
    pub(super) pod_mtu: u32,
    pub(super) kernel_vxlan: Measure,
    pub(super) furynet_vxlan: Measure,
    pub(super) ratio: Ratios,
}

pub(super) fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The same entries as `p`, on a plain kernel VXLAN device `vx0` programmed with `ip`/`bridge`.
pub(super) fn hand_vxlan(ns: &Ns, p: &RoutingPlan) -> Res<()> {
    let vx = p.vxlan.as_ref().ok_or("the plan has no VXLAN device")?;
    let local = vx.local.to_string();
    let mtu = vx.mtu.to_string();
    let mac = mac_str(&vx.mac);
    ns.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "local",
        &local,
        "dev",
        "ul0",
        "nolearning",
    ])?;
    ns.ip(&["link", "set", "vx0", "address", &mac, "mtu", &mtu, "up"])?;
    for f in &p.fdb {
        let (m, d) = (mac_str(&f.mac), f.dst.to_string());
        ns.exec(&["bridge", "fdb", "append", &m, "dev", "vx0", "dst", &d])?;
    }
    for n in &p.neighbours {
        let (ip, m) = (n.ip.to_string(), mac_str(&n.mac));
        ns.ip(&[
            "neigh",
            "replace",
            &ip,
            "lladdr",
            &m,
            "dev",
            "vx0",
            "nud",
            "permanent",
        ])?;
    }
    for r in &p.routes {
        let (dst, via) = (r.dst.to_string(), r.via.to_string());
        ns.ip(&[
            "route", "replace", &dst, "via", &via, "dev", "vx0", "onlink",
        ])?;
    }
    Ok(())
}

pub(super) fn vxlan_scenario(args: &DataplaneBench, tag: &str, cni: &Path) -> Res<VxlanReport> {
    eprintln!("vxlan: two nodes on a veth underlay, one pod each (furynet-cni)");
    let ds = TempDir::new(format!("{tag}-ds-vxlan"))?;
    let a = node_ns(format!("{tag}-a"))?;
    let b = node_ns(format!("{tag}-b"))?;
    a.ip(&[
        "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", &b.name,
    ])?;
    let nodes = [
        (&a, "node-a", Ipv4Addr::new(172, 31, 0, 1)),
        (&b, "node-b", Ipv4Addr::new(172, 31, 0, 2)),
    ];
    for (ns, _, ip) in nodes {
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "ul0"])?;
        ns.ip(&["link", "set", "ul0", "up"])?;
    }
    let pa = new_ns(format!("{tag}-pa"))?;
    let pb = new_ns(format!("{tag}-pb"))?;
    cni_add(cni, &a, "node-a", &ds.0, &pa)?;
    let ip_b = cni_add(cni, &b, "node-b", &ds.0, &pb)?;

    let store = furynet_datastore::open(&furynet_datastore::DatastoreConfig::Embedded {
        path: ds.0.clone(),
    })
    .map_err(|e| e.to_string())?;
    let (kvs, _) = store
        .list(furynet_ipam::records::BLOCKS_PREFIX)
        .map_err(|e| e.to_string())?;
    let mut blocks = Vec::new();
    for kv in kvs {
        let rec: furynet_ipam::records::BlockRecord =
            serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?;
        blocks.push(BlockInfo {
            cidr: rec.cidr,
            node: rec.affinity,
        });
    }
    drop(store);
    let infos: Vec<NodeInfo> = nodes
        .iter()
        .map(|(_, name, ip)| NodeInfo {
            name: (*name).into(),
            underlay: *ip,
        })
        .collect();
    let plans: Vec<RoutingPlan> = nodes
        .iter()
        .map(|(_, name, ip)| {
            plan(&PlanInput {
                node: (*name).into(),
                underlay: *ip,
                underlay_mtu: 1500,
                nodes: infos.clone(),
                blocks: blocks.clone(),
                encapsulation: Encapsulation::default(),
            })
        })
        .collect();
    let device = plans
        .first()
        .and_then(|p| p.vxlan.as_ref())
        .map(|v| v.name.clone())
        .ok_or("the plan has no VXLAN device")?;
    let pod_mtu = plans.first().map_or(0, |p| p.pod_mtu);

    let dst = SocketAddr::new(ip_b, PORT);
    let _sink = sink(&pb, dst)?;
    let mut switch = |ours: bool| -> Res<()> {
        for ((ns, name, _), p) in nodes.iter().zip(&plans) {
            if ours {
                let _ = ns.ip(&["link", "del", "vx0"]);
                reconcile(&NetlinkRouting::in_netns(ns.path()), p)
                    .map_err(|e| format!("routes on {name}: {e}"))?;
            } else {
                let _ = ns.ip(&["link", "del", &device]);
                hand_vxlan(ns, p)?;
            }
        }
        eprintln!(
            "  ({})",
            if ours {
                "furynet routing plan reconciled"
            } else {
                "kernel vxlan vx0 built by hand"
            }
        );
        Ok(())
    };
    let (k, f) = compare(
        args,
        ["kernel vxlan", "furynet vxlan"],
        &pa,
        dst,
        &mut switch,
    )?;
    Ok(VxlanReport {
        pod_mtu,
        ratio: Ratios::of(&k, &f),
        kernel_vxlan: k,
        furynet_vxlan: f,
    })
}

//! The agent's view of the datastore (a snapshot the watch keeps current) and the desired node
//! state derived from it. Pure: no I/O.
//!
//! The snapshot is a sorted map from key to value, so the derived state depends only on the
//! current content of the store, never on the order in which events arrived (tested with
//! property tests below).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use furynet_calc::NftState;
use furynet_dataplane::nft::TableView;
use furynet_dataplane::routing::plan::{plan, BlockInfo, NodeInfo, PlanInput, RoutingPlan};
use furynet_datastore::{Event, KeyValue};
use furynet_ipam::records::{BlockRecord, BLOCKS_PREFIX};
use furynet_model::Cluster;
use furynet_policy::Engine;

use crate::keys::{NodeRecord, Object, CLUSTER_PREFIX, ENDPOINT_SLICES_PREFIX, NODES_PREFIX};

/// Prefixes whose content shapes a node's dataplane. EndpointSlices (from the kubernetes
/// datastore) are not used by the dataplane yet, so they neither wake the agent nor count.
pub fn relevant(key: &str) -> bool {
    (key.starts_with(CLUSTER_PREFIX) && !key.starts_with(ENDPOINT_SLICES_PREFIX))
        || key.starts_with(NODES_PREFIX)
        || key.starts_with(BLOCKS_PREFIX)
}

/// The relevant part of the datastore, as of `revision`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    objects: BTreeMap<String, Vec<u8>>,
    /// The list revision or the highest revision of a relevant event since.
    pub revision: i64,
}

impl Snapshot {
    /// From a list of everything (any prefix; irrelevant keys are ignored) at `revision`.
    pub fn from_list(kvs: Vec<KeyValue>, revision: i64) -> Self {
        let objects = kvs
            .into_iter()
            .filter(|kv| relevant(&kv.key))
            .map(|kv| (kv.key, kv.value))
            .collect();
        Snapshot { objects, revision }
    }

    /// Applies one watched event. Returns whether the dataplane may need to change (a relevant
    /// key whose value actually changed).
    pub fn apply(&mut self, ev: &Event) -> bool {
        // Irrelevant keys (e.g. agents' status records) neither wake the agent nor advance
        // its revision: otherwise every status write would trigger another one.
        if !relevant(ev.key()) {
            return false;
        }
        self.revision = self.revision.max(ev.revision());
        match ev {
            Event::Put(kv) => {
                if self.objects.get(&kv.key) == Some(&kv.value) {
                    return false;
                }
                self.objects.insert(kv.key.clone(), kv.value.clone());
                true
            }
            Event::Delete { key, .. } => self.objects.remove(key).is_some(),
        }
    }

    /// Number of relevant keys.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Decodes the snapshot. Undecodable values are reported (key and error) and skipped: one
    /// bad record must not take the node's whole dataplane down.
    pub fn decode(&self) -> Decoded {
        let mut d = Decoded::default();
        for (key, value) in &self.objects {
            if key.starts_with(CLUSTER_PREFIX) {
                match serde_json::from_slice::<Object>(value) {
                    Ok(Object::Namespace(n)) => d.cluster.namespaces.push(n),
                    Ok(Object::Pod(p)) => d.cluster.pods.push(p),
                    Ok(Object::NetworkPolicy(p)) => d.cluster.policies.push(p),
                    Ok(Object::Service(s)) => d.cluster.services.push(s),
                    Err(e) => d.errors.push(format!("{key}: {e}")),
                }
            } else if key.starts_with(NODES_PREFIX) {
                match serde_json::from_slice::<NodeRecord>(value) {
                    Ok(n) => d.nodes.push(NodeInfo {
                        name: n.name,
                        underlay: n.underlay,
                    }),
                    Err(e) => d.errors.push(format!("{key}: {e}")),
                }
            } else {
                match serde_json::from_slice::<BlockRecord>(value) {
                    Ok(b) => {
                        d.blocks.push(BlockInfo {
                            cidr: b.cidr,
                            node: b.affinity.clone(),
                        });
                        d.ipam.push(b);
                    }
                    Err(e) => d.errors.push(format!("{key}: {e}")),
                }
            }
        }
        d.cluster.ensure_namespaces();
        d
    }
}

/// The decoded snapshot.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    pub cluster: Cluster,
    pub nodes: Vec<NodeInfo>,
    pub blocks: Vec<BlockInfo>,
    /// The IPAM block records (allocations included), for the IPAM metrics.
    pub ipam: Vec<BlockRecord>,
    /// `key: error` for every value that could not be decoded.
    pub errors: Vec<String>,
}

/// How this node is set up (from the agent's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSetup {
    pub name: String,
    pub underlay: std::net::Ipv4Addr,
    pub underlay_mtu: u32,
    pub encapsulation: furynet_dataplane::routing::plan::Encapsulation,
}

/// This node's desired dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub nft: NftState,
    /// What reading our nftables table back must show.
    pub view: TableView,
    pub routing: RoutingPlan,
    /// Pods scheduled on this node that have addresses but no local interface yet.
    pub missing_endpoints: Vec<String>,
    pub endpoints: usize,
    /// NetworkPolicies that isolate at least one local endpoint.
    pub policies: usize,
}

/// Computes the desired state of `node` from the decoded snapshot and the local pod routes
/// (pod address → host interface, read from the kernel).
pub fn desired(d: &Decoded, node: &NodeSetup, local: &HashMap<IpAddr, String>) -> Desired {
    let engine = Engine::new(&d.cluster);
    let mut ifaces = HashMap::new();
    let mut missing = Vec::new();
    for p in &d.cluster.pods {
        if p.host_network {
            continue;
        }
        match p.ips.iter().find_map(|ip| local.get(ip)) {
            Some(dev) => {
                ifaces.insert(p.key(), dev.clone());
            }
            None if p.node_name.as_deref() == Some(node.name.as_str()) && !p.ips.is_empty() => {
                missing.push(p.key());
            }
            None => {}
        }
    }
    // Policies in force here: those isolating a local endpoint in either direction.
    let mut active = std::collections::BTreeSet::new();
    for key in ifaces.keys() {
        let Some((ns, name)) = key.split_once('/') else {
            continue;
        };
        if let Some(id) = engine.find(ns, name) {
            for d in [
                furynet_model::Direction::Ingress,
                furynet_model::Direction::Egress,
            ] {
                active.extend(engine.isolating_policies(id, d).iter().copied());
            }
        }
    }
    let nft = furynet_calc::compute(&engine, &node.name, &ifaces);
    let (chains, sets) = nft.summary();
    let routing = plan(&PlanInput {
        node: node.name.clone(),
        underlay: node.underlay,
        underlay_mtu: node.underlay_mtu,
        nodes: d.nodes.clone(),
        blocks: d.blocks.clone(),
        encapsulation: node.encapsulation.clone(),
    });
    Desired {
        view: TableView { chains, sets },
        nft,
        routing,
        missing_endpoints: missing,
        endpoints: ifaces.len(),
        policies: active.len(),
    }
}

#[cfg(test)]
mod tests;

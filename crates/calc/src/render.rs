//! `nft -f` scripts: the whole table, a resync (delete + recreate in one transaction), and the
//! minimal delta between two states.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::compute::{NftState, SetDef};
use crate::{FAMILY, TABLE};

const FORWARD: [&str; 4] = [
    "ct state established,related accept",
    "ct state invalid drop",
    "iifname vmap @from_pod",
    "oifname vmap @to_pod",
];
/// The node itself (kubelet probes, node agents) may reach its pods: Kubernetes requires it
/// and Calico allows it by default. This chain only makes that explicit.
const OUTPUT: [&str; 1] = ["oifname \"fny*\" accept comment \"host to local pods\""];

impl NftState {
    /// What reading the table back should show: rules per chain (base chains included) and
    /// elements per set or map. The driver compares this with the kernel to detect drift.
    pub fn summary(&self) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
        let mut chains: BTreeMap<String, usize> = self
            .chains()
            .into_iter()
            .map(|(name, rules)| (name, rules.len()))
            .collect();
        chains.insert("forward".into(), FORWARD.len());
        chains.insert("output".into(), OUTPUT.len());
        let mut sets: BTreeMap<String, usize> = self
            .sets
            .iter()
            .map(|(name, def)| (name.clone(), def.elements.len()))
            .collect();
        sets.insert("from_pod".into(), self.pods.len());
        sets.insert("to_pod".into(), self.pods.len());
        (chains, sets)
    }
}

fn set_body(def: &SetDef, inline: bool) -> String {
    let sep = if inline { " " } else { "\n\t\t" };
    let mut s = format!("type {};", def.kind.nft_type());
    if def.kind.interval() {
        let _ = write!(s, "{sep}flags interval;");
    }
    s
}

fn vmap_elements(map: &BTreeMap<String, String>) -> Vec<String> {
    map.iter()
        .map(|(iface, chain)| format!("\"{iface}\" : jump {chain}"))
        .collect()
}

/// The whole table as one `table inet furynet { ... }` block (declarative; nft creates what is
/// missing). Sets come first, then the pod chains, then the maps that jump to them, then the
/// base chains.
pub fn render_full(state: &NftState) -> String {
    let mut s = format!("table {FAMILY} {TABLE} {{\n");
    for (name, def) in &state.sets {
        let _ = writeln!(s, "\tset {name} {{\n\t\t{}", set_body(def, false));
        let _ = writeln!(s, "\t\telements = {{ {} }}\n\t}}", def.elements.join(", "));
    }
    for (name, rules) in state.chains() {
        let _ = writeln!(s, "\tchain {name} {{");
        for r in rules {
            let _ = writeln!(s, "\t\t{r}");
        }
        s.push_str("\t}\n");
    }
    for (map, egress) in [("from_pod", true), ("to_pod", false)] {
        let _ = writeln!(s, "\tmap {map} {{\n\t\ttype ifname : verdict;");
        let elems = vmap_elements(&state.vmap(egress));
        if !elems.is_empty() {
            let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(",\n\t\t\t"));
        }
        s.push_str("\t}\n");
    }
    for (name, hook, rules) in [
        ("forward", "forward", &FORWARD[..]),
        ("output", "output", &OUTPUT[..]),
    ] {
        let _ = writeln!(
            s,
            "\tchain {name} {{\n\t\ttype filter hook {hook} priority filter; policy accept;"
        );
        for r in rules {
            let _ = writeln!(s, "\t\t{r}");
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

/// A full resync: delete our table (creating it first so the delete cannot fail) and recreate
/// it, in one transaction. Only table `inet furynet` is touched.
pub fn render_resync(state: &NftState) -> String {
    format!(
        "add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n{}",
        render_full(state)
    )
}

/// The minimal transaction from `old` to `new`, in an order the kernel accepts: new sets (with
/// their elements) before the rules that use them; new chains before the rules and map
/// elements that jump to them; changed chains flushed and refilled; map elements re-pointed;
/// then removed chains (flushed, deleted) and, last, the sets nothing uses any more. Sets are
/// named by their content, so a set never changes: it is added or deleted. Empty when nothing
/// changed.
pub fn render_delta(old: &NftState, new: &NftState) -> String {
    let t = format!("{FAMILY} {TABLE}");
    let mut s = String::new();
    for (name, def) in &new.sets {
        if old.sets.contains_key(name) {
            continue;
        }
        let _ = writeln!(s, "add set {t} {name} {{ {} }}", set_body(def, true));
        let _ = writeln!(
            s,
            "add element {t} {name} {{ {} }}",
            def.elements.join(", ")
        );
    }
    let old_chains = old.chains();
    let new_chains = new.chains();
    for name in new_chains.keys() {
        if !old_chains.contains_key(name) {
            let _ = writeln!(s, "add chain {t} {name}");
        }
    }
    for (name, rules) in &new_chains {
        match old_chains.get(name) {
            Some(before) if before == rules => continue,
            Some(_) => {
                let _ = writeln!(s, "flush chain {t} {name}");
            }
            None => {}
        }
        for r in *rules {
            let _ = writeln!(s, "add rule {t} {name} {r}");
        }
    }
    for (map, egress) in [("from_pod", true), ("to_pod", false)] {
        let before = old.vmap(egress);
        let after = new.vmap(egress);
        for (iface, chain) in &before {
            if after.get(iface) != Some(chain) {
                let _ = writeln!(s, "delete element {t} {map} {{ \"{iface}\" }}");
            }
        }
        for (iface, chain) in &after {
            if before.get(iface) != Some(chain) {
                let _ = writeln!(s, "add element {t} {map} {{ \"{iface}\" : jump {chain} }}");
            }
        }
    }
    for name in old_chains.keys() {
        if !new_chains.contains_key(name) {
            let _ = writeln!(s, "flush chain {t} {name}\ndelete chain {t} {name}");
        }
    }
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            let _ = writeln!(s, "delete set {t} {name}");
        }
    }
    s
}

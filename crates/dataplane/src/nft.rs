//! The nftables driver: applies `nft -f` scripts (rendered by `furynet-calc`) atomically, reads
//! our table back to detect drift, and falls back to a full resync of our table — never any
//! other table. Thin on purpose: all the policy logic is in the pure calc crate.
//!
//! Why the `nft` binary and not native netlink: one `nft -f` input is one netlink batch, so a
//! whole ruleset or delta commits atomically (all or nothing), and what we apply is the same
//! readable text the golden tests pin. See `docs/dataplane-nftables.md`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Family and name of the table we own.
pub const NFT_FAMILY: &str = "inet";
/// Name of the table we own (the ownership marker).
pub const NFT_TABLE: &str = "furynet";

/// A failed nftables operation.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` (or `ip netns exec`) could not be run at all; retryable only once it is installed.
    #[error("{op}: cannot run `{command}`: {source} (is nftables installed and are we root?)")]
    Spawn {
        op: &'static str,
        command: String,
        #[source]
        source: io::Error,
    },
    /// `nft` refused the input; nothing of the transaction was applied.
    #[error("{op} (table {NFT_FAMILY} {NFT_TABLE}{netns}): nft refused the transaction, nothing applied: {stderr}")]
    Rejected {
        op: &'static str,
        netns: String,
        stderr: String,
    },
    /// `nft -j` printed something we could not read.
    #[error("read back table {NFT_FAMILY} {NFT_TABLE}: unexpected JSON from nft: {detail}")]
    Parse { detail: String },
    /// After a full resync the table still does not read back as expected.
    #[error("table {NFT_FAMILY} {NFT_TABLE}{netns} does not match the desired state after a full resync: {detail}")]
    StillDrifted { netns: String, detail: String },
}

impl NftError {
    /// Whether retrying later may help (everything but a bug in the rendered script).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, NftError::Parse { .. })
    }
}

/// What our table holds, as far as drift detection cares: rules per chain and elements per
/// set or map, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableView {
    pub chains: BTreeMap<String, usize>,
    pub sets: BTreeMap<String, usize>,
}

impl TableView {
    /// A short description of how `self` (the kernel) differs from `want`.
    pub fn diff(&self, want: &TableView) -> String {
        let mut out = Vec::new();
        for (kind, have, want) in [
            ("chain", &self.chains, &want.chains),
            ("set", &self.sets, &want.sets),
        ] {
            for (name, n) in want {
                match have.get(name) {
                    None => out.push(format!("{kind} {name} missing")),
                    Some(h) if h != n => out.push(format!("{kind} {name} has {h}, want {n}")),
                    Some(_) => {}
                }
            }
            for name in have.keys().filter(|k| !want.contains_key(*k)) {
                out.push(format!("{kind} {name} unexpected"));
            }
        }
        out.join("; ")
    }
}

/// How [`Nft::sync`] brought the table to the desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The kernel already matched and the delta was empty.
    Unchanged,
    /// The delta was applied on top of the expected previous state.
    Delta,
    /// The table was deleted and recreated in one transaction.
    Resync,
}

/// Runs `nft`, in the current network namespace or (for tests and the lab) in a named one.
#[derive(Debug, Clone, Default)]
pub struct Nft {
    netns: Option<String>,
}

impl Nft {
    /// `nft` in the caller's network namespace.
    pub fn new() -> Self {
        Nft { netns: None }
    }

    /// `nft` inside the named network namespace (`ip netns exec NAME nft ...`).
    pub fn in_netns(name: impl Into<String>) -> Self {
        Nft {
            netns: Some(name.into()),
        }
    }

    fn netns_label(&self) -> String {
        self.netns
            .as_ref()
            .map(|n| format!(" in netns {n}"))
            .unwrap_or_default()
    }

    fn command(&self, args: &[&str]) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]).args(args);
                c
            }
            None => {
                let mut c = Command::new("nft");
                c.args(args);
                c
            }
        }
    }

    fn run(
        &self,
        op: &'static str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, NftError> {
        let mut cmd = self.command(args);
        let command = format!("{cmd:?}");
        let spawn_err = |source| NftError::Spawn {
            op,
            command: command.clone(),
            source,
        };
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // nft reads its whole input before it answers, so writing first cannot deadlock.
            pipe.write_all(text.as_bytes()).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if !out.status.success() {
            return Err(NftError::Rejected {
                op,
                netns: self.netns_label(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Applies `script` as one transaction (`nft -f -`): all of it or, on error, none of it.
    pub fn apply(&self, script: &str) -> Result<(), NftError> {
        if script.trim().is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.run("apply", &["-f", "-"], Some(script))?;
        tracing::debug!(
            bytes = script.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "nft transaction applied"
        );
        Ok(())
    }

    /// Reads our table back; `None` when it does not exist.
    pub fn read_table(&self) -> Result<Option<TableView>, NftError> {
        let out = match self.run(
            "read back",
            &["-j", "list", "table", NFT_FAMILY, NFT_TABLE],
            None,
        ) {
            Ok(out) => out,
            Err(NftError::Rejected { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        parse_table(&out).map(Some)
    }

    /// Brings our table to the desired state. When the kernel still holds `previous` (what we
    /// applied last), only `delta` is applied; otherwise — first run, someone flushed or edited
    /// our table, or the delta failed — the table is rebuilt with `resync` (which must delete
    /// and recreate our table in one transaction). The result is read back and checked against
    /// `expected`.
    pub fn sync(
        &self,
        previous: Option<&TableView>,
        delta: &str,
        resync: &str,
        expected: &TableView,
    ) -> Result<Applied, NftError> {
        let current = self.read_table()?;
        if let (Some(prev), Some(cur)) = (previous, current.as_ref()) {
            if prev == cur {
                if delta.trim().is_empty() {
                    return Ok(Applied::Unchanged);
                }
                match self.apply(delta) {
                    Ok(()) => match self.read_table()? {
                        Some(now) if &now == expected => return Ok(Applied::Delta),
                        now => tracing::warn!(
                            drift = %now.unwrap_or_default().diff(expected),
                            "table differs after delta; full resync"
                        ),
                    },
                    Err(e) => tracing::warn!(error = %e, "delta failed; full resync"),
                }
            } else {
                tracing::warn!(drift = %cur.diff(prev), "our nftables table drifted; full resync");
            }
        }
        self.apply(resync)?;
        match self.read_table()? {
            Some(now) if &now == expected => Ok(Applied::Resync),
            now => Err(NftError::StillDrifted {
                netns: self.netns_label(),
                detail: now.map_or_else(|| "table missing".to_string(), |n| n.diff(expected)),
            }),
        }
    }
}

/// Parses `nft -j list table` output into a [`TableView`].
pub fn parse_table(json: &str) -> Result<TableView, NftError> {
    let v: Value = serde_json::from_str(json).map_err(|e| NftError::Parse {
        detail: e.to_string(),
    })?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| NftError::Parse {
            detail: "no `nftables` array".into(),
        })?;
    let mut view = TableView::default();
    let name_of = |o: &Value| {
        o.get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| NftError::Parse {
                detail: format!("object without a name: {o}"),
            })
    };
    for item in items {
        if let Some(c) = item.get("chain") {
            view.chains.entry(name_of(c)?).or_insert(0);
        } else if let Some(s) = item.get("set").or_else(|| item.get("map")) {
            let n = s.get("elem").and_then(Value::as_array).map_or(0, Vec::len);
            view.sets.insert(name_of(s)?, n);
        } else if let Some(r) = item.get("rule") {
            let chain = r
                .get("chain")
                .and_then(Value::as_str)
                .ok_or_else(|| NftError::Parse {
                    detail: format!("rule without a chain: {r}"),
                })?;
            *view.chains.entry(chain.to_string()).or_insert(0) += 1;
        }
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_read_back() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
          {"table":{"family":"inet","name":"furynet","handle":1}},
          {"set":{"family":"inet","name":"p4-x","table":"furynet","type":"ipv4_addr","elem":["10.0.0.1",{"prefix":{"addr":"10.1.0.0","len":16}}]}},
          {"map":{"family":"inet","name":"to_pod","table":"furynet","type":"ifname","map":"verdict"}},
          {"chain":{"family":"inet","table":"furynet","name":"forward","handle":2}},
          {"chain":{"family":"inet","table":"furynet","name":"pod-a-ingress","handle":3}},
          {"rule":{"family":"inet","table":"furynet","chain":"forward","handle":4,"expr":[]}},
          {"rule":{"family":"inet","table":"furynet","chain":"forward","handle":5,"expr":[]}}]}"#;
        let v = parse_table(json).unwrap();
        assert_eq!(v.chains["forward"], 2);
        assert_eq!(v.chains["pod-a-ingress"], 0);
        assert_eq!(v.sets["p4-x"], 2);
        assert_eq!(v.sets["to_pod"], 0);
        let mut want = v.clone();
        want.chains.insert("forward".into(), 3);
        assert_eq!(v.diff(&want), "chain forward has 2, want 3");
        assert!(parse_table("{}").is_err());
    }
}

//! Policy programming latency: the time from a NetworkPolicy write in the datastore to the
//! rule being live on the node (a probe flips), measured on a lab running real agents.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use furynet_agent::keys::Object;
use furynet_model::{
    LabelSelector, NetworkPolicy, Peer, PolicyPort, PolicyRule, PolicyTypes, PortSpec, Protocol,
};
use furynet_policy::synth::{cluster, SynthSpec};
use furynet_policy::Engine;
use serde::Serialize;

use super::netns::{Ns, Res};
use super::state::LabState;
use super::{cluster as lab, Encap};

#[derive(Debug, Serialize)]
pub struct Report {
    pub pods: usize,
    pub policies: usize,
    pub nodes: usize,
    pub samples: usize,
    /// Allow policy deleted → the next new connection is dropped.
    pub deny_median_ms: f64,
    pub deny_p99_ms: f64,
    /// Allow policy written → a new connection succeeds.
    pub allow_median_ms: f64,
    pub allow_p99_ms: f64,
}

fn quantile(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Polls `dst` from `from` with new TCP connections until the outcome is `want_open`.
fn until(from: &Ns, dst: SocketAddr, want_open: bool, limit: Duration) -> Res<Duration> {
    let start = Instant::now();
    from.enter(move || loop {
        let open = TcpStream::connect_timeout(&dst, Duration::from_millis(15)).is_ok();
        if open == want_open {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(format!("{dst}: no flip within {limit:?}"));
        }
        if open {
            std::thread::sleep(Duration::from_millis(1));
        }
    })?
}

pub fn run(pods: usize, policies: usize, nodes: u8, samples: usize) -> Res<Report> {
    let mut input = cluster(&SynthSpec {
        pods,
        namespaces: 10,
        policies,
        seed: 0x5eed_f00d,
    });
    input.pods.iter_mut().for_each(|p| {
        p.ips.clear();
        p.node_name = None;
    });
    let opts = lab::UpOptions {
        nodes: usize::from(nodes),
        datastore: None,
        encapsulation: Encap::Vxlan,
        timeout: Duration::from_secs(600),
        resync_interval: 30,
        monitoring: None,
        fanout: 0,
        dual_stack: false,
    };
    let mut state = lab::up(&opts).inspect_err(|_| {
        let _ = super::netns::down();
        LabState::remove();
    })?;
    let result = (|| {
        let ds = lab::open_datastore(&state)?;
        super::progress(&format!("wiring {pods} pods, {policies} policies"));
        let ch = lab::apply(&mut state, ds.as_ref(), &input)?;
        lab::wait_for_agents(&state, ds.as_ref(), ch.revision, opts.timeout)?;
        let stored = lab::stored_cluster(ds.as_ref())?;
        let engine = Engine::new(&stored);
        // A cross-node TCP connection the policies deny and that one more policy (allow the
        // client's labels from its namespace on the port) turns on.
        let allow_for = |client: &furynet_model::Pod, server: &furynet_model::Pod, port: u16| {
            let mut ns_labels = furynet_model::Labels::new();
            ns_labels.insert(
                furynet_model::NAMESPACE_NAME_LABEL.to_string(),
                client.namespace.clone(),
            );
            Object::NetworkPolicy(NetworkPolicy {
                namespace: server.namespace.clone(),
                name: "bench-allow".into(),
                pod_selector: LabelSelector {
                    match_labels: server.labels.clone(),
                    match_expressions: vec![],
                },
                ingress: vec![PolicyRule {
                    peers: vec![Peer::Selector {
                        namespace_selector: Some(LabelSelector {
                            match_labels: ns_labels,
                            match_expressions: vec![],
                        }),
                        pod_selector: Some(LabelSelector {
                            match_labels: client.labels.clone(),
                            match_expressions: vec![],
                        }),
                    }],
                    ports: vec![PolicyPort {
                        protocol: Protocol::Tcp,
                        port: Some(PortSpec::Number(port)),
                        end_port: None,
                    }],
                }],
                egress: vec![],
                policy_types: PolicyTypes {
                    ingress: true,
                    egress: false,
                },
            })
        };
        let n = engine.pods().len();
        let all = engine.pods();
        let (c, s, port) = (0..n)
            .flat_map(|s| (0..n).map(move |c| (c, s)))
            .filter(|&(c, s)| c != s && all[c].node_name != all[s].node_name)
            .filter_map(|(c, s)| {
                all[s]
                    .declared_ports()
                    .into_iter()
                    .find(|&(p, proto)| proto == Protocol::Tcp && !engine.allowed(c, s, p, proto))
                    .map(|(p, _)| (c, s, p))
            })
            .take(400)
            .find(|&(c, s, p)| {
                let mut with = stored.clone();
                if let Object::NetworkPolicy(np) = allow_for(&all[c], &all[s], p) {
                    with.policies.push(np);
                }
                Engine::new(&with).allowed(c, s, p, Protocol::Tcp)
            })
            .ok_or("no denied cross-node TCP connection that one allow policy turns on")?;
        let (client, server) = (&engine.pods()[c], &engine.pods()[s]);
        let from = state
            .pods
            .iter()
            .find(|p| p.key() == client.key())
            .map(|p| Ns::existing(&p.netns))
            .ok_or("client not in the lab")?;
        let ip = *server.ips.first().ok_or("server without address")?;
        let dst = SocketAddr::new(ip, port);
        let allow = allow_for(client, server, port);
        super::progress(&format!(
            "measuring {} -> {} {port}/TCP",
            client.key(),
            server.key()
        ));
        until(&from, dst, false, Duration::from_secs(10))?;
        let (mut deny_t, mut allow_t) = (Vec::new(), Vec::new());
        for i in 0..samples {
            super::progress(&format!("sample {}/{samples}", i + 1));
            let rev = ds
                .create(&allow.key(), &allow.encode(), None)
                .map_err(|e| e.to_string())?;
            allow_t.push(until(&from, dst, true, Duration::from_secs(10))?);
            // Let every agent settle before the next write.
            lab::wait_for_agents(&state, ds.as_ref(), rev, opts.timeout)?;
            let rev = ds.delete(&allow.key(), None).map_err(|e| e.to_string())?;
            deny_t.push(until(&from, dst, false, Duration::from_secs(10))?);
            lab::wait_for_agents(&state, ds.as_ref(), rev, opts.timeout)?;
        }
        Ok(Report {
            pods,
            policies,
            nodes: usize::from(nodes),
            samples,
            deny_median_ms: quantile(&mut deny_t, 0.5),
            deny_p99_ms: quantile(&mut deny_t, 0.99),
            allow_median_ms: quantile(&mut allow_t, 0.5),
            allow_p99_ms: quantile(&mut allow_t, 0.99),
        })
    })();
    let _ = super::netns::down();
    LabState::remove();
    result
}

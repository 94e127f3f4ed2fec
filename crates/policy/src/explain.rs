//! Why a connection is allowed or denied: the isolating policies and the admitting rules.

use furynet_model::{Direction, Protocol};
use serde::Serialize;

use crate::engine::{Engine, PodId};

/// A rule of a policy: `policy` is `namespace/name`, `rule` the index in its ingress/egress list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    pub policy: String,
    pub direction: Direction,
    pub rule: usize,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = match self.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        write!(f, "{} {list}[{}]", self.policy, self.rule)
    }
}

/// One side of a connection: egress of the source, or ingress of the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SideExplanation {
    /// Policies (`namespace/name`) that select the pod for this direction. Empty: not isolated.
    pub isolated_by: Vec<String>,
    /// Every rule that admits the connection.
    pub allowed_by: Vec<RuleRef>,
    pub allowed: bool,
}

/// The whole story of one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub protocol: Protocol,
    pub allowed: bool,
    /// Traffic from a pod to itself is always allowed, whatever the policies say.
    pub same_pod: bool,
    pub egress: SideExplanation,
    pub ingress: SideExplanation,
}

impl Engine {
    /// Explains the verdict of [`Engine::allowed`] for the same arguments. `None` for unknown
    /// pod ids.
    pub fn explain(
        &self,
        src: PodId,
        dst: PodId,
        port: u16,
        protocol: Protocol,
    ) -> Option<Explanation> {
        let (s, d) = (self.pod(src)?, self.pod(dst)?);
        let side = |direction: Direction| {
            let subject = if direction == Direction::Egress {
                src
            } else {
                dst
            };
            let peer = if direction == Direction::Egress {
                dst
            } else {
                src
            };
            let isolated_by: Vec<String> = self
                .isolating_policies(subject, direction)
                .iter()
                .map(|&p| self.policies[p].key.clone())
                .collect();
            let allowed_by: Vec<RuleRef> = self
                .rules_for(subject, direction)
                .iter()
                .filter(|&&r| self.rule_admits(r, dst, peer, port, protocol))
                .map(|&r| {
                    let rule = &self.rules[r];
                    RuleRef {
                        policy: self.policies[rule.policy].key.clone(),
                        direction,
                        rule: rule.index,
                    }
                })
                .collect();
            let allowed = isolated_by.is_empty() || !allowed_by.is_empty();
            SideExplanation {
                isolated_by,
                allowed_by,
                allowed,
            }
        };
        let egress = side(Direction::Egress);
        let ingress = side(Direction::Ingress);
        let same_pod = src == dst;
        Some(Explanation {
            src: s.key(),
            dst: d.key(),
            port,
            protocol,
            allowed: same_pod || (egress.allowed && ingress.allowed),
            same_pod,
            egress,
            ingress,
        })
    }
}

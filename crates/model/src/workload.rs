//! Workload expansion: Deployments, ReplicaSets, StatefulSets, DaemonSets and Jobs into pods.

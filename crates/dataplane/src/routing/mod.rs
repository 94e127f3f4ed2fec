//! The node agent's routing dataplane: a pure [`plan`] of the desired state, and a thin
//! [`reconcile`] that diffs it with the kernel and applies the minimal change.

pub mod ipcmd;
pub mod netlink;
pub mod plan;
pub mod reconcile;

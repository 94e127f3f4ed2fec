//! DEL, GC and STATUS.
//!
//! DEL needs nothing but the container id and interface name: the host veth name is derived
//! from them, taking it away cuts the pod off (and deleting it removes the peer, the addresses
//! and the routes), and the allocation is keyed by them too. So DEL succeeds when the
//! attachment is already gone, the namespace is gone, `CNI_NETNS` is unset or the container was
//! never known, and it still releases the address. If the host veth exists but cannot be taken
//! out of service, DEL fails *without* releasing, so an address is never handed to another pod
//! while still routed here; the runtime retries.
//!
//! With `teardown: background` (the default) DEL sets the host veth down and into
//! [`RETIRED_GROUP`] (one netlink request: no traffic either way, no routes) and starts the
//! reaper, which deletes every retired veth in one batch after DEL has returned; the kernel's
//! unregistering of a device waits for RCU grace periods (20-40 ms), more than the whole rest
//! of DEL. With `teardown: wait` DEL deletes the veth itself, like the reference plugins.

use tracing::{debug, info, warn};

use crate::alloc::{AllocError, Handle};
use crate::config::{NetConf, Teardown};
use crate::env::AttachEnv;
use crate::error::{code, CniError};
use crate::plugin::{alloc_error, kernel_error, Deps};
use crate::wiring::{self, host_veth_name, unwire, RETIRED_GROUP};

pub(crate) fn del(
    conf: &NetConf,
    node: &str,
    env: &AttachEnv,
    deps: &Deps<'_>,
) -> Result<(), CniError> {
    let host_if = host_veth_name(&env.container_id, &env.ifname);
    let removed = match conf.teardown {
        Teardown::Wait => unwire(deps.kernel, &host_if),
        Teardown::Background => wiring::retire(deps.kernel, &host_if),
    }
    .map_err(|e| {
        kernel_error(
            "cannot remove the host interface; the address stays reserved until DEL succeeds",
            e,
        )
    })?;
    let retired = removed && conf.teardown == Teardown::Background;
    match (removed, conf.teardown) {
        (false, _) => debug!(host_if = %host_if, "host interface already gone"),
        (true, Teardown::Wait) => {
            info!(host_if = %host_if, "removed host interface (and the pod side with it)")
        }
        (true, Teardown::Background) => {
            info!(host_if = %host_if, "host interface out of service; the reaper deletes it")
        }
    }
    let released = release(conf, node, env, deps);
    // Started last, so its work competes with nothing DEL still has to do; also when the
    // release failed (the veth is retired either way, and the runtime will retry DEL).
    if retired {
        (deps.start_reaper)();
    }
    released
}

fn release(conf: &NetConf, node: &str, env: &AttachEnv, deps: &Deps<'_>) -> Result<(), CniError> {
    let alloc = (deps.allocator)(conf, node).map_err(alloc_error)?;
    let handle = Handle::new(&conf.name, &env.container_id, &env.ifname);
    if alloc.release(&handle).map_err(alloc_error)? {
        info!(handle = %handle, "released addresses");
    } else {
        debug!(handle = %handle, "no allocation to release");
    }
    Ok(())
}

/// Releases every allocation of this network that is not a valid attachment, then removes the
/// host veths of the released ones (the runtime runs GC exclusively of ADD and DEL, so nothing
/// can take a released address in between). Keeps going on errors and reports them all.
pub(crate) fn gc(conf: &NetConf, node: &str, deps: &Deps<'_>) -> Result<(), CniError> {
    let Some(valid) = &conf.valid_attachments else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            "GC needs cni.dev/valid-attachments (the list of attachments to keep)",
        ));
    };
    let keep: Vec<Handle> = valid
        .iter()
        .map(|a| Handle::new(&conf.name, &a.container_id, &a.ifname))
        .collect();
    let alloc = (deps.allocator)(conf, node).map_err(alloc_error)?;
    let released = alloc.gc(&keep).map_err(alloc_error)?;
    let mut failures = Vec::new();
    for h in &released {
        let host_if = host_veth_name(&h.container_id, &h.ifname);
        match unwire(deps.kernel, &host_if) {
            Ok(removed) => {
                info!(handle = %h, host_if = %host_if, removed, "collected stale attachment")
            }
            Err(e) => {
                warn!(handle = %h, error = %e, "cannot remove stale host interface");
                failures.push(format!("{host_if} ({h}): {e}"));
            }
        }
    }
    // Retired veths whose reaper did not finish (killed, or a crash) go now.
    if let Err(e) = wiring::reap(deps.kernel) {
        warn!(error = %e, "cannot delete the retired host interfaces");
        failures.push(format!("group {RETIRED_GROUP}: {e}"));
    }
    info!(kept = keep.len(), released = released.len(), "GC done");
    if failures.is_empty() {
        Ok(())
    } else {
        Err(kernel_error(
            "GC released the stale addresses but could not remove every stale interface",
            failures.join("; "),
        ))
    }
}

/// Ready for ADDs when the datastore is usable and every family has a free address.
pub(crate) fn status(conf: &NetConf, node: &str, deps: &Deps<'_>) -> Result<(), CniError> {
    let unavailable = |e: AllocError| {
        CniError::new(
            code::NOT_AVAILABLE,
            "plugin not available: cannot serve ADD",
            e.to_string(),
        )
    };
    let alloc = (deps.allocator)(conf, node).map_err(unavailable)?;
    alloc.status().map_err(unavailable)
}

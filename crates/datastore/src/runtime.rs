//! The tokio runtime a backend's client runs on (the trait is synchronous; etcd-client and
//! kube-rs are async).

use std::future::Future;
use std::sync::mpsc::sync_channel;

use tokio::runtime::{Handle, Runtime};

use crate::error::{Error, Result};

/// A backend client's runtime. Shut down without waiting when the last user (the store, a
/// watch thread) lets go, so dropping a store never blocks or panics, even inside async code,
/// and a watch outliving its store keeps working until it is dropped.
pub(crate) struct OwnedRuntime {
    handle: Handle,
    runtime: Option<Runtime>,
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl OwnedRuntime {
    pub(crate) fn new(runtime: Runtime) -> Self {
        OwnedRuntime {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        }
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Run `fut` to completion on the calling thread (I/O is driven by the worker thread).
    /// tokio forbids this on a thread that is already running async code, so refuse there
    /// instead of panicking.
    pub(crate) fn block_on<F: Future>(&self, op: &'static str, fut: F) -> Result<F::Output> {
        if Handle::try_current().is_ok() {
            return Err(Error::InvalidArgument {
                op,
                reason: "the datastore API blocks; from async code call it inside tokio::task::spawn_blocking".into(),
            });
        }
        Ok(self.handle.block_on(fut))
    }

    /// Run `fut` on the runtime and wait for it from this thread. Unlike
    /// [`OwnedRuntime::block_on`] this works from any thread, also one of another runtime
    /// (it blocks that thread while waiting). `Err` when the runtime is gone.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> std::result::Result<T, String> {
        let (tx, rx) = sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| "the client runtime stopped".to_string())
    }
}

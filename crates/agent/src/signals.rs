//! SIGTERM / SIGINT set a stop flag (the loop checks it at least every 500 ms).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Installs the handlers (before returning) and sets `stop` when either signal arrives.
pub fn stop_on_term(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut term, mut int) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            tracing::info!("signal received; stopping");
            stop.store(true, Ordering::Relaxed);
        })?;
    Ok(())
}

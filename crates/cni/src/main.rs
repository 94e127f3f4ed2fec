//! `furynet-cni`: the CNI plugin binary. Reads the `CNI_*` environment and the network
//! configuration on stdin, prints the result (or the error object) on stdout, logs to the
//! configured `logFile` or stderr, never to stdout.

use std::fs::{self, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::Mutex;

use furynet_cni::config::{LogConf, NetConf};
use furynet_cni::error::{code, CniError};
use furynet_cni::{log_conf_hint, open_allocator, run, Deps};
use furynet_dataplane::LinuxKernel;
use tracing::Level;

fn main() -> ExitCode {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let mut stdin = Vec::new();
    let input = std::io::stdin();
    // Don't wait for a terminal: VERSION needs no input, and without CNI_COMMAND the answer is
    // an error whatever stdin holds.
    let skip = command.is_empty() || (command == "VERSION" && input.is_terminal());
    if !skip {
        if let Err(e) = input.lock().read_to_end(&mut stdin) {
            let err = CniError::new(
                code::IO,
                "cannot read the network configuration",
                format!("reading stdin: {e}"),
            );
            return emit(&format!("{}\n", err.to_json("1.1.0")), 1);
        }
    }
    init_logging(&log_conf_hint(&stdin));

    let kernel = LinuxKernel::new();
    let allocator = |conf: &NetConf, node: &str| open_allocator(conf, node);
    let hostname = || {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
    };
    let deps = Deps {
        kernel: &kernel,
        allocator: &allocator,
        hostname: &hostname,
    };
    let started = std::time::Instant::now();
    let outcome = run(&|k| std::env::var(k).ok(), &stdin, &deps);
    let exit = emit(&outcome.stdout, outcome.exit_code);
    record_call(
        &stdin,
        &command,
        outcome.exit_code == 0,
        started.elapsed(),
        &hostname,
    );
    exit
}

/// Appends one line for this call to `metricsFile` (best effort, never changes the result):
/// the node agent folds these into `furynet_cni_*` metrics, also the ones made while it was
/// down. See `docs/metrics.md`.
fn record_call(
    stdin: &[u8],
    verb: &str,
    ok: bool,
    took: std::time::Duration,
    hostname: &dyn Fn() -> Option<String>,
) {
    let (Some(path), node) = furynet_cni::plugin::metrics_hint(stdin) else {
        return;
    };
    let Some(node) = node.or_else(hostname) else {
        return;
    };
    let line = furynet_cni::calls::CallRecord {
        node,
        verb: if verb.is_empty() {
            "none".into()
        } else {
            verb.to_string()
        },
        ok,
        seconds: took.as_secs_f64(),
    }
    .to_line();
    if let Some(dir) = path.parent() {
        let _ = fs::create_dir_all(dir);
    }
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&path) {
        let _ = f.write_all(line.as_bytes());
    }
}

fn emit(s: &str, exit: u8) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(s.as_bytes()).and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::from(exit),
        Err(_) => ExitCode::FAILURE,
    }
}

fn init_logging(log: &LogConf) {
    let level = match log.level.as_str() {
        "error" => Level::ERROR,
        "warn" => Level::WARN,
        "debug" => Level::DEBUG,
        "trace" => Level::TRACE,
        _ => Level::INFO,
    };
    if let Some(path) = &log.file {
        if let Some(dir) = path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(file) => {
                let _ = tracing_subscriber::fmt()
                    .with_max_level(level)
                    .with_writer(Mutex::new(file))
                    .try_init();
                return;
            }
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "furynet-cni: cannot open log file {}: {e}; logging to stderr",
                    path.display()
                );
            }
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
}

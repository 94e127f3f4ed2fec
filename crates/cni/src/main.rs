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

/// The reaper's command-line flag (not a CNI verb: runtimes never pass arguments).
const REAP_FLAG: &str = "--reap-retired";

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == REAP_FLAG) {
        return reap();
    }
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
    let start_reaper = || spawn_reaper(&kernel);
    let deps = Deps {
        kernel: &kernel,
        allocator: &allocator,
        hostname: &hostname,
        start_reaper: &start_reaper,
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

/// How long a reaper waits, announced, for more DELs to retire veths before it deletes them
/// all in one request.
const REAPER_LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// A reaper announces itself by binding this abstract unix socket name, from its start until
/// just before its batch delete. Abstract names belong to the network namespace, vanish with
/// the socket (also when the process dies) and leave no file behind. A DEL that finds the
/// name taken leaves its retired veth to that reaper, which is sure to delete after it.
/// `Ok(None)` when another reaper holds it.
fn announce_reaper() -> std::io::Result<Option<std::os::unix::net::UnixDatagram>> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let name = SocketAddr::from_abstract_name(b"furynet-cni-reaper")?;
    match UnixDatagram::bind_addr(&name) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(None),
        Err(e) => Err(e),
    }
}

/// `furynet-cni --reap-retired`: deletes every host veth that a DEL retired, in this network
/// namespace, in one batch. DEL starts it detached; it can also be run by hand. If another
/// reaper of this namespace has not deleted yet, that one will take ours too: exit at once.
fn reap() -> ExitCode {
    match announce_reaper() {
        Ok(None) => return ExitCode::SUCCESS,
        Ok(Some(announced)) => {
            std::thread::sleep(REAPER_LINGER);
            // From here on, a DEL starts a reaper of its own.
            drop(announced);
        }
        Err(_) => {}
    }
    match furynet_cni::wiring::reap(&LinuxKernel::new()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "furynet-cni {REAP_FLAG}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts `furynet-cni --reap-retired` in the plugin's own network namespace, detached: its own
/// process group, no stdio (the runtime reads our stdout until it closes), not waited for. If it
/// cannot be started, reaps in this process instead (DEL then takes as long as a synchronous
/// delete).
fn spawn_reaper(kernel: &LinuxKernel) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    if let Ok(None) = announce_reaper() {
        // Our veth was retired before this check: the waiting reaper deletes after it.
        tracing::debug!("a reaper is waiting already; it takes this veth too");
        return;
    }
    let spawned = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .arg(REAP_FLAG)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
    });
    match spawned {
        Ok(child) => tracing::debug!(pid = child.id(), "reaper started"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the reaper; deleting retired interfaces now");
            if let Err(e) = furynet_cni::wiring::reap(kernel) {
                tracing::warn!(error = %e, "cannot delete the retired host interfaces");
            }
        }
    }
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

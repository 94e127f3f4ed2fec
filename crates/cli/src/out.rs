//! Output helpers: a buffered stdout that treats a closed pipe (`furynet ... | head`) as a
//! normal end, and the `-o` formats shared by subcommands.

use std::io::{self, BufWriter, Write};

use clap::ValueEnum;

/// `-o` / `--output`, as kubectl and hubble spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable table.
    Table,
    /// The table with more columns.
    Wide,
    Json,
    Yaml,
}

/// Runs `f` with a buffered stdout; a broken pipe is not an error.
pub fn with_stdout(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let stdout = io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    let res = f(&mut w).and_then(|()| w.flush());
    match res {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

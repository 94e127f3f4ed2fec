//! Writes the kubernetes backend's CRD YAML into a directory (default `deploy/crds`).
//!
//! `cargo run -p furynet-datastore --example gen-crds -- deploy/crds`

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "deploy/crds".into()),
    );
    let files = match furynet_datastore::kubernetes::crds::crds() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gen-crds: cannot render the CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("gen-crds: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, yaml) in files {
        let path = dir.join(&name);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("gen-crds: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

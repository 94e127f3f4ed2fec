//! `--explain`: the policies isolating each side and the rules admitting the connection.

use std::io::{self, Write};

use furynet_model::Protocol;
use furynet_policy::{Engine, PodId, SideExplanation};

use crate::out::{with_stdout, Format};

pub fn print(
    engine: &Engine,
    src: PodId,
    dst: PodId,
    port: u16,
    protocol: Protocol,
    format: Format,
) -> io::Result<()> {
    let Some(x) = engine.explain(src, dst, port, protocol) else {
        return Err(io::Error::other("pod vanished while explaining"));
    };
    with_stdout(|w| match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *w, &x)?;
            writeln!(w)
        }
        Format::Yaml => {
            let text = serde_yaml_ng::to_string(&x).map_err(io::Error::other)?;
            w.write_all(text.as_bytes())
        }
        Format::Table | Format::Wide => {
            let verdict = if x.allowed { "ALLOWED" } else { "DENIED" };
            writeln!(w, "{} -> {} on {port}/{protocol}: {verdict}", x.src, x.dst)?;
            if x.same_pod {
                return writeln!(
                    w,
                    "  a pod may always talk to itself; policies do not apply"
                );
            }
            side(w, &format!("egress of {}", x.src), "Egress", &x.egress)?;
            side(w, &format!("ingress of {}", x.dst), "Ingress", &x.ingress)
        }
    })
}

fn side(w: &mut dyn Write, what: &str, kind: &str, s: &SideExplanation) -> io::Result<()> {
    if s.isolated_by.is_empty() {
        return writeln!(
            w,
            "  {what}: allowed (no policy selects the pod for {kind}: not isolated)"
        );
    }
    writeln!(w, "  {what}: isolated by {}", s.isolated_by.join(", "))?;
    if s.allowed_by.is_empty() {
        writeln!(
            w,
            "    denied: no {} rule of these policies admits this peer and port",
            kind.to_lowercase()
        )
    } else {
        for r in &s.allowed_by {
            writeln!(w, "    allowed by {r}")?;
        }
        Ok(())
    }
}

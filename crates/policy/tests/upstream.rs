//! The upstream Kubernetes e2e NetworkPolicy scenarios, as YAML test data
//! (`tests/data/upstream`, see its README): for every scenario, every ordered pair of distinct
//! pods and every port in {80, 81} × {TCP, UDP, SCTP}, the engine, the reference implementation
//! and the scenario's expected verdict must agree.
//!
//! The YAML is read with `furynet_model::load_paths`, so this test needs the decoder.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt;
use std::path::{Path, PathBuf};

use furynet_model::{load_paths, Cluster, Protocol, Severity};
use furynet_policy::{reference, Engine};

const PORTS: [u16; 2] = [80, 81];
const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const POD_NAMES: [&str; 3] = ["a", "b", "c"];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/upstream")
}

// --- expected.txt -----------------------------------------------------------------------------

/// `*` or an exact name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Any,
    Exact(String),
}

impl Part {
    fn parse(s: &str) -> Part {
        match s {
            "*" => Part::Any,
            _ => Part::Exact(s.to_string()),
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Part::Any => true,
            Part::Exact(e) => e == s,
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Any => f.write_str("*"),
            Part::Exact(e) => f.write_str(e),
        }
    }
}

/// `ns/pod` with either part `*`; `*` alone is `*/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodPattern {
    namespace: Part,
    pod: Part,
}

impl PodPattern {
    fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(PodPattern {
                namespace: Part::Any,
                pod: Part::Any,
            });
        }
        let (ns, pod) = s
            .split_once('/')
            .ok_or_else(|| format!("pod pattern {s:?} is not ns/pod or *"))?;
        if ns.is_empty() || pod.is_empty() || pod.contains('/') {
            return Err(format!("pod pattern {s:?} is not ns/pod or *"));
        }
        Ok(PodPattern {
            namespace: Part::parse(ns),
            pod: Part::parse(pod),
        })
    }

    fn matches(&self, namespace: &str, pod: &str) -> bool {
        self.namespace.matches(namespace) && self.pod.matches(pod)
    }
}

/// `<port>/<protocol>`, either part `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortPattern {
    port: Option<u16>,
    protocol: Option<Protocol>,
}

impl PortPattern {
    fn parse(s: &str) -> Result<Self, String> {
        let (port, protocol) = s
            .split_once('/')
            .ok_or_else(|| format!("port pattern {s:?} is not <port>/<protocol>"))?;
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .map_err(|e| format!("port pattern {s:?}: {e}"))?,
            ),
        };
        let protocol = match protocol {
            "*" => None,
            p => Some(
                Protocol::parse(p).ok_or_else(|| format!("port pattern {s:?}: bad protocol"))?,
            ),
        };
        Ok(PortPattern { port, protocol })
    }

    fn matches(&self, port: u16, protocol: Protocol) -> bool {
        self.port.is_none_or(|p| p == port) && self.protocol.is_none_or(|p| p == protocol)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    number: usize,
    allow: bool,
    from: PodPattern,
    to: PodPattern,
    /// Empty: every port.
    ports: Vec<PortPattern>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Expected {
    policies: Option<usize>,
    lines: Vec<Line>,
}

impl Expected {
    fn parse(text: &str) -> Result<Self, String> {
        let mut expected = Expected::default();
        for (i, raw) in text.lines().enumerate() {
            let number = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let err = |msg: String| format!("line {number}: {msg}: {raw:?}");
            match words[0] {
                "policies" => {
                    if words.len() != 2 || expected.policies.is_some() {
                        return Err(err("want exactly one `policies <n>`".into()));
                    }
                    expected.policies = Some(words[1].parse().map_err(|e| err(format!("{e}")))?);
                }
                verdict @ ("allow" | "deny") => {
                    if words.len() < 3 {
                        return Err(err("want `allow|deny <from> <to> [ports]`".into()));
                    }
                    expected.lines.push(Line {
                        number,
                        allow: verdict == "allow",
                        from: PodPattern::parse(words[1]).map_err(err)?,
                        to: PodPattern::parse(words[2]).map_err(err)?,
                        ports: words[3..]
                            .iter()
                            .map(|w| PortPattern::parse(w))
                            .collect::<Result<_, _>>()
                            .map_err(err)?,
                    });
                }
                other => return Err(err(format!("unknown directive {other:?}"))),
            }
        }
        Ok(expected)
    }

    /// The expected verdict for a cell: allowed unless a line says otherwise; last line wins.
    fn verdict(&self, src: (&str, &str), dst: (&str, &str), port: u16, protocol: Protocol) -> bool {
        let mut allowed = true;
        for l in &self.lines {
            if l.from.matches(src.0, src.1)
                && l.to.matches(dst.0, dst.1)
                && (l.ports.is_empty() || l.ports.iter().any(|p| p.matches(port, protocol)))
            {
                allowed = l.allow;
            }
        }
        allowed
    }

    /// Exact names in patterns must name pods of the model (typos would match nothing).
    fn check_names(&self) -> Result<(), String> {
        for l in &self.lines {
            for p in [&l.from, &l.to] {
                if let Part::Exact(ns) = &p.namespace {
                    if !NAMESPACES.contains(&ns.as_str()) {
                        return Err(format!("line {}: unknown namespace {ns:?}", l.number));
                    }
                }
                if let Part::Exact(pod) = &p.pod {
                    if !POD_NAMES.contains(&pod.as_str()) {
                        return Err(format!("line {}: unknown pod {pod:?}", l.number));
                    }
                }
            }
        }
        Ok(())
    }
}

// --- loading ------------------------------------------------------------------------------------

/// Loads YAML files or directories; any error diagnostic fails the test.
fn load(paths: &[PathBuf]) -> Cluster {
    let loaded = load_paths(paths);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert!(
        errors.is_empty(),
        "loading {paths:?} reported errors:\n{}",
        errors.join("\n")
    );
    loaded.cluster
}

/// `base` with `scenario` applied: its namespaces and pods replace those of the same name, its
/// policies (and anything else) are added.
fn overlay(base: &Cluster, scenario: Cluster) -> Cluster {
    let mut cluster = base.clone();
    for ns in scenario.namespaces {
        // The loader adds a label-less namespace for every namespace a policy merely refers to;
        // only namespaces the scenario really defines (with labels of their own) replace the base.
        let only_automatic = ns
            .labels
            .keys()
            .all(|k| k == furynet_model::NAMESPACE_NAME_LABEL);
        if only_automatic && cluster.namespace(&ns.name).is_some() {
            continue;
        }
        cluster.namespaces.retain(|n| n.name != ns.name);
        cluster.namespaces.push(ns);
    }
    for pod in scenario.pods {
        cluster
            .pods
            .retain(|p| (&p.namespace, &p.name) != (&pod.namespace, &pod.name));
        cluster.pods.push(pod);
    }
    cluster.policies.extend(scenario.policies);
    cluster.services.extend(scenario.services);
    cluster.nodes.extend(scenario.nodes);
    cluster
}

/// Checks that `cluster` is the upstream model: 3 namespaces, 9 pods, each declaring 80 and 81
/// over every protocol, with the `serve-<port>-<protocol>` names.
fn check_model(what: &str, cluster: &Cluster) {
    assert_eq!(
        cluster.namespaces.len(),
        3,
        "{what}: want namespaces x, y, z (is the YAML decoder merged?)"
    );
    assert_eq!(cluster.pods.len(), 9, "{what}: want 9 pods");
    for ns in NAMESPACES {
        for name in POD_NAMES {
            let pod = cluster
                .pod(ns, name)
                .unwrap_or_else(|| panic!("{what}: no pod {ns}/{name}"));
            assert_eq!(pod.labels.get("pod").map(String::as_str), Some(name));
            assert_eq!(pod.ips.len(), 2, "{what}: {ns}/{name} should be dual-stack");
            for port in PORTS {
                for protocol in Protocol::ALL {
                    let serve = format!("serve-{port}-{}", protocol.as_str().to_lowercase());
                    assert_eq!(
                        pod.named_port(&serve, protocol),
                        Some(port),
                        "{what}: {ns}/{name} should declare {serve}"
                    );
                }
            }
        }
    }
}

fn scenario_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

// --- tests --------------------------------------------------------------------------------------

#[test]
fn upstream_scenarios() {
    let base = load(&[data_dir().join("base.yaml")]);
    check_model("base.yaml", &base);
    assert!(base.policies.is_empty(), "base.yaml has no policies");

    let mut failures = Vec::new();
    let mut checked = 0usize;
    for dir in scenario_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let expected = Expected::parse(&std::fs::read_to_string(dir.join("expected.txt")).unwrap())
            .unwrap_or_else(|e| panic!("{name}/expected.txt: {e}"));
        expected
            .check_names()
            .unwrap_or_else(|e| panic!("{name}/expected.txt: {e}"));

        let scenario = load(&[dir.join("policy.yaml")]);
        assert_eq!(
            Some(scenario.policies.len()),
            expected.policies,
            "{name}: NetworkPolicies decoded vs `policies` in expected.txt"
        );
        let cluster = overlay(&base, scenario);
        check_model(&name, &cluster);

        let engine = Engine::new(&cluster);
        for src in &cluster.pods {
            for dst in &cluster.pods {
                if (&src.namespace, &src.name) == (&dst.namespace, &dst.name) {
                    continue;
                }
                let s = engine.find(&src.namespace, &src.name).unwrap();
                let d = engine.find(&dst.namespace, &dst.name).unwrap();
                for port in PORTS {
                    for protocol in Protocol::ALL {
                        checked += 1;
                        let want = expected.verdict(
                            (&src.namespace, &src.name),
                            (&dst.namespace, &dst.name),
                            port,
                            protocol,
                        );
                        let by_engine = engine.allowed(s, d, port, protocol);
                        let by_reference = reference::allowed(&cluster, src, dst, port, protocol);
                        if by_engine != want || by_reference != want {
                            let word = |b: bool| if b { "allow" } else { "deny" };
                            failures.push(format!(
                                "{name}: {} -> {} on {port}/{protocol}: expected {}, engine {}, \
                                 reference {}",
                                src.key(),
                                dst.key(),
                                word(want),
                                word(by_engine),
                                word(by_reference)
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 30 * 9 * 8 * 6, "only {checked} cells checked");
}

/// Runs without the decoder: every scenario directory is complete and its expected file parses.
#[test]
fn scenario_files_are_well_formed() {
    let dirs = scenario_dirs();
    assert!(dirs.len() >= 30, "only {} scenarios", dirs.len());
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        assert!(dir.join("policy.yaml").is_file(), "{name}: no policy.yaml");
        let text = std::fs::read_to_string(dir.join("expected.txt"))
            .unwrap_or_else(|e| panic!("{name}/expected.txt: {e}"));
        assert!(
            text.starts_with("# upstream: ") || text.starts_with("# furynet: "),
            "{name}/expected.txt: first line names the upstream test or says `# furynet:`"
        );
        let expected =
            Expected::parse(&text).unwrap_or_else(|e| panic!("{name}/expected.txt: {e}"));
        expected
            .check_names()
            .unwrap_or_else(|e| panic!("{name}/expected.txt: {e}"));
        let policy = std::fs::read_to_string(dir.join("policy.yaml")).unwrap();
        assert_eq!(
            expected.policies,
            Some(policy.matches("kind: NetworkPolicy").count()),
            "{name}: `policies` in expected.txt vs NetworkPolicy objects in policy.yaml"
        );
    }
}

#[test]
fn expected_format() {
    let e = Expected::parse(
        "# upstream: title\n\
         policies 2\n\
         \n\
         deny * x/*\n\
         allow x/b x/a 80/TCP */UDP\n\
         deny */c * 81/*\n",
    )
    .unwrap();
    assert_eq!(e.policies, Some(2));
    assert_eq!(e.lines.len(), 3);
    let tcp = Protocol::Tcp;
    assert!(e.verdict(("x", "a"), ("y", "a"), 80, tcp));
    assert!(!e.verdict(("y", "a"), ("x", "a"), 80, tcp));
    assert!(e.verdict(("x", "b"), ("x", "a"), 80, tcp));
    assert!(!e.verdict(("x", "b"), ("x", "a"), 81, tcp));
    assert!(e.verdict(("x", "b"), ("x", "a"), 81, Protocol::Udp));
    assert!(!e.verdict(("x", "b"), ("x", "a"), 81, Protocol::Sctp));
    // Later lines win: x/c is denied on 81 everywhere, even towards y.
    assert!(!e.verdict(("x", "c"), ("y", "b"), 81, Protocol::Sctp));
    assert!(e.verdict(("x", "c"), ("y", "b"), 80, Protocol::Sctp));

    assert_eq!(Expected::parse("").unwrap(), Expected::default());
    for bad in [
        "deny x/a",
        "deny xa y/a",
        "deny x/a y/a 80",
        "deny x/a y/a 80/tcp",
        "deny x/a y/a 99999/TCP",
        "permit x/a y/a",
        "policies",
        "policies 1\npolicies 2",
    ] {
        assert!(Expected::parse(bad).is_err(), "{bad:?} should not parse");
    }
    let typo = Expected::parse("deny x/d y/a").unwrap();
    assert!(typo.check_names().is_err());
}

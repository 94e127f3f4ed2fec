//! Golden tests for `furynet analyze` output on the shipped examples. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p furynet-cli --test golden` and review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn furynet(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_furynet"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run furynet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

fn check_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} differs from golden file {}\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

const EXAMPLES: &[&str] = &[
    "default-deny",
    "allow-from-namespace",
    "egress-dns-only",
    "ipblock-except",
    "named-ports",
    "endport-range",
];

#[test]
fn examples_table_and_json() {
    for ex in EXAMPLES {
        let file = format!("examples/analyze/{ex}.yaml");
        for (fmt, ext) in [("table", "txt"), ("json", "json"), ("wide", "wide.txt")] {
            let (code, out, err) = furynet(&["analyze", &file, "-o", fmt]);
            assert_eq!(code, 0, "{ex} -o {fmt}: stderr: {err}");
            assert!(
                !err.contains("error:"),
                "{ex}: unexpected diagnostics: {err}"
            );
            check_golden(&format!("{ex}.{ext}"), &out);
        }
    }
}

#[test]
fn demo_table() {
    let (code, out, err) = furynet(&["analyze", "examples/demo"]);
    assert_eq!(code, 0, "stderr: {err}");
    check_golden("demo.txt", &out);
}

#[test]
fn explain_golden() {
    let cases: &[(&str, &[&str])] = &[
        (
            "explain-denied.txt",
            &[
                "analyze",
                "examples/analyze/default-deny.yaml",
                "--explain",
                "--from",
                "dev/tester",
                "--to",
                "prod/web",
                "--port",
                "80",
            ],
        ),
        (
            "explain-allowed.txt",
            &[
                "analyze",
                "examples/demo",
                "--explain",
                "--from",
                "api/backend-$POD",
                "--to",
                "data/postgres-0",
                "--port",
                "5432/TCP",
            ],
        ),
    ];
    for (golden, args) in cases {
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if args.iter().any(|a| a.contains("$POD")) {
            // Resolve the first backend pod's generated name from the JSON output.
            let (_, json, _) = furynet(&[
                "analyze",
                "examples/demo",
                "-o",
                "json",
                "--from",
                "api",
                "--to",
                "data/postgres-0",
            ]);
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            let src = v[0]["src"].as_str().unwrap().to_string();
            for a in &mut args {
                if a.contains("$POD") {
                    *a = src.clone();
                }
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = furynet(&refs);
        assert_eq!(code, 0, "{golden}: stderr: {err}");
        check_golden(golden, &out);
    }
}

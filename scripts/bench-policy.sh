#!/usr/bin/env bash
# Policy engine benchmarks in one command: builds in release, runs the divan benches
# (crates/policy/benches/matrix.rs: compile, matrix, single pair), then measures one run per size
# with crates/policy/examples/matrix_scale.rs (wall time of Engine::new and Engine::matrix, cell
# counts, peak RSS from VmHWM) and prints a Markdown table.
#
# Usage: scripts/bench-policy.sh [--no-divan] [--sizes "500 5000 20000"]
# Honours CARGO_TARGET_DIR. Numbers are noisy when other builds share the machine: the load
# average is printed so a reader can tell.
set -euo pipefail

sizes="500 5000 20000"
divan=1
while [ $# -gt 0 ]; do
    case "$1" in
        --no-divan) divan=0 ;;
        --sizes) sizes="$2"; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."

echo "## machine"
echo "cpus: $(nproc), cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

cargo build --release -q -p furynet-policy --example matrix_scale

if [ "$divan" = 1 ]; then
    echo "## divan (crates/policy/benches/matrix.rs)"
    cargo bench -q -p furynet-policy --bench matrix
    echo
fi

field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p"; }

echo "## one run per size (crates/policy/examples/matrix_scale.rs)"
echo
echo "| pods | policies | identities | rules | compile | matrix | entries | allowed | peak RSS |"
echo "|-----:|---------:|-----------:|------:|--------:|-------:|--------:|--------:|---------:|"
for n in $sizes; do
    json=$(cargo run --release -q -p furynet-policy --example matrix_scale -- --pods "$n")
    awk -v pods="$(field pods <<<"$json")" \
        -v pol="$(field policies <<<"$json")" \
        -v ids="$(field identities <<<"$json")" \
        -v rules="$(field rules <<<"$json")" \
        -v c="$(field compile_s <<<"$json")" \
        -v m="$(field matrix_s <<<"$json")" \
        -v e="$(field entries <<<"$json")" \
        -v a="$(field allowed <<<"$json")" \
        -v rss="$(field peak_rss_kib <<<"$json")" \
        'BEGIN { printf "| %d | %d | %d | %d | %.1f ms | %.1f ms | %d | %d | %.1f MiB |\n",
                 pods, pol, ids, rules, c * 1000, m * 1000, e, a, rss / 1024 }'
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# Measures every function: init time and peak RSS through a fake Lambda Runtime API (beside a bare
# lambda_runtime binary), per-event CPU with criterion (beside a floor), and package size. Prints
# the table, writes bench/results.json and the results block of docs/performance.md.
# A few minutes on 2 cores once the release build is cached (the first release build takes longer).
#
#   scripts/bench.sh [--runs N (init runs, default 25)] [--events N (default 1000)]
#                    [--measure SECS (criterion, default 3)] [--no-doc]
#
# Measurements only: nothing here fails on a slow figure; missed goals are listed in the output.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ARGS="$*"
RUNS=25
EVENTS=1000
MEASURE=3
WARMUP=1
DOC=docs/performance.md
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --events) EVENTS=$2; shift 2 ;;
    --measure) MEASURE=$2; shift 2 ;;
    --no-doc) DOC=""; shift ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$RUNS" -lt 20 ]; then
  echo "bench.sh: note: fewer than 20 init runs; the medians are for a quick look only" >&2
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/klarna-backend/target}"
START=$(date +%s)
OUT="$CARGO_TARGET_DIR/klarna-bench"
REL="$CARGO_TARGET_DIR/release"
FUNCTIONS=(partner-auth partner-api klarna-webhook step-up-completion partner-fanout token-lifecycle)
rm -rf "$OUT"
mkdir -p "$OUT/logs"
step() { printf '\n== %s (%ss)\n' "$*" "$(($(date +%s) - START))"; }

step "build: release profile (lto, codegen-units 1, strip, panic=abort, opt-level s), $(uname -m)"
pkgs=()
for f in "${FUNCTIONS[@]}"; do pkgs+=(-p "$f"); done
cargo build --release "${pkgs[@]}"
# A separate invocation, so the bench crate's dependency features do not change the functions.
cargo build --release -p klarna-bench --bins

step "package: each binary as 'bootstrap' in a zip (deflate, python zipfile)"
python3 - "$REL" "$OUT/packages.json" "${FUNCTIONS[@]}" hello-lambda <<'PY'
import json, os, sys, zipfile

rel, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
zips = os.path.join(os.path.dirname(out), "zips")
os.makedirs(zips, exist_ok=True)
sizes = {}
for name in names:
    with open(os.path.join(rel, name), "rb") as f:
        data = f.read()
    path = os.path.join(zips, name + ".zip")
    info = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
    info.create_system = 3  # unix, so the mode below is kept
    info.external_attr = 0o100755 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(info, data)
    sizes[name] = {"binary_bytes": len(data), "zip_bytes": os.path.getsize(path)}
    print(f"  {name:<20} binary {len(data):>9} B   zip {sizes[name]['zip_bytes']:>9} B")
packager = ("cargo build --release (the workspace release profile) + python3 zipfile, deflate; "
            "cargo-lambda not used")
with open(out, "w") as f:
    json.dump({"packager": packager, "binaries": sizes}, f, indent=2)
PY

step "init time ($RUNS runs each, interleaved) and peak RSS ($EVENTS events each), fake Runtime API"
"$REL/bench-driver" probe --bin-dir "$REL" --runs "$RUNS" --events "$EVENTS" \
  --out "$OUT/probe.json" --logs "$OUT/logs"

step "per-event CPU: criterion, ${WARMUP}s warm-up + ${MEASURE}s per benchmark"
CRITERION_HOME="$OUT/criterion" cargo bench -p klarna-bench --bench per_event -- \
  --warm-up-time "$WARMUP" --measurement-time "$MEASURE" --noplot

ELAPSED=$(($(date +%s) - START))
step "report"
"$REL/bench-driver" report --probe "$OUT/probe.json" --packages "$OUT/packages.json" \
  --criterion "$OUT/criterion" --out bench/results.json ${DOC:+--doc "$DOC"} \
  --date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --command "scripts/bench.sh${ARGS:+ $ARGS}" \
  --elapsed-secs "$ELAPSED"
echo "wrote bench/results.json${DOC:+ and the results block of $DOC}; logs in $OUT/logs"
echo "script time: $(($(date +%s) - START)) s"

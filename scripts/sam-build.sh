#!/usr/bin/env bash
# Builds what deploys, as an operator does: `sam build` (cargo-lambda, arm64, each function from
# its own crate), then proves what it built: the zipped size of every `bootstrap`, and that no
# function links aws-lc (its dependency graph for the arm64 target, as cargo-lambda resolved it).
#
#   scripts/sam-build.sh            build, measure, prove (writes .aws-sam/ and a report)
#   scripts/sam-build.sh --if-changed
#                                   the same, unless the last successful build had the same inputs
#                                   (template, Cargo.lock, functions/, shared/): what CI runs
#
# Release arm64 builds are kept in their own cache ($SAM_TARGET_DIR), beside the test builds.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

SAM_TARGET_DIR="${SAM_TARGET_DIR:-$HOME/.cache/klarna-backend/target-lambda}"
LAMBDA_VENV="$ROOT/.venv-lambda"
STAMP_DIR="$(dirname "$SAM_TARGET_DIR")"
STAMP="$STAMP_DIR/sam-build.stamp"
REPORT="$STAMP_DIR/sam-build-report.txt"

inputs_hash() {
  # The content of the tracked inputs as they are on disk, by relative path (a clone's location
  # never matters; an uncommitted edit does).
  git ls-files -z template.yaml Cargo.lock Cargo.toml functions shared \
    | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

hash="$(inputs_hash)"
if [ "${1:-}" = "--if-changed" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$hash" ]; then
  say "sam build: inputs unchanged since the last successful build (${hash:0:12}); its report:"
  cat "$REPORT" 2>/dev/null || true
  exit 0
fi

need_cargo
make_venv "$TOOLS_VENV" cfn-lint aws-sam-cli
make_venv "$LAMBDA_VENV" cargo-lambda ziglang
# SAM and cargo-lambda look for `zig` on PATH; the wheel ships it inside the package.
zig_bin="$(find "$LAMBDA_VENV/lib" -path '*ziglang/zig' -type f | head -1)"
[ -n "$zig_bin" ] || die "ziglang installed no zig binary"
ln -sf "$zig_bin" "$LAMBDA_VENV/bin/zig"
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  say "adding the arm64 Rust standard library (rustup target add aarch64-unknown-linux-gnu)"
  rustup target add aarch64-unknown-linux-gnu >/dev/null || die "rustup could not add the arm64 target"
fi

say "sam build (arm64, one crate per function; cache: $SAM_TARGET_DIR)"
start=$(date +%s)
PATH="$LAMBDA_VENV/bin:$TOOLS_VENV/bin:$PATH" CARGO_TARGET_DIR="$SAM_TARGET_DIR" SAM_CLI_TELEMETRY=0 \
  sam build --region us-east-1 >"$STATE_DIR/sam-build.log" 2>&1 \
  || { tail -40 "$STATE_DIR/sam-build.log"; die "sam build failed (log: .local/sam-build.log)"; }
ok "sam build succeeded in $(( $(date +%s) - start )) s"

# Each function: its package, its built bootstrap, the zip a deploy uploads, the proof.
{
  printf '%-26s %-20s %10s %10s  %s\n' function package binary_B zip_B "aws-lc in the arm64 graph"
  failed=0
  while read -r logical package; do
    bin=".aws-sam/build/$logical/bootstrap"
    [ -f "$bin" ] || { echo "missing $bin"; failed=1; continue; }
    file "$bin" | grep -q 'ARM aarch64' || { echo "$bin is not an arm64 executable"; failed=1; }
    size=$(stat -c %s "$bin")
    zip=$(python3 - "$bin" <<'PY'
import io, sys, zipfile
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(sys.argv[1], "bootstrap")
print(len(buf.getvalue()))
PY
)
    # The dependency graph of exactly this package for the arm64 target (what cargo-lambda
    # built from its crate): every crate that can be linked into the binary.
    graph=$(CARGO_TARGET_DIR="$SAM_TARGET_DIR" cargo tree -p "$package" --target aarch64-unknown-linux-gnu \
         -e normal --prefix none --no-dedupe 2>/dev/null | sort -u) \
      || { echo "cargo tree failed for $package"; failed=1; }
    if grep -q '^aws-lc' <<<"$graph"; then
      proof="LINKED: $(grep '^aws-lc' <<<"$graph" | tr '\n' ' ')"; failed=1
    elif grep -qa 'AWS-LC' "$bin"; then
      # aws-lc's version string, in the binary itself.
      proof="LINKED: the binary carries AWS-LC's version string"; failed=1
    elif grep -q '^ring ' <<<"$graph"; then
      proof="not linked (crypto: $(grep '^ring ' <<<"$graph" | cut -d' ' -f1-2))"
    else
      proof="not linked"
    fi
    printf '%-26s %-20s %10s %10s  %s\n' "$logical" "$package" "$size" "$zip" "$proof"
  done < <(python3 - <<'PY'
import re
text = open("template.yaml").read()
for m in re.finditer(r"\n  (\w+Function):\n    Type: AWS::Serverless::Function\n    Metadata:\n      BuildMethod: rust-cargolambda\n      BuildProperties:\n        Binary: ([\w-]+)", text):
    print(m.group(1), m.group(2))
PY
)
  exit "$failed"
} | tee "$REPORT.new" || status=$?
[ "${status:-0}" -eq 0 ] || die "a built function is missing, not arm64, or links aws-lc (see above)"
mv "$REPORT.new" "$REPORT"
printf '%s\n' "$hash" >"$STAMP"
ok "every function built for arm64 without aws-lc; report: $REPORT"

#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need (project-local
# virtualenvs), starts the local AWS server, runs lint and every test, and stops what it started.
#   scripts/test.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need_cargo

started_moto=0
cleanup() { if [ "$started_moto" = 1 ]; then bash "$ROOT/scripts/local-aws.sh" stop >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

make_venv "$TOOLS_VENV" cfn-lint aws-sam-cli
if ! bash scripts/local-aws.sh status >/dev/null 2>&1; then
  bash scripts/local-aws.sh start
  started_moto=1
fi
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test

say "lint: rustfmt"
cargo fmt --all -- --check
say "lint: cfn-lint template.yaml"
"$TOOLS_VENV/bin/cfn-lint" template.yaml
say "lint: sam validate --lint"
SAM_CLI_TELEMETRY=0 "$TOOLS_VENV/bin/sam" validate --lint --region us-east-1 >/dev/null
say "lint: IAM as SAM expands the template (scripts/check_expanded_iam.py)"
"$TOOLS_VENV/bin/python" scripts/check_expanded_iam.py template.yaml
say "lint: clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "build: the function binaries (binary mode, tests/tests/binaries.rs)"
cargo build --quiet -p partner-auth -p partner-api -p klarna-webhook -p step-up-completion -p partner-fanout -p token-lifecycle -p reconciler --bins
say "tests (build cache: $CARGO_TARGET_DIR)"
cargo test --workspace --quiet 2>&1 | tee "$STATE_DIR/test.log"
# What deploys: `sam build` for arm64, its zip sizes and the aws-lc proof, whenever the inputs
# changed since the last successful build (a release LTO build of every function is minutes).
bash scripts/sam-build.sh --if-changed

#!/usr/bin/env bash
# The main job, locally: installs and starts the local AWS server, builds, starts the whole
# backend (HTTP API on 127.0.0.1:3000, Klarna simulator on 127.0.0.1:4010), plays the
# walk-through of every flow and exits 0 only if every step passed. Stops what it started.
#   scripts/run.sh                  # walk-through, then exit
#   scripts/run.sh --keep-running   # walk-through, then leave the stack up for curl
#   scripts/run.sh --serve          # no walk-through; stack up for curl
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need_cargo

started_moto=0
child=""
cleanup() {
  [ -n "$child" ] && kill "$child" 2>/dev/null || true
  if [ "$started_moto" = 1 ]; then bash "$ROOT/scripts/local-aws.sh" stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT INT TERM

if ! bash scripts/local-aws.sh status >/dev/null 2>&1; then
  bash scripts/local-aws.sh start
  started_moto=1
fi
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test

say "building (the first build takes a few minutes; cargo shows its progress)"
cargo build --bin local-stack
"$CARGO_TARGET_DIR/debug/local-stack" "$@" &
child=$!
status=0
wait "$child" || status=$?
child=""
exit "$status"

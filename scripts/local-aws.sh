#!/usr/bin/env bash
# The local AWS server (DynamoDB, DynamoDB Streams and SQS on the AWS wire protocol): moto, in a
# project-local virtualenv, on 127.0.0.1:$MOTO_PORT.
#   scripts/local-aws.sh start   # idempotent: a second start finds it running
#   scripts/local-aws.sh stop
#   scripts/local-aws.sh status
source "$(dirname "$0")/lib.sh"

PID_FILE="$STATE_DIR/moto.pid"
LOG_FILE="$STATE_DIR/moto.log"

# A cheap DynamoDB call that only the local AWS server answers this way (no state dump).
is_moto() {
  curl -fsS -m 3 -X POST "http://127.0.0.1:$MOTO_PORT/" \
    -H 'Content-Type: application/x-amz-json-1.0' -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0' \
    -d '{"Limit":1}' 2>/dev/null | grep -q TableNames
}

start() {
  if is_moto; then ok "local AWS server already running on 127.0.0.1:$MOTO_PORT"; return 0; fi
  if port_in_use "$MOTO_PORT"; then
    die "port $MOTO_PORT is taken by another program (not the local AWS server). Free it, or set MOTO_PORT to another port."
  fi
  make_venv "$MOTO_VENV" "moto[server]==$MOTO_VERSION"
  say "starting the local AWS server on 127.0.0.1:$MOTO_PORT"
  # moto with DynamoDB calls serialized: see the script for why (concurrent transactions lose
  # writes otherwise).
  nohup "$MOTO_VENV/bin/python" "$ROOT/scripts/moto_server_serialized.py" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 100); do
    if is_moto; then ok "local AWS server ready (log: ${LOG_FILE#"$ROOT"/})"; return 0; fi
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      tail -20 "$LOG_FILE" >&2 || true
      rm -f "$PID_FILE"
      die "the local AWS server exited at start (log above)"
    fi
    sleep 0.1
  done
  stop
  die "the local AWS server did not answer within 10 s"
}

stop() {
  if [ -f "$PID_FILE" ]; then
    local pid; pid="$(cat "$PID_FILE")"
    if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    ok "local AWS server stopped"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if is_moto; then ok "running on 127.0.0.1:$MOTO_PORT"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

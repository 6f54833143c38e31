# Shared by the project's scripts: paths, logging, and prerequisite checks.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="$ROOT/.local"
mkdir -p "$STATE_DIR"

# Build cache outside the clone, shared between runs (CI reuses it across clean clones).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/klarna-backend/target}"

MOTO_PORT="${MOTO_PORT:-5000}"
MOTO_VENV="$ROOT/.venv-moto"
TOOLS_VENV="$ROOT/.venv-tools"
MOTO_VERSION="${MOTO_VERSION:-5.2.*}"

if [ -t 1 ]; then B=$'\e[1m'; G=$'\e[32m'; R=$'\e[31m'; Y=$'\e[33m'; N=$'\e[0m'; else B= G= R= Y= N=; fi
say()  { printf '%s==>%s %s\n' "$B" "$N" "$*"; }
ok()   { printf '%s ok%s %s\n' "$G" "$N" "$*"; }
warn() { printf '%s warn%s %s\n' "$Y" "$N" "$*" >&2; }
die()  { printf '%s error%s %s\n' "$R" "$N" "$*" >&2; exit 1; }

need_python() {
  command -v python3 >/dev/null 2>&1 || die "python3 is missing: install Python 3.9+ (Debian: apt-get install python3 python3-venv)."
  python3 -c 'import venv' 2>/dev/null || die "python3 venv module is missing (Debian: apt-get install python3-venv)."
}

need_cargo() {
  command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust with rustup (https://rustup.rs)."
}

# port_in_use PORT: true if something listens on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && { exec 3>&- 3<&-; return 0; } || return 1
}

# make_venv DIR PACKAGES...: a project-local virtualenv with these packages (once).
make_venv() {
  local dir="$1"; shift
  local stamp="$dir/.installed-$(printf '%s' "$*" | cksum | cut -d' ' -f1)"
  [ -f "$stamp" ] && return 0
  need_python
  say "installing $* into ${dir#"$ROOT"/} (first run only, about a minute)"
  rm -rf "$dir"
  python3 -m venv "$dir" || die "could not create a virtualenv in $dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" || die "pip could not install $*: check the network to PyPI"
  touch "$stamp"
}

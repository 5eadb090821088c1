#!/usr/bin/env bash
# Make this machine able to run the pipeline and its tests: system packages (ClickHouse, Java,
# Maven, Python venv support), the project's .venv, and the Kafka jars from Maven Central.
#
# Idempotent and quiet: each step is skipped when already done (apt is only touched when a tool is
# missing, pip only when pyproject.toml changed, Maven only when the jars are missing), and output
# is shown only when a step fails. Targets a fresh Debian 12; runs as root or with sudo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$PWD
VENV=$REPO_ROOT/.venv
LOG_DIR=$(mktemp -d)
trap 'rm -rf "$LOG_DIR"' EXIT

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

# run a step quietly; on failure print its output and stop
quietly() {
    local what=$1; shift
    local log="$LOG_DIR/step.log"
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "$what failed (command: $*)"
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

# --- system packages ---------------------------------------------------------------------------
python_ok() {  # python >= 3.11 with venv+ensurepip (Debian splits venv into python3-venv)
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"; return 0
        fi
    done
    return 1
}

missing=()
[ -x /usr/sbin/clickhouse-server ] || command -v clickhouse-server >/dev/null 2>&1 \
    || missing+=(clickhouse-server)
command -v clickhouse-client >/dev/null 2>&1 || missing+=(clickhouse-client)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ ! -x "$VENV/bin/python" ] && ! find_python >/dev/null; then
    missing+=(python3 python3-venv)
fi

if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 \
        || die "missing ${missing[*]} and apt-get is not available: install them by hand"
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    quietly "apt-get update" as_root apt-get update -q
    quietly "apt-get install ${missing[*]}" \
        as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
    # the Debian package starts a system-wide server through systemd where there is one; the stack
    # runs its own, so a service on 9000/8123 would only collide with `callback stack up` defaults
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now clickhouse-server >/dev/null 2>&1 || true
    fi
fi

command -v java >/dev/null 2>&1 || die "java still missing after install"
command -v mvn >/dev/null 2>&1 || die "mvn still missing after install"

# --- the virtualenv ------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    PY=$(find_python) || die "no python >= 3.11 with venv support found"
    rm -rf "$VENV"
    quietly "python venv" "$PY" -m venv "$VENV"
fi

STAMP=$VENV/.callback-bootstrap
WANT=$(sha256sum <pyproject.toml | cut -d" " -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    say "installing Python dependencies into .venv"
    quietly "pip install" "$VENV/bin/python" -m pip install -q -e '.[dev]'
    echo "$WANT" >"$STAMP"
fi

# --- Kafka jars ------------------------------------------------------------------------------------
quietly "Kafka jars (mvn)" "$VENV/bin/python" -c 'from infra.stack import ensure_kafka_jars; ensure_kafka_jars()'

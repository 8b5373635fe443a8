#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test the module. Idempotent and
# quiet when everything is already there.
set -euo pipefail

packages=(build-essential libclang-dev redis-server redis-tools)
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

# The Debian package may start a server on 6379 where an init system exists; the tests and
# `make run` start their own servers and do not need it.

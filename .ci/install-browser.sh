#!/usr/bin/env bash
# Install Debian's chromium for the console's browser tests (tests/test_console.py), which drive
# it with Playwright for Python (a dev extra). Idempotent: does nothing when chromium is there.
#
# Never use `playwright install`: it downloads a browser build of its own, which is not
# reachable here. The tests launch /usr/bin/chromium (override with EDDY_CHROMIUM).
set -euo pipefail

CHROMIUM="${EDDY_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    echo "install-browser: $CHROMIUM is already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-browser: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o Acquire::Retries=3 update -qq
$SUDO apt-get -o Acquire::Retries=3 install -y -qq chromium >/dev/null

if [ ! -x "$CHROMIUM" ]; then
    echo "install-browser: chromium was installed but $CHROMIUM is missing" >&2
    exit 1
fi
echo "install-browser: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"

#!/usr/bin/env bash
# Install promtool (Debian's prometheus package) for the metrics test that runs
# `promtool check metrics` on a real scrape (tests/test_metrics.py). Idempotent. The package's
# service is not wanted: with a policy-rc.d that refuses (as in containers) it never starts;
# elsewhere it is stopped and disabled right after the install.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    echo "install-promtool: $(command -v promtool) is already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-promtool: need root (or sudo) to apt-get install prometheus" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o Acquire::Retries=3 -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o Acquire::Retries=3 -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends prometheus >/dev/null
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

if ! command -v promtool >/dev/null 2>&1; then
    echo "install-promtool: prometheus was installed but promtool is missing" >&2
    exit 1
fi
echo "install-promtool: installed $(promtool --version 2>&1 | head -1)"

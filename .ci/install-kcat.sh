#!/usr/bin/env bash
# Install Debian's kcat for the Kafka protocol listener's tests (tests/test_kafka_clients.py),
# which drive it as a Kafka client nobody on the team wrote. Idempotent: does nothing when kcat
# is there.
set -euo pipefail

if command -v kcat >/dev/null 2>&1; then
    echo "install-kcat: $(command -v kcat) is already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-kcat: need root (or sudo) to apt-get install kcat" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o Acquire::Retries=3 update -qq
$SUDO apt-get -o Acquire::Retries=3 install -y -qq kcat >/dev/null

command -v kcat >/dev/null || { echo "install-kcat: kcat was installed but is not on PATH" >&2; exit 1; }
echo "install-kcat: installed $(kcat -V 2>&1 | head -1)"

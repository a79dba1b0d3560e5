#!/usr/bin/env bash
# Install the Debian packages the tests drive, in one apt-get run (each `apt-get update` costs
# CI time): chromium (the console and JavaScript-client browser tests, through Playwright),
# kcat (a Kafka client for the Kafka listener's tests), prometheus (for `promtool check
# metrics` in tests/test_metrics.py and `promtool check/test rules` of deploy/prometheus/ in
# tests/test_deploy.py; its service is not wanted) and systemd (`systemd-analyze verify` of
# deploy/systemd/eddy.service; nothing is started) and build-essential (a C toolchain to build
# librdkafka's test programs, tests/librdkafka/build.sh). Idempotent: installs only what is
# missing.
# Needs root or sudo.
#
# Never use `playwright install`: it downloads a browser build of its own, which is not
# reachable here. The tests launch /usr/bin/chromium (override with EDDY_CHROMIUM).
set -euo pipefail

CHROMIUM="${EDDY_CHROMIUM:-/usr/bin/chromium}"
missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
{ command -v cc && command -v c++ && command -v make; } >/dev/null 2>&1 || missing+=(build-essential)

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-debian-packages: chromium, kcat, promtool, systemd-analyze and a C toolchain" \
        "are already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-debian-packages: need root (or sudo) to apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
APT=(-o Acquire::Retries=3 -o DPkg::Lock::Timeout=600)
$SUDO apt-get "${APT[@]}" update -qq
$SUDO apt-get "${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1 \
    && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

[ -x "$CHROMIUM" ] || { echo "install-debian-packages: $CHROMIUM is missing" >&2; exit 1; }
command -v kcat >/dev/null || { echo "install-debian-packages: kcat is missing" >&2; exit 1; }
command -v promtool >/dev/null || { echo "install-debian-packages: promtool is missing" >&2; exit 1; }
command -v systemd-analyze >/dev/null \
    || { echo "install-debian-packages: systemd-analyze is missing" >&2; exit 1; }
{ command -v cc && command -v make; } >/dev/null \
    || { echo "install-debian-packages: cc or make is missing" >&2; exit 1; }
echo "install-debian-packages: installed ${missing[*]}"

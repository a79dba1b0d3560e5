#!/usr/bin/env bash
# Install the Node tools that only tests and CI use (package.json: ws for the JavaScript
# client's Node tests, newman, redocly, the AsyncAPI parser). Node.js and npm come from the
# base image; `npm ci` installs exactly what package-lock.json records.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null 2>&1; then
    echo "install-node-tools: npm is missing (Node.js 20 is expected on the base image)" >&2
    exit 1
fi
npm ci --no-audit --no-fund --loglevel=error

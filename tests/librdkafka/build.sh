#!/usr/bin/env bash
# Build librdkafka's own test programs (tests/test-runner) from a pinned release's source, for
# tests/test_librdkafka_suite.py. Prints the directory of the built source tree.
#
# CI cannot reach GitHub, but librdkafka's source, tests/ included, ships inside npm packages:
# @confluentinc/kafka-javascript@1.10.1 carries librdkafka 2.15.1 under deps/librdkafka/. The
# build is cached outside the repository (EDDY_LIBRDKAFKA_CACHE, default ~/.cache/eddy-librdkafka)
# and made in a staging directory that is renamed into place, so an interrupted build is never
# taken for a finished one. Needs a C toolchain (.ci/install-debian-packages.sh installs
# build-essential) and npm.
set -euo pipefail

PACKAGE="${EDDY_LIBRDKAFKA_NPM:-@confluentinc/kafka-javascript@1.10.1}"
VERSION="${EDDY_LIBRDKAFKA_VERSION:-2.15.1}"
CACHE="${EDDY_LIBRDKAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/eddy-librdkafka}"
TREE="$CACHE/librdkafka-$VERSION"

if [ -x "$TREE/tests/test-runner" ]; then
    echo "$TREE"
    exit 0
fi
for tool in cc make npm; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing" >&2; exit 1; }
done

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # one build at a time (two test runs may start together)
if [ -x "$TREE/tests/test-runner" ]; then
    echo "$TREE"
    exit 0
fi

STAGING="$(mktemp -d "$CACHE/build-XXXXXX")"
trap 'rm -rf "$STAGING"' EXIT
(cd "$STAGING" && npm pack --silent "$PACKAGE" >/dev/null && tar xzf ./*.tgz)
SOURCE="$STAGING/package/deps/librdkafka"
found="$(sed -n 's/^#define RD_KAFKA_VERSION *0x\([0-9a-f]*\).*/\1/p' "$SOURCE/src/rdkafka.h")"
expected="$(printf '%02x%02x%02x' ${VERSION//./ })"
if [ "${found:0:6}" != "$expected" ]; then
    echo "build.sh: $PACKAGE carries librdkafka 0x$found, not $VERSION" >&2
    exit 1
fi
JOBS="$(nproc)"
{
    cd "$SOURCE"
    ./configure --disable-curl --disable-sasl
    nice make -j "$JOBS" libs
    nice make -j "$JOBS" -C tests build
} >"$STAGING/build.log" 2>&1 || { tail -40 "$STAGING/build.log" >&2; exit 1; }
mv "$SOURCE" "$TREE"  # one rename: the tree is there whole or not at all
echo "$TREE"

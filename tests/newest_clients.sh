#!/usr/bin/env bash
# The Kafka client tests on the newest releases of the clients nobody on the team wrote
# (kafka-python, aiokafka, confluent-kafka and its librdkafka, and kio, the listener's codec),
# not only on the versions the main venv happens to hold: a second venv, upgraded to the newest
# releases each run, runs the Kafka listener's client tests and librdkafka's suite on the newest
# confluent-kafka's library. Run by scripts/check before the main test run.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${EDDY_NEWEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/eddy-newest-venv}"
CLIENTS=(kafka-python aiokafka confluent-kafka kio)

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet -e '.[dev]'
"$VENV/bin/python" -m pip install --quiet --upgrade "${CLIENTS[@]}"
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version

import confluent_kafka

names = ["kafka-python", "aiokafka", "confluent-kafka", "kio"]
print("newest clients:", ", ".join(f"{n} {version(n)}" for n in names),
      f"(librdkafka {confluent_kafka.libversion()[0]})")
EOF
EDDY_LIBRDKAFKA_INSTALLED=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/test_kafka_clients.py tests/test_kafka_wire.py tests/test_commit_metadata.py \
    tests/test_kafka_self.py tests/test_librdkafka_suite.py -k "not pinned_release"

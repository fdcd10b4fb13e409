#!/usr/bin/env bash
# Installs everything Tocsin and its tests need on a fresh Debian machine:
# system packages (Java + Maven for the local Kafka, kcat, promtool,
# Alertmanager, Chromium for the dashboard test) and the Python package with
# its test extra. Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(kcat prometheus prometheus-alertmanager chromium chromium-driver docker-compose
              prometheus-node-exporter rsyslog bsdutils)
command -v java >/dev/null || APT_PACKAGES+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || APT_PACKAGES+=(maven)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: please install: ${missing[*]} (needs root and apt-get)" >&2
  fi
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: Python 3.11+ is required ($PY is $("$PY" --version 2>&1))" >&2
  exit 1
fi
"$PY" -m pip install --disable-pip-version-check -q -e '.[test,bench]'

# Resolve the Kafka broker's jars from Maven Central once (cached in ~/.cache/tocsin).
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  "$PY" -c 'from tocsin.core.localkafka import ensure_jars; print("setup: kafka jars in", ensure_jars())' >&2
fi

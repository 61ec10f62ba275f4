#!/usr/bin/env bash
# Set up evalkit on a fresh Debian/Ubuntu machine, as root: the Docker engine, the Python package
# (CPU PyTorch) and the sandbox image. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  say "installing docker.io and debootstrap (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  say "starting dockerd in the background (log: /var/log/evalkit-dockerd.log)"
  nohup dockerd >/var/log/evalkit-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not come up; see /var/log/evalkit-dockerd.log" >&2; exit 1; }
fi

say "installing evalkit (CPU PyTorch first, so nothing pulls a CUDA build)"
python3 -m pip install -q --disable-pip-version-check "torch==2.13.0"
python3 -m pip install -q --disable-pip-version-check -e ".[test]"

say "building the sandbox image (reused when one from the same recipe exists)"
evalkit sandbox build
say "ready"

#!/usr/bin/env bash
# Runs every test. Minimal bootstrap version; installs nothing yet.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace

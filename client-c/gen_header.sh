#!/usr/bin/env bash
# Regenerates client-c/include/shoal.h with the cbindgen version pinned in client-c/Cargo.toml
# (run as a library by tests/header.rs, so nothing needs installing).
#   ./gen_header.sh           rewrite the header
#   ./gen_header.sh --verify  fail if the committed header differs (what CI checks)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--verify" ]; then
  cargo test -p shoal-client-c --test header
else
  SHOAL_BLESS_HEADER=1 cargo test -p shoal-client-c --test header -- committed_header_matches_cbindgen_output
  echo "wrote client-c/include/shoal.h"
fi

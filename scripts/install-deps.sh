#!/usr/bin/env bash
# Installs what building and testing Shoal needs on a fresh Debian machine with rustup:
# toolchain components, the reference servers for side-by-side runs and cross-checks
# (memcached, redis-server), valgrind for the C client, and pymemcache and meta-memcache
# (a meta-protocol client) for the memcached client compatibility tests. Safe to run again: it installs only what is missing.
set -euo pipefail

need_apt=()
for bin in memcached:memcached redis-server:redis-server valgrind:valgrind cc:gcc pkg-config:pkg-config memcstat:libmemcached-tools; do
  command -v "${bin%%:*}" >/dev/null 2>&1 || need_apt+=("${bin#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

if ! python3 -c 'import pymemcache' >/dev/null 2>&1; then
  python3 -m pip install --quiet pymemcache
fi
if ! python3 -c 'import meta_memcache' >/dev/null 2>&1; then
  python3 -m pip install --quiet 'meta-memcache>=4,<5'
fi
echo "dependencies ready"

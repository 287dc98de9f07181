#!/usr/bin/env bash
# Builds libshoal and installs the static and shared libraries, shoal.h and shoal.pc.
#   client-c/install.sh [--prefix DIR] [--debug] [--no-build]
# --prefix   where to install (default /usr/local; DESTDIR is honoured for packaging)
# --debug    install the debug build instead of the release build
# --no-build install what target/ already holds
# Then: cc prog.c $(pkg-config --cflags --libs shoal)            (shared library)
#   or: cc prog.c $(pkg-config --cflags --libs --static shoal) with libshoal.a only.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local
profile=release
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --debug) profile=debug; shift ;;
    --no-build) build=0; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ "$build" = 1 ]; then
  if [ "$profile" = release ]; then
    cargo build --release -p shoal-client-c --lib
  else
    cargo build -p shoal-client-c --lib
  fi
fi
target="${CARGO_TARGET_DIR:-target}/$profile"
version="$(sed -n 's/^#define SHOAL_VERSION "\(.*\)"$/\1/p' client-c/include/shoal.h)"
dest="${DESTDIR:-}$prefix"
install -d "$dest/lib/pkgconfig" "$dest/include"
install -m 644 "$target/libshoal.a" "$dest/lib/libshoal.a"
install -m 755 "$target/libshoal.so" "$dest/lib/libshoal.so"
install -m 644 client-c/include/shoal.h "$dest/include/shoal.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" client-c/shoal.pc.in \
  > "$dest/lib/pkgconfig/shoal.pc"
echo "installed libshoal $version into $dest"

#!/usr/bin/env python3
"""meta-memcache (a client that speaks only memcached's meta protocol) against a server.

Usage: python3 meta_client_compat.py HOST:PORT

Runs the client's basic operations and exits non-zero naming the first mismatch. Works
against memcached itself too.

Not exercised: meta-memcache's check-and-set. Its token parser (meta-memcache-socket 0.3)
keeps only tokens below 2**32 and returns None for larger ones; shoald's cas token is the
64-bit value hash, so the client would send an unconditional set. README says so.
"""

import sys

try:
    from meta_memcache import CacheClient, Key, ServerAddress, connection_pool_factory_builder
except ImportError:  # the Rust runner checks this first
    print("meta-memcache is not installed", file=sys.stderr)
    sys.exit(2)


def check(what, got, want):
    if got != want:
        print(f"MISMATCH {what}: got {got!r}, want {want!r}", file=sys.stderr)
        sys.exit(1)


def main():
    if len(sys.argv) != 2 or ":" not in sys.argv[1]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port = sys.argv[1].rsplit(":", 1)
    c = CacheClient.cache_client_from_servers(
        servers=[ServerAddress(host=host, port=int(port))],
        connection_pool_factory_fn=connection_pool_factory_builder(),
    )
    check("get miss", c.get(key=Key("meta:missing")), None)
    check("set", c.set(key=Key("meta:a"), value="hello", ttl=60), True)
    check("get", c.get(key=Key("meta:a")), "hello")
    check("set bytes", c.set(key=Key("meta:b"), value=b"\x00\r\n\xff", ttl=0), True)
    check("get bytes", c.get(key=Key("meta:b")), b"\x00\r\n\xff")
    check("set object", c.set(key=Key("meta:o"), value={"n": [1, 2]}, ttl=0), True)
    check("get object", c.get(key=Key("meta:o")), {"n": [1, 2]})
    long_key = Key("meta:" + "k" * 300)  # over 250 bytes: the client sends it base64-hashed
    check("set long key", c.set(key=long_key, value="long", ttl=0), True)
    check("get long key", c.get(key=long_key), "long")
    check("touch", c.touch(key=Key("meta:a"), ttl=100), True)
    check("touch miss", c.touch(key=Key("meta:missing"), ttl=100), False)
    check(
        "multi_get",
        c.multi_get(keys=[Key("meta:a"), Key("meta:missing"), Key("meta:b")]),
        {Key("meta:a"): "hello", Key("meta:missing"): None, Key("meta:b"): b"\x00\r\n\xff"},
    )
    check(
        "delta_initialize",
        c.delta_initialize(key=Key("meta:n"), delta=5, initial_value=10, initial_ttl=60),
        True,
    )
    check("delta", c.delta(key=Key("meta:n"), delta=3), True)
    check("delta_and_get", c.delta_and_get(key=Key("meta:n"), delta=2), 15)
    check("delta miss", c.delta(key=Key("meta:nothing"), delta=1), False)
    check("delete", c.delete(key=Key("meta:a")), True)
    check("get deleted", c.get(key=Key("meta:a")), None)
    # Stale-while-revalidate: invalidate marks the item stale; the next get_or_lease wins the
    # right to recompute (a lease), others keep the stale value meanwhile.
    check("set for invalidate", c.set(key=Key("meta:s"), value="old", ttl=60), True)
    check("invalidate", c.invalidate(key=Key("meta:s")), True)
    print("ok")


if __name__ == "__main__":
    main()

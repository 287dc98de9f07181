#!/usr/bin/env python3
"""pymemcache compatibility check for a memcached text protocol server.

Usage: python3 pymemcache_compat.py HOST:PORT

Runs the common client operations through pymemcache and exits non-zero with a message
naming the first mismatch. Works against memcached itself too (the reference behaviour).
"""

import sys

try:
    from pymemcache.client.base import Client
except ImportError:  # the Rust runner checks this first; keep a clear message anyway
    print("pymemcache is not installed", file=sys.stderr)
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
    c = Client((host, int(port)), connect_timeout=5, timeout=5)

    check("flush_all", c.flush_all(noreply=False), True)
    check("get miss", c.get("missing"), None)
    check("set", c.set("k", b"v1", noreply=False), True)
    check("get", c.get("k"), b"v1")
    check("set with flags/expire", c.set("f", b"x", expire=100, noreply=False), True)

    value, cas = c.gets("k")
    check("gets value", value, b"v1")
    check("gets cas is a number", isinstance(cas, bytes) and cas.isdigit(), True)
    check("cas stale", c.cas("k", b"v2", b"1" if cas != b"1" else b"2", noreply=False), False)
    check("cas ok", c.cas("k", b"v2", cas, noreply=False), True)
    check("cas reused token", c.cas("k", b"v3", cas, noreply=False), False)
    check("cas missing", c.cas("nope", b"v", b"1", noreply=False), None)
    check("after cas", c.get("k"), b"v2")

    check("add existing", c.add("k", b"x", noreply=False), False)
    check("add new", c.add("a", b"x", noreply=False), True)
    check("replace missing", c.replace("nope", b"x", noreply=False), False)
    check("replace", c.replace("a", b"y", noreply=False), True)
    check("append", c.append("a", b"Z", noreply=False), True)
    check("prepend", c.prepend("a", b"A", noreply=False), True)
    check("append/prepend result", c.get("a"), b"AyZ")
    check("append missing", c.append("nope", b"x", noreply=False), False)

    check("delete", c.delete("a", noreply=False), True)
    check("delete missing", c.delete("a", noreply=False), False)
    check("get deleted", c.get("a"), None)

    c.set("n", b"10", noreply=False)
    check("incr", c.incr("n", 5, noreply=False), 15)
    check("decr", c.decr("n", 100, noreply=False), 0)
    check("incr missing", c.incr("nope", 1, noreply=False), None)
    check("decr missing", c.decr("nope", 1, noreply=False), None)
    try:
        c.set("s", b"abc", noreply=False)
        c.incr("s", 1, noreply=False)
        check("incr non-numeric raises", "no error", "MemcacheClientError")
    except Exception as e:  # pymemcache raises MemcacheClientError
        check("incr non-numeric error", type(e).__name__, "MemcacheClientError")

    check("touch", c.touch("k", 100, noreply=False), True)
    check("touch missing", c.touch("nope", 100, noreply=False), False)

    many = {f"key{i}": f"value{i}".encode() for i in range(100)}
    check("set_many", c.set_many(many, noreply=False), [])
    got = c.get_many(list(many) + ["absent1", "absent2"])
    check("get_many", got, many)
    check("delete_many", c.delete_many(["key1", "key2"], noreply=False), True)
    check("get_many after delete", sorted(c.get_many(["key1", "key2", "key3"])), ["key3"])

    binary = bytes(range(256)) + b"\r\nEND\r\nVALUE x 0 1\r\n" + b"\0" * 1000
    check("set binary", c.set("bin", binary, noreply=False), True)
    check("get binary", c.get("bin"), binary)
    big = bytes(i % 251 for i in range(500_000))
    check("set 500 KB", c.set("big", big, noreply=False), True)
    check("get 500 KB", c.get("big"), big)

    check("noreply set", c.set("nr", b"1", noreply=True), True)
    check("get after noreply", c.get("nr"), b"1")

    check("set expired", c.set("e", b"x", expire=-1, noreply=False), True)
    check("get expired", c.get("e"), None)

    version = c.version()
    check("version is non-empty", bool(version), True)
    stats = c.stats()
    for name in (b"curr_items", b"get_hits", b"get_misses", b"cmd_get", b"cmd_set"):
        check(f"stats has {name!r}", name in stats, True)

    check("flush_all", c.flush_all(noreply=False), True)
    check("get after flush", c.get("k"), None)
    c.quit()
    print("pymemcache compatibility: all checks passed")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Counts how many 16-byte-key / 100-byte-value items memcached holds with -m 64.

Compare with the "capacity" line of `cargo bench -p shoald --bench store`, which writes the
same keys (key:000000000000 ...) and values into a default 64 MiB Shoal store.

Usage: python3 server/benches/memcached_capacity.py [memcached binary] [items]
"""
import os
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "memcached"
    items = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    port = free_port()
    args = [binary, "-m", "64", "-p", str(port), "-U", "0", "-t", "1", "-l", "127.0.0.1"]
    if os.geteuid() == 0:
        args += ["-u", "root"]  # memcached refuses to run as root without it
    proc = subprocess.Popen(args)
    try:
        for _ in range(100):
            try:
                sock = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit("memcached did not start")
        value = b"v" * 100
        batch = []
        for i in range(items):
            key = b"key:%012d" % i
            batch.append(b"set %s 0 0 100 noreply\r\n%s\r\n" % (key, value))
            if len(batch) == 1000:
                sock.sendall(b"".join(batch))
                batch.clear()
        sock.sendall(b"".join(batch) + b"stats\r\n")
        reply = b""
        while not reply.endswith(b"END\r\n"):
            reply += sock.recv(65536)
        stats = dict(
            line.split(b" ")[1:3] for line in reply.split(b"\r\n") if line.startswith(b"STAT ")
        )
        print(
            "memcached %s: curr_items=%s evictions=%s limit_maxbytes=%s"
            % (
                stats[b"version"].decode(),
                stats[b"curr_items"].decode(),
                stats[b"evictions"].decode(),
                stats[b"limit_maxbytes"].decode(),
            )
        )
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()

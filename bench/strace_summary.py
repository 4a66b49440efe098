#!/usr/bin/env python3
"""Reads the output of one strace run of a proxy (bench/run.sh, STRACE_REQUESTS)
and prints one line of key=value figures per request:

    strace_summary.py COUNTS_FILE WRITES_FILE REQUESTS

COUNTS_FILE: `strace -c -f` summary (calls per system call).
WRITES_FILE: `strace -f -xx -s 1000000 -e trace=write,writev,sendto,sendmsg`
output. Every write whose data starts with a TLS record header (content type
20-23, version 3.x) went to a client; records in it are walked by their length
fields, so a write that carries several records counts them all. The other
writes are the proxy's plain HTTP/1.1 to the backend.

Prints: syscalls (all calls per request), the biggest five by name, epoll
(epoll_wait + epoll_pwait), client_writes, client_records, client_bytes,
backend_writes (each per request).
"""
import re
import sys

STRING = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(write|writev|sendto|sendmsg)\(")


def counts(path):
    calls = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                try:
                    calls[parts[-1]] = int(parts[3])
                except ValueError:
                    pass
    return calls


def writes(path):
    client_writes = client_records = client_bytes = backend_writes = 0
    with open(path) as f:
        for line in f:
            if not CALL.match(line) or "= -1" in line or "resumed>" in line:
                continue
            data = b"".join(bytes.fromhex(s.replace("\\x", "")) for s in STRING.findall(line))
            if len(data) >= 5 and 20 <= data[0] <= 23 and data[1] == 3:
                client_writes += 1
                client_bytes += len(data)
                pos = 0
                while pos + 5 <= len(data):
                    client_records += 1
                    pos += 5 + int.from_bytes(data[pos + 3:pos + 5], "big")
            elif data:
                backend_writes += 1
    return client_writes, client_records, client_bytes, backend_writes


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    calls = counts(argv[1])
    n = int(argv[3]) or 1
    cw, cr, cb, bw = writes(argv[2])
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
    epoll = calls.get("epoll_wait", 0) + calls.get("epoll_pwait", 0)
    print(f"syscalls={sum(calls.values()) / n:.2f} epoll={epoll / n:.2f} "
          f"client_writes={cw / n:.2f} client_records={cr / n:.2f} client_bytes={cb / n:.0f} "
          f"backend_writes={bw / n:.2f} top=" + ",".join(f"{k}:{v / n:.2f}" for k, v in top))


if __name__ == "__main__":
    main(sys.argv)

#!/usr/bin/env python3
"""Opens N TLS 1.3 keep-alive connections to 127.0.0.1:PORT, sends one small
request on each (HTTP/1.1, or HTTP/2 by ALPN), reads the whole answer and then
holds every connection open and idle, so that bench/run.sh can read the
server's resident memory with N idle connections.

    idle_conns.py PORT N PROTO READY_FILE RELEASE_FILE HOLD_SECONDS

PROTO is h1 or h2. When all connections are up (or failed), one line
"ok=N failed=F seconds=S" is written to READY_FILE; the connections are then
held until RELEASE_FILE exists or HOLD_SECONDS have passed, the number the
server had not closed by then goes to READY_FILE.open ("open=K"), and they are
closed with a
reset (SO_LINGER 0), so that no TIME_WAIT sockets use up the loopback ports
for the next run. Only 127.0.0.1 is ever connected to. At most CONCURRENCY
handshakes are in flight at once; every connection must finish its request
within PER_CONN_TIMEOUT seconds or it counts as failed.

No third-party modules: asyncio + ssl, and a minimal HTTP/2 client (preface,
SETTINGS, one HEADERS frame with a literal HPACK block, reading frames until
the stream ends).
"""

import asyncio
import os
import socket
import ssl
import struct
import sys
import time

HOST = "127.0.0.1"
CONCURRENCY = 256
PER_CONN_TIMEOUT = 30.0
PATH = b"/small"


def context(proto):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"] if proto == "h2" else ["http/1.1"])
    return ctx


async def h1_request(reader, writer):
    writer.write(b"GET " + PATH + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return status


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_literal(index, value):
    # Literal header field without indexing, indexed name (RFC 7541 6.2.2), no Huffman.
    assert index < 15 and len(value) < 127
    return bytes([index, len(value)]) + value


async def h2_request(reader, writer):
    block = (
        b"\x82"  # :method GET
        + b"\x87"  # :scheme https
        + hpack_literal(4, PATH)  # :path
        + hpack_literal(1, HOST.encode())  # :authority
    )
    writer.write(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + h2_frame(0x4, 0, 0)  # SETTINGS, none changed
        + h2_frame(0x1, 0x4 | 0x1, 1, block)  # HEADERS, END_HEADERS | END_STREAM
    )
    await writer.drain()
    status = None
    while True:
        header = await reader.readexactly(9)
        length = int.from_bytes(header[:3], "big")
        kind, flags = header[3], header[4]
        stream = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        payload = await reader.readexactly(length)
        if kind == 0x4 and not flags & 0x1:  # the server's SETTINGS: acknowledge
            writer.write(h2_frame(0x4, 0x1, 0))
        elif kind == 0x6 and not flags & 0x1:  # PING: answer
            writer.write(h2_frame(0x6, 0x1, 0, payload))
        elif kind == 0x7:  # GOAWAY
            raise ConnectionError("GOAWAY")
        elif stream == 1 and kind == 0x3:  # RST_STREAM
            raise ConnectionError("RST_STREAM")
        elif stream == 1 and kind == 0x1:
            # The first header of the block; servers send :status as an indexed
            # static-table entry (0x88 = 200) or a literal with name index 8.
            status = 200 if payload[:1] == b"\x88" else -1
        if stream == 1 and kind in (0x0, 0x1) and flags & 0x1:  # END_STREAM
            await writer.drain()
            return status


async def one(port, proto, ctx, slots, held):
    async with slots:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, port, ssl=ctx, server_hostname="localhost"),
                PER_CONN_TIMEOUT,
            )
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            return False
        try:
            request = h2_request if proto == "h2" else h1_request
            status = await asyncio.wait_for(request(reader, writer), PER_CONN_TIMEOUT)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            status = None
        held.append((reader, writer))
        return status == 200


async def main(port, n, proto, ready_file, release_file, hold):
    ctx = context(proto)
    slots = asyncio.Semaphore(CONCURRENCY)
    held = []
    start = time.monotonic()
    results = await asyncio.gather(*(one(port, proto, ctx, slots, held) for _ in range(n)))
    ok = sum(results)
    with open(ready_file + ".tmp", "w") as f:
        f.write(f"ok={ok} failed={n - ok} seconds={time.monotonic() - start:.1f}\n")
    os.rename(ready_file + ".tmp", ready_file)
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline and not os.path.exists(release_file):
        await asyncio.sleep(0.2)
    # How many the server still held open when the memory was read (one it
    # closed has seen its EOF by now).
    still_open = sum(1 for r, w in held if not w.transport.is_closing() and not r.at_eof())
    with open(ready_file + ".open", "w") as f:
        f.write(f"open={still_open}\n")
    for _, writer in held:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    await asyncio.sleep(0.1)


if __name__ == "__main__":
    if len(sys.argv) != 7 or sys.argv[3] not in ("h1", "h2"):
        sys.exit("usage: idle_conns.py PORT N h1|h2 READY_FILE RELEASE_FILE HOLD_SECONDS")
    port, n, proto = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    asyncio.run(main(port, n, proto, sys.argv[4], sys.argv[5], float(sys.argv[6])))

#!/usr/bin/env python3
"""A deliberately slow HTTP/1.1 client for back-pressure tests (stdlib only).

  slowclient.py --addr HOST:PORT --path /v2/... [options]

Sends one GET (Connection: close), reads the status line and headers, then
reads the body in two phases, hashing every body byte with SHA-256:

  slow phase  recv(--slow-chunk) then sleep(--slow-pause), repeated for at
              least --slow-seconds; if --go FILE is given it then keeps
              reading slowly until FILE exists (bounded by --timeout), so a
              test can look at the other processes while the transfer is
              still held back;
  fast phase  recv(1 MiB) as fast as possible until Content-Length bytes
              (or EOF when there is none).

--abort-after N closes the connection once N body bytes were read (no fast
phase) to play a client that goes away mid-blob.

Markers, so a shell test can synchronise without sleeping:
  --first-file FILE     written ("<seconds since start> <bytes>") when the
                        first body byte arrives
  --slowdone-file FILE  written when the minimum slow phase is over

Prints one JSON object on stdout: status, content_length, bytes, sha256,
t_first_byte, t_slow_end, t_end (seconds since the request was sent),
slow_bytes (body bytes read in the slow phase) and aborted.  Exits 0 if
the exchange ran to its end (or to --abort-after), 1 on errors or timeout.
"""

import argparse
import hashlib
import json
import os
import socket
import sys
import time


def write_marker(path, text):
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.rename(tmp, path)  # atomic: the reader never sees a partial file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True, help="HOST:PORT")
    ap.add_argument("--path", required=True)
    ap.add_argument("--slow-seconds", type=float, default=8.0)
    ap.add_argument("--slow-chunk", type=int, default=16384)
    ap.add_argument("--slow-pause", type=float, default=0.05)
    ap.add_argument("--go", help="stay slow until this file exists")
    ap.add_argument("--abort-after", type=int, default=0)
    ap.add_argument("--first-file")
    ap.add_argument("--slowdone-file")
    ap.add_argument("--rcvbuf", type=int, default=0,
                    help="SO_RCVBUF for the socket (0: kernel default)")
    ap.add_argument("--timeout", type=float, default=90.0,
                    help="overall deadline in seconds")
    a = ap.parse_args()

    host, port = a.addr.rsplit(":", 1)
    t0 = time.monotonic()
    deadline = t0 + a.timeout
    res = {"status": None, "content_length": None, "bytes": 0, "sha256": None,
           "t_first_byte": None, "t_slow_end": None, "t_end": None,
           "slow_bytes": 0, "aborted": False}

    def left():
        d = deadline - time.monotonic()
        if d <= 0:
            raise TimeoutError("deadline of %.0fs passed" % a.timeout)
        return d

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if a.rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
    rc = 1
    try:
        s.settimeout(left())
        s.connect((host, int(port)))
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: slowclient\r\n"
                   "Accept: */*\r\nConnection: close\r\n\r\n"
                   % (a.path, a.addr)).encode())

        # Headers: read small pieces so little of the body comes with them.
        head = b""
        while b"\r\n\r\n" not in head:
            s.settimeout(left())
            d = s.recv(1024)
            if not d:
                raise ConnectionError("EOF inside the headers")
            head += d
            if len(head) > 65536:
                raise ValueError("headers too long")
        head, body = head.split(b"\r\n\r\n", 1)
        lines = head.decode("iso-8859-1").split("\r\n")
        res["status"] = int(lines[0].split()[1])
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            if k.strip().lower() == "content-length":
                res["content_length"] = int(v.strip())
        clen = res["content_length"]
        h = hashlib.sha256()
        n = 0

        def got(data):
            nonlocal n
            if data and res["t_first_byte"] is None:
                res["t_first_byte"] = round(time.monotonic() - t0, 3)
                write_marker(a.first_file, "%s %d" % (res["t_first_byte"], len(data)))
            h.update(data)
            n += len(data)

        def done():
            return (clen is not None and n >= clen) or \
                (a.abort_after and n >= a.abort_after)

        got(body)
        eof = False
        # Slow phase.
        slow_until = time.monotonic() + a.slow_seconds
        slowdone = False
        while not done():
            now = time.monotonic()
            if now >= slow_until:
                if not slowdone:
                    slowdone = True
                    res["t_slow_end"] = round(now - t0, 3)
                    write_marker(a.slowdone_file, "%s %d" % (res["t_slow_end"], n))
                if not a.go or os.path.exists(a.go):
                    break
            want = a.slow_chunk
            if a.abort_after:
                want = min(want, a.abort_after - n)
            s.settimeout(left())
            d = s.recv(want)
            if not d:
                eof = True
                break
            got(d)
            time.sleep(a.slow_pause)
        res["slow_bytes"] = n
        if a.abort_after:
            res["aborted"] = n >= a.abort_after
        else:
            # Fast phase.
            while not eof and not done():
                s.settimeout(left())
                d = s.recv(1 << 20)
                if not d:
                    eof = True
                    break
                got(d)
        res["bytes"] = n
        res["sha256"] = h.hexdigest()
        res["t_end"] = round(time.monotonic() - t0, 3)
        if a.abort_after:
            rc = 0 if res["aborted"] else 1
        else:
            rc = 0 if clen is None or n == clen else 1
    except Exception as e:  # report, never hang
        res["error"] = "%s: %s" % (type(e).__name__, e)
        res["t_end"] = round(time.monotonic() - t0, 3)
    finally:
        s.close()
    json.dump(res, sys.stdout)
    sys.stdout.write("\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())

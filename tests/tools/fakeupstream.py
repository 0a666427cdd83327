#!/usr/bin/env python3
"""A misbehaving upstream for fault tests: what no real registry does on
demand.  One mode per process:

  hang      accept, read the request, never answer
  429       answer 429 Too Many Requests with Retry-After and rate-limit headers
  503       answer 503 Service Unavailable with Retry-After and an OCI error body
  500       answer 500 with an OCI error body
  truncate  announce Content-Length 1048576, send half, close
  reset     send headers and some body, then reset the connection (RST)
  badhead   answer with a malformed status line
  dupcl     two Content-Length headers that disagree
  badchunk  a chunked body whose chunk size is "-1"
  chunked   answer every GET with a 200 KB chunked body (no Content-Length),
            as a registry may for tags/list or referrers
  tags      a tags/list that pages with n and last and a Link header, as
            distribution 3 does (Debian's distribution 2.8 ignores n)

  proxy-faulty  a proxy in front of a real registry (--target URL) that
            injects --fault into its first --count successful blob GETs
            (default 1; -1: all) of at least --min-size bytes, then passes
            everything through unchanged:
              truncate  the right Content-Length, half the body, close
              flip      the right Content-Length and length, one byte flipped
              reset     the right Content-Length, half the body, then RST
              cl-long   Content-Length 1000 larger than the body, body, close
              cl-short  Content-Length 1000 smaller than the body, body, close
              noclen    no Content-Length, half the body, close
              stall     the right body, held after its first half (--gate)
            With --gate FILE a faulted body stops after its first half until
            FILE exists (at most 60 s), so a test can act while it is held.
            --flip-at N flips byte N instead of the middle one.
            --digest-manifest-status CODE answers every GET of a manifest by
            digest with CODE and an OCI error body instead of passing it
            on; with --armed FILE only while FILE exists.
            --fault none injects nothing (for the two options below).
            --require-basic USER:PASS answers 401 with a Basic challenge
            to any request without those credentials, as a private
            registry does.
            --redirect-blobs answers blob GETs with a 307 to the same path
            on 127.0.0.2 (same port, with a presigned-looking query), as
            registries that keep blobs on S3 or a CDN do; that address
            serves them and logs "redirected METHOD PATH auth=yes|no".

Usage: fakeupstream.py MODE PORT [proxy-faulty options].  Logs one line per
request to stdout (and one "fault FAULT PATH" line per injected fault).
HEAD answers never carry a body.
"""
import argparse
import base64
import http.client
import os
import time
import json
import socket
import struct
import sys
import threading
import urllib.parse

TAGS = ["1.0", "1.1", "2.0", "latest"]
LOG_LOCK = threading.Lock()


def log(*words):
    """One whole line on stdout, whichever thread writes it."""
    with LOG_LOCK:
        print(*words, flush=True)


def read_head(conn):
    """The request head as (request line, [(name, value)...]), or None.
    Requests here never have a body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = []
    for h in lines[1:]:
        if ":" in h:
            k, v = h.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return lines[0], headers


def read_request(conn):
    head = read_head(conn)
    return None if head is None else head[0]


def tags_answer(line):
    """One page of TAGS for `GET /v2/NAME/tags/list?n=&last=`."""
    target = line.split(" ")[1]
    url = urllib.parse.urlsplit(target)
    if not url.path.endswith("/tags/list"):
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    name = url.path[len("/v2/"):-len("/tags/list")]
    q = urllib.parse.parse_qs(url.query)
    tags = [t for t in TAGS if t > q.get("last", [""])[0]]
    link = b""
    if "n" in q:
        n = int(q["n"][0])
        if len(tags) > n:
            tags = tags[:n]
            link = ('Link: </v2/%s/tags/list?n=%d&last=%s>; rel="next"\r\n'
                    % (name, n, tags[-1])).encode()
    body = json.dumps({"name": name, "tags": tags}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + link +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def handle(conn, mode):
    try:
        while True:
            line = read_request(conn)
            if line is None:
                return
            log("request", mode, line)
            if mode == "hang":
                conn.recv(1)        # until the peer gives up
                return
            head_only = line.startswith("HEAD ")
            if mode == "429":
                body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
                conn.sendall(b"HTTP/1.1 429 Too Many Requests\r\n"
                             b"Content-Type: application/json\r\n"
                             b"Retry-After: 17\r\n"
                             b"RateLimit-Limit: 100;w=21600\r\n"
                             b"RateLimit-Remaining: 0;w=21600\r\n"
                             b"WWW-Authenticate: Bearer realm=\"http://127.0.0.1:1/token\"\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) +
                             (b"" if head_only else body))
                continue
            if mode == "503":
                body = b'{"errors":[{"code":"UNAVAILABLE","message":"down for maintenance"}]}'
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\n"
                             b"Content-Type: application/json\r\n"
                             b"Retry-After: 30\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) +
                             (b"" if head_only else body))
                continue
            if mode == "500":
                body = b'{"errors":[{"code":"UNKNOWN","message":"boom"}]}'
                conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\n"
                             b"Content-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) +
                             (b"" if head_only else body))
                continue
            if mode == "truncate":
                conn.sendall(b"HTTP/1.1 200 OK\r\n"
                             b"Content-Type: application/octet-stream\r\n"
                             b"Content-Length: 1048576\r\n\r\n" + b"x" * 524288)
                return
            if mode == "reset":
                conn.sendall(b"HTTP/1.1 200 OK\r\n"
                             b"Content-Type: application/octet-stream\r\n"
                             b"Content-Length: 1048576\r\n\r\n" + b"y" * 65536)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                struct.pack("ii", 1, 0))
                return
            if mode == "chunked":
                conn.sendall(b"HTTP/1.1 200 OK\r\n"
                             b"Content-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                for i in range(50):
                    piece = (b"%04d" % i) * 1024
                    conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                conn.sendall(b"0\r\n\r\n")
                continue
            if mode == "tags":
                conn.sendall(tags_answer(line))
                continue
            if mode == "dupcl":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                             b"Content-Length: 5\r\n\r\nhello")
                continue
            if mode == "badchunk":
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                             b"\r\n-1\r\nxx\r\n0\r\n\r\n")
                return
            if mode == "badhead":
                conn.sendall(b"HTTP/9 nonsense\r\n\r\n")
                return
    except OSError:
        pass
    finally:
        conn.close()


def serve_proxy(conn, faults, redirected=False):
    try:
        proxy_faulty(conn, faults, redirected)
    except OSError:
        pass
    finally:
        conn.close()


class Faults:
    """What proxy-faulty injects, and how many times it still will."""

    def __init__(self, argv):
        ap = argparse.ArgumentParser(prog="fakeupstream.py proxy-faulty PORT")
        ap.add_argument("--target", required=True, help="http://HOST:PORT of a registry")
        ap.add_argument("--fault", required=True, choices=[
            "truncate", "flip", "reset", "cl-long", "cl-short", "noclen", "stall",
            "none"])
        ap.add_argument("--count", type=int, default=1)
        ap.add_argument("--min-size", type=int, default=0)
        ap.add_argument("--gate")
        ap.add_argument("--flip-at", type=int)
        ap.add_argument("--digest-manifest-status", type=int)
        ap.add_argument("--armed")
        ap.add_argument("--require-basic")
        ap.add_argument("--redirect-blobs", action="store_true")
        a = ap.parse_args(argv)
        u = urllib.parse.urlsplit(a.target)
        if u.scheme != "http" or not u.port:
            ap.error("--target must be http://HOST:PORT")
        self.host, self.port = u.hostname, u.port
        self.fault, self.left, self.min_size, self.gate = a.fault, a.count, a.min_size, a.gate
        self.flip_at, self.armed = a.flip_at, a.armed
        self.digest_manifest_status = a.digest_manifest_status
        self.basic = ("Basic " + base64.b64encode(a.require_basic.encode()).decode()
                      if a.require_basic else None)
        self.redirect_blobs = a.redirect_blobs
        self.port_self = None
        if a.fault == "none":
            self.left = 0
        self.lock = threading.Lock()

    def refuse(self, method, path):
        """The status to answer instead of proxying, or None."""
        if self.digest_manifest_status is None or method != "GET":
            return None
        if "/manifests/sha256:" not in path:
            return None
        if self.armed and not os.path.exists(self.armed):
            return None
        return self.digest_manifest_status

    def take(self, method, path, status, size):
        """Should this response be faulted?  Counts it if so."""
        if method != "GET" or "/blobs/" not in path or status != 200 or size < self.min_size:
            return False
        with self.lock:
            if self.left == 0:
                return False
            if self.left > 0:
                self.left -= 1
            return True

    def wait_gate(self):
        if not self.gate:
            return
        deadline = time.monotonic() + 60
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.05)


PASS_REQUEST = ("accept", "range", "if-none-match", "authorization")
DROP_RESPONSE = ("content-length", "transfer-encoding", "connection", "keep-alive")


def proxy_faulty(conn, faults, redirected=False):
    """One client connection of proxy-faulty; returns when it must close."""
    while True:
        head = read_head(conn)
        if head is None:
            return
        line, headers = head
        method, path = line.split(" ")[0], line.split(" ")[1]
        auth = [v for k, v in headers if k.lower() == "authorization"]
        if redirected:
            log("redirected", method, path.split("?")[0], "auth=" + ("yes" if auth else "no"))
            headers = [(k, v) for k, v in headers if k.lower() != "authorization"]
            path = path.split("?")[0]
        else:
            log("request proxy-faulty", line)
        if not redirected and faults.basic and auth != [faults.basic]:
            body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
            conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                         b"WWW-Authenticate: Basic realm=\"fakeupstream\"\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
            continue
        if not redirected and faults.redirect_blobs and method == "GET" and "/blobs/" in path:
            loc = "http://127.0.0.2:%d%s?X-Amz-Signature=presigned" % (faults.port_self, path)
            conn.sendall(("HTTP/1.1 307 Temporary Redirect\r\nLocation: %s\r\n"
                          "Content-Length: 0\r\n\r\n" % loc).encode())
            continue
        if faults.basic:
            # The registry behind is open: what it gets is the test's business.
            headers = [(k, v) for k, v in headers if k.lower() != "authorization"]
        refused = faults.refuse(method, path)
        if refused is not None:
            log("refused", refused, path)
            body = b'{"errors":[{"code":"UNAVAILABLE","message":"refused by the test"}]}'
            conn.sendall(b"HTTP/1.1 %d Refused\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % (refused, len(body)) + body)
            continue
        up = http.client.HTTPConnection(faults.host, faults.port, timeout=30)
        try:
            up.putrequest(method, path, skip_accept_encoding=True)
            for k, v in headers:
                if k.lower() in PASS_REQUEST:
                    up.putheader(k, v)
            up.endheaders()
            resp = up.getresponse()
            body = resp.read()
            status, reason = resp.status, resp.reason
            rh = [(k, v) for k, v in resp.getheaders() if k.lower() not in DROP_RESPONSE]
            length = resp.getheader("Content-Length")
        finally:
            up.close()
        if method == "HEAD":
            size = int(length) if length is not None else 0
        else:
            size = len(body)
        fault = faults.fault if faults.take(method, path, status, size) else None
        head = "HTTP/1.1 %d %s\r\n" % (status, reason)
        head += "".join("%s: %s\r\n" % kv for kv in rh)
        if fault is None:
            conn.sendall((head + "Content-Length: %d\r\n\r\n" % size).encode("latin-1") +
                         (b"" if method == "HEAD" else body))
            continue
        log("fault", fault, path, size)
        half = size // 2
        if fault == "flip":
            at = half if faults.flip_at is None else faults.flip_at
            body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:]
        clen = {"cl-long": size + 1000, "cl-short": size - 1000, "noclen": None}.get(fault, size)
        if clen is None:
            head += "Connection: close\r\n\r\n"
        else:
            head += "Content-Length: %d\r\n\r\n" % clen
        conn.sendall(head.encode("latin-1") + body[:half])
        faults.wait_gate()
        if fault in ("truncate", "noclen"):
            return
        if fault == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        conn.sendall(body[half:])
        if fault in ("cl-long", "cl-short"):
            return


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    faults = Faults(sys.argv[3:]) if mode == "proxy-faulty" else None
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    log("listening", mode, port)
    if faults is not None:
        faults.port_self = port
    if faults is not None and faults.redirect_blobs:
        other = socket.socket()
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.2", port))
        other.listen(64)

        def accept_redirected():
            while True:
                c, _ = other.accept()
                threading.Thread(target=serve_proxy, args=(c, faults, True),
                                 daemon=True).start()
        threading.Thread(target=accept_redirected, daemon=True).start()
    while True:
        conn, _ = srv.accept()
        if faults is not None:
            threading.Thread(target=serve_proxy, args=(conn, faults), daemon=True).start()
        else:
            threading.Thread(target=handle, args=(conn, mode), daemon=True).start()


if __name__ == "__main__":
    main()

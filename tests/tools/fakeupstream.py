#!/usr/bin/env python3
"""A misbehaving upstream for fault tests: what no real registry does on
demand.  One mode per process:

  hang      accept, read the request, never answer
  429       answer 429 Too Many Requests with Retry-After and rate-limit headers
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

Usage: fakeupstream.py MODE PORT.  Logs one line per request to stdout.
"""
import json
import socket
import struct
import sys
import threading
import urllib.parse

TAGS = ["1.0", "1.1", "2.0", "latest"]


def read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


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
            print("request", mode, line, flush=True)
            if mode == "hang":
                conn.recv(1)        # until the peer gives up
                return
            if mode == "429":
                body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
                conn.sendall(b"HTTP/1.1 429 Too Many Requests\r\n"
                             b"Content-Type: application/json\r\n"
                             b"Retry-After: 17\r\n"
                             b"RateLimit-Limit: 100;w=21600\r\n"
                             b"RateLimit-Remaining: 0;w=21600\r\n"
                             b"WWW-Authenticate: Bearer realm=\"http://127.0.0.1:1/token\"\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                continue
            if mode == "500":
                body = b'{"errors":[{"code":"UNKNOWN","message":"boom"}]}'
                conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\n"
                             b"Content-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
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


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    print("listening", mode, port, flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn, mode), daemon=True).start()


if __name__ == "__main__":
    main()

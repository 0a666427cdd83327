#!/usr/bin/env python3
"""Minimal Docker registry token server for tests (the "Docker Hub shape").

Implements distribution's docs/spec/auth/token.md and oauth.md:
  GET  /token?service=S&scope=A&scope=B   anonymous or HTTP Basic auth
  POST /token  (form) grant_type=password, username, password, service,
               scope (space separated), client_id
Tokens are JWTs signed RS256 by `openssl dgst -sha256 -sign KEY` with the
DER certificate in the header's x5c, so a registry configured with
auth.token.rootcertbundle=CERT, issuer=ISSUER, service=SERVICE accepts them.

Policy: anonymous clients get `pull` on repositories matching --public
(comma separated fnmatch globs, default "*"; "" = nothing public); users
from --user NAME:PASSWORD (default testuser:testpassword) get pull,push on
every repository and everything asked on other resource types.  A wrong
password gets 401.

Logs exactly one line per /token request to stdout, starting "token ", so
tests can count token requests; the first line printed is "listening ...".
"""

import argparse
import base64
import binascii
import fnmatch
import json
import subprocess
import sys
import time
import urllib.parse
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rfc3339(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Signer:
    def __init__(self, key, cert):
        der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        self.key = key

    def sign(self, claims):
        signing_input = (b64url(json.dumps(self.header).encode()) + "." +
                         b64url(json.dumps(claims).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signing_input.encode(), check=True,
                             capture_output=True).stdout
        return signing_input + "." + b64url(sig)


def parse_scope(scope):
    """'repository:ns/name:pull,push' -> (type, name, [actions]).

    The name may itself contain ':' (host:port/...), so split at the first
    and last colon only."""
    try:
        rtype, rest = scope.split(":", 1)
        name, actions = rest.rsplit(":", 1)
    except ValueError:
        return None
    return rtype, name, [a for a in actions.split(",") if a]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "regcache-test-tokenserver"

    def log_message(self, fmt, *args):  # our own one line per request only
        pass

    # --- plumbing -------------------------------------------------------
    def reply(self, status, body, extra_headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_token(self, **fields):
        parts = ["%s=%s" % (k, json.dumps(v) if isinstance(v, str) and (" " in v or not v) else v)
                 for k, v in fields.items()]
        print("token client=%s %s" % (self.client_address[0], " ".join(parts)), flush=True)

    def basic_user(self):
        """Return (user, ok). user None = anonymous."""
        hdr = self.headers.get("Authorization", "")
        if not hdr.lower().startswith("basic "):
            return None, True
        try:
            user, _, pw = base64.b64decode(hdr[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "?", False
        return user, self.server.opts.users.get(user) == pw

    # --- policy ---------------------------------------------------------
    def grant(self, user, scopes):
        opts = self.server.opts
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if not parsed:
                continue
            rtype, name, wanted = parsed
            if user is not None and rtype == "repository":
                allowed = [a for a in wanted if a in ("pull", "push")]
            elif user is not None:
                allowed = wanted
            elif rtype == "repository" and any(fnmatch.fnmatchcase(name, p) for p in opts.public):
                allowed = [a for a in wanted if a == "pull"]
            else:
                allowed = []
            access.append({"type": rtype, "name": name, "actions": allowed})
        return access

    def issue(self, method, user, service, scopes, client_id):
        opts = self.server.opts
        if service and service != opts.service:
            self.log_token(method=method, user=user or "-", service=service,
                           scope=" ".join(scopes), status=400)
            return self.reply(400, {"error": "invalid_request",
                                    "details": "unknown service %r" % service})
        access = self.grant(user, scopes)
        now = int(time.time())
        claims = {
            "iss": opts.issuer, "sub": user or "", "aud": opts.service,
            "exp": now + opts.expires_in, "nbf": now - 1, "iat": now,
            "jti": uuid.uuid4().hex, "access": access,
        }
        token = self.server.signer.sign(claims)
        if opts.issued:
            # The secret scan of the suite looks for these in regcache's logs.
            with open(opts.issued, "a") as f:
                f.write(token + "\n")
        granted = " ".join("%s:%s:%s" % (a["type"], a["name"], ",".join(a["actions"]))
                           for a in access)
        self.log_token(method=method, user=user or "-", client_id=client_id or "-",
                       service=service or "-", scope=" ".join(scopes), granted=granted,
                       status=200)
        body = {"token": token, "access_token": token, "expires_in": opts.expires_in,
                "issued_at": rfc3339(now)}
        if method == "POST":
            body["scope"] = " ".join(scopes)
        self.reply(200, body)

    def unauthorized(self, method, user, scopes):
        self.log_token(method=method, user=user, scope=" ".join(scopes), status=401)
        self.reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                     "message": "incorrect username or password"}]},
                   [("WWW-Authenticate", 'Basic realm="regcache-test-tokenserver"')])

    # --- endpoints ------------------------------------------------------
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            return self.reply(404, {"error": "not found"})
        q = urllib.parse.parse_qs(url.query)
        scopes = [s for v in q.get("scope", []) for s in v.split()]
        user, ok = self.basic_user()
        if not ok:
            return self.unauthorized("GET", user, scopes)
        self.issue("GET", user, q.get("service", [""])[0], scopes,
                   q.get("client_id", [""])[0])

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        if url.path != "/token":
            return self.reply(404, {"error": "not found"})
        f = {k: v[0] for k, v in form.items()}
        scopes = f.get("scope", "").split()
        if f.get("grant_type") != "password":
            self.log_token(method="POST", scope=" ".join(scopes), status=400)
            return self.reply(400, {"error": "unsupported_grant_type"})
        if not f.get("client_id"):
            self.log_token(method="POST", scope=" ".join(scopes), status=400)
            return self.reply(400, {"error": "invalid_request", "details": "client_id required"})
        user = f.get("username", "")
        if self.server.opts.users.get(user) != f.get("password"):
            return self.unauthorized("POST", user or "-", scopes)
        self.issue("POST", user, f.get("service", ""), scopes, f["client_id"])


def main():
    ap = argparse.ArgumentParser(description="test token server")
    ap.add_argument("--port", type=int, required=True, help="0 = pick one")
    ap.add_argument("--key", required=True, help="RSA private key (PEM)")
    ap.add_argument("--cert", required=True, help="certificate of --key (PEM)")
    ap.add_argument("--issuer", default="regcache-test-issuer")
    ap.add_argument("--service", default="regcache-test-registry")
    ap.add_argument("--expires-in", type=int, default=60, help="token lifetime, seconds")
    ap.add_argument("--public", default="*", help='comma separated globs; "" = none')
    ap.add_argument("--user", action="append", help="NAME:PASSWORD (repeatable)")
    ap.add_argument("--issued", help="append every token issued to this file")
    opts = ap.parse_args()
    opts.public = [p for p in opts.public.split(",") if p]
    opts.users = dict(u.split(":", 1) for u in (opts.user or ["testuser:testpassword"]))

    server = ThreadingHTTPServer(("127.0.0.1", opts.port), Handler)
    server.daemon_threads = True
    server.opts = opts
    server.signer = Signer(opts.key, opts.cert)
    print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())

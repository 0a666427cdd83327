#!/usr/bin/env python3
"""A fake AWS for tests: ECR's GetAuthorizationToken, STS and IMDSv2.

One plain-HTTP port on 127.0.0.1 serves three roles, told apart by the
request (as the real endpoints would be by host name):

  POST /  X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken
      ECR.  The SigV4 signature is verified in full (canonical request,
      string to sign, derived key) with the secret this process knows for
      the access key: the static pair from --access-key/--secret-key, or
      temporary credentials it issued itself through STS or IMDS (those
      also need X-Amz-Security-Token, signed, equal to the issued token,
      and unexpired).  On success it makes a fresh password, installs it
      for user "AWS" in the registry's htpasswd file (--htpasswd) before
      answering, and returns it the way ECR does: authorizationToken =
      base64("AWS:" + password), expiresAt = now + --password-ttl.
  POST /  (form) or GET /?Action=AssumeRoleWithWebIdentity&...
      STS, unsigned like AWS.  Accepts only --role-arn and the current web
      identity token (what --web-identity-token-file holds at the time of
      the call, else --web-identity-token or the control below), and
      answers AWS's XML with temporary credentials valid for --temp-ttl
      seconds.
  PUT /latest/api/token, GET /latest/meta-data/iam/security-credentials/[ROLE]
      IMDSv2: a session token first, then the role name and temporary
      credentials.  Requests without a valid session token get 401, so
      IMDSv1 is refused.

A password that expires with no newer one issued is replaced in the
htpasswd file by one nobody was given, so the registry refuses an expired
password as ECR would (--keep-expired turns that off).  Only the latest
password works at the registry: htpasswd holds one entry per user.

Test controls (POST unless noted):
  /_control/fail?n=N[&status=S]   the next N ECR calls answer S (500)
  /_control/rotate                install a new password no client got
                                  (the registry's credentials change behind
                                  the client's back)
  /_control/web-identity-token    body = the token STS accepts from now on
  /_control/expire-temp           every temporary credential expires now
  GET /_control/stats             the counters (also in --stats-file)

Counters: ecr_calls, ecr_ok, ecr_failed_injected, ecr_by_source (static,
sts, imds), bad_signatures, unknown_keys, expired_tokens, sts_calls,
sts_ok, sts_refused, sts_tokens_seen (distinct web identity tokens
accepted), imds_calls, imds_tokens, imds_creds, imds_refused,
passwords_issued, passwords_expired, rotations.

Every issued password goes on its own line of --issued; every
authorizationToken (the base64 form), temporary secret key, session token
and IMDS token on its own line of --issued-creds, so a test can check
that none of them reaches a log.  The process prints "listening on
127.0.0.1:PORT, ..." on stdout once ready and logs one line per request
to stderr, never a secret.

--selftest DIR checks the signature verifier against the AWS Signature
Version 4 test suite (DIR/<case>/<case>.{req,creq,sts,authz}) and prints
TAP: every case verifies, its canonical request and string to sign match
the suite's, and a changed byte makes it fail.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape as xml_escape

ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"
ECR_CONTENT_TYPE = "application/x-amz-json-1.1"
STS_VERSION = "2011-06-15"
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
SIGV4_ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 300          # seconds between X-Amz-Date and now, as AWS allows
MAX_BODY = 1 << 20
IMDS_TTL_MAX = 21600
CRED_PREFIX = "/latest/meta-data/iam/security-credentials"

# The test suite's documented example key pair and scope.
SUITE_AKID = "AKIDEXAMPLE"
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_REGION = "us-east-1"
SUITE_SERVICE = "service"

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       b"0123456789-_.~")


# --- SigV4 --------------------------------------------------------------
# Requests reach the verifier as the raw request target and header lines
# (str holding the bytes as latin-1, as http.server hands them over), so
# what is hashed is exactly what came over the wire.

def sigv4_encode(raw):
    """Percent-encode every byte of raw (bytes) but the unreserved ones."""
    return "".join(chr(b) if b in UNRESERVED else "%%%02X" % b for b in raw)


def sigv4_decode(s):
    """Undo %XX escapes of s (a latin-1 str), leaving malformed ones."""
    return urllib.parse.unquote_to_bytes(s.encode("latin-1"))


def canonical_uri(target):
    """The path of target normalized for a non-S3 service: empty and "."
    segments dropped, ".." applied, each segment encoded as it was sent
    (so a '%' already there is encoded again)."""
    path = target.split("?", 1)[0]
    segs = []
    trailing = False
    parts = path.split("/")
    for i, seg in enumerate(parts):
        last = i == len(parts) - 1
        if seg == "":
            # An empty last part means the path ended with '/'.
            if last and i > 0:
                trailing = True
            continue
        trailing = False
        if seg == ".":
            trailing = last
            continue
        if seg == "..":
            if segs:
                segs.pop()
            trailing = last
            continue
        segs.append(seg)
    if not segs:
        return "/"
    out = "/" + "/".join(sigv4_encode(s.encode("latin-1")) for s in segs)
    return out + "/" if trailing else out


def canonical_query(target):
    """The query of target with each key and value decoded, encoded again,
    and sorted by key then value."""
    if "?" not in target:
        return ""
    params = []
    for part in target.split("?", 1)[1].split("&"):
        if part == "":
            continue
        k, _, v = part.partition("=")
        params.append((sigv4_encode(sigv4_decode(k)), sigv4_encode(sigv4_decode(v))))
    params.sort()
    return "&".join("%s=%s" % kv for kv in params)


def canonical_header_value(v):
    """Each line of v (obsolete line folding) trimmed, inner runs of white
    space collapsed to one space, the lines joined with ','."""
    lines = [" ".join(line.split()) for line in re.split(r"\r\n|\r|\n", v)]
    return ",".join(line for line in lines if line)


def sigv4_key(secret, date, region, service):
    k = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


class SigError(Exception):
    """A request AWS would refuse: HTTP status, __type, message."""

    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


AUTHZ_RE = re.compile(r"^AWS4-HMAC-SHA256\s+(.*)$", re.S)
AMZ_DATE_RE = re.compile(r"^\d{8}T\d{6}Z$")


def parse_authorization(value):
    """'AWS4-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..' ->
    (credential parts, signed header names, signature)."""
    m = AUTHZ_RE.match(value or "")
    if not m:
        raise SigError(400, "IncompleteSignatureException",
                       "Authorization header requires the AWS4-HMAC-SHA256 algorithm")
    fields = {}
    for item in m.group(1).split(","):
        k, eq, v = item.strip().partition("=")
        if not eq or k in fields:
            raise SigError(400, "IncompleteSignatureException",
                           "Authorization header is malformed")
        fields[k] = v
    for k in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(k):
            raise SigError(400, "IncompleteSignatureException",
                           "Authorization header requires '%s' parameter" % k)
    cred = fields["Credential"].split("/")
    if len(cred) != 5 or cred[4] != "aws4_request" or not all(cred):
        raise SigError(400, "IncompleteSignatureException",
                       "Credential must have the form AKID/DATE/REGION/SERVICE/aws4_request")
    signed = fields["SignedHeaders"].split(";")
    if any(h == "" or h != h.lower() for h in signed):
        raise SigError(400, "IncompleteSignatureException",
                       "SignedHeaders must be lower-case names separated by ';'")
    if not re.fullmatch(r"[0-9a-f]{64}", fields["Signature"]):
        raise SigError(403, "InvalidSignatureException",
                       "The request signature is not 64 lower-case hex digits")
    return cred, fields["SignedHeaders"], fields["Signature"]


def sigv4_verify(method, target, headers, body, lookup, region, service, now):
    """Verify a SigV4-signed request.

    headers: list of (name, value) in the order received; body: bytes;
    lookup(akid) -> (secret, credential record) or None; now: unix time.
    Returns (record, canonical request, string to sign); raises SigError.
    """
    by_name = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    authz = by_name.get("authorization")
    if not authz:
        raise SigError(400, "MissingAuthenticationTokenException",
                       "Missing Authentication Token")
    (akid, date, cregion, cservice, _), signed_str, signature = \
        parse_authorization(authz[0])
    signed = signed_str.split(";")
    for must in ("host", "x-amz-date"):
        if must not in signed:
            raise SigError(403, "InvalidSignatureException",
                           "'%s' must be a signed header" % must)
    for name in signed:
        if name not in by_name:
            raise SigError(403, "InvalidSignatureException",
                           "signed header '%s' is not in the request" % name)
    amz_date = by_name["x-amz-date"][0].strip()
    if not AMZ_DATE_RE.match(amz_date):
        raise SigError(400, "IncompleteSignatureException",
                       "X-Amz-Date must have the form YYYYMMDD'T'HHMMSS'Z'")
    if date != amz_date[:8]:
        raise SigError(403, "InvalidSignatureException",
                       "Credential date %s does not match X-Amz-Date %s" % (date, amz_date))
    if cregion != region:
        raise SigError(403, "InvalidSignatureException",
                       "Credential should be scoped to a valid region, not '%s'" % cregion)
    if cservice != service:
        raise SigError(403, "InvalidSignatureException",
                       "Credential should be scoped to correct service: '%s'" % service)
    try:
        stamp = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        raise SigError(400, "IncompleteSignatureException",
                       "X-Amz-Date is not a valid date") from None
    if abs(stamp - now) > MAX_SKEW:
        raise SigError(403, "InvalidSignatureException",
                       "Signature expired: %s is not within 5 minutes of %s"
                       % (amz_date, amz_time(now)))
    found = lookup(akid)
    if found is None:
        raise SigError(403, "UnrecognizedClientException",
                       "The security token included in the request is invalid.")
    secret, record = found

    creq = "\n".join([
        method,
        canonical_uri(target),
        canonical_query(target),
        "".join("%s:%s\n" % (n, ",".join(canonical_header_value(v) for v in by_name[n]))
                for n in signed),
        signed_str,
        hashlib.sha256(body).hexdigest(),
    ])
    scope = "%s/%s/%s/aws4_request" % (date, region, service)
    sts = "\n".join([SIGV4_ALGORITHM, amz_date, scope,
                     hashlib.sha256(creq.encode("latin-1")).hexdigest()])
    want = hmac.new(sigv4_key(secret, date, region, service), sts.encode("latin-1"),
                    hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, signature):
        raise SigError(403, "InvalidSignatureException",
                       "The request signature we calculated does not match the "
                       "signature you provided. Check your AWS Secret Access Key "
                       "and signing method.")
    return record, creq, sts


def amz_time(t):
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def iso_time(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# --- state ----------------------------------------------------------------

class Cred:
    """One access key this fake knows."""

    def __init__(self, akid, secret, source, token=None, expires=None):
        self.akid = akid
        self.secret = secret
        self.source = source        # static, sts or imds
        self.token = token          # session token of temporary credentials
        self.expires = expires      # unix time, None = never


class State:
    """Everything the handlers share, guarded by one lock."""

    def __init__(self, opts):
        self.opts = opts
        self.lock = threading.RLock()
        self.creds = {opts.access_key: Cred(opts.access_key, opts.secret_key, "static")}
        self.imds_tokens = {}           # token -> expiry
        self.web_token = opts.web_identity_token
        self.fail_next = 0
        self.fail_status = 500
        self.password_seq = 0           # id of the password now in htpasswd
        self.tokens_seen = set()
        self.stats = {
            "ecr_calls": 0, "ecr_ok": 0, "ecr_failed_injected": 0,
            "ecr_by_source": {"static": 0, "sts": 0, "imds": 0},
            "bad_signatures": 0, "unknown_keys": 0, "expired_tokens": 0,
            "sts_calls": 0, "sts_ok": 0, "sts_refused": 0, "sts_tokens_seen": 0,
            "imds_calls": 0, "imds_tokens": 0, "imds_creds": 0, "imds_refused": 0,
            "passwords_issued": 0, "passwords_expired": 0, "rotations": 0,
        }
        self.write_stats()

    def bump(self, key, sub=None):
        with self.lock:
            if sub is None:
                self.stats[key] += 1
            else:
                self.stats[key][sub] += 1
            self.write_stats()

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.stats))

    def write_stats(self):
        if self.opts.stats_file:
            atomic_write(self.opts.stats_file, json.dumps(self.stats, sort_keys=True) + "\n")

    def record_secret(self, path, *values):
        if path:
            with self.lock, open(path, "a", encoding="utf-8") as f:
                for v in values:
                    f.write(v + "\n")

    def issue_temp(self, source):
        """New temporary credentials shaped like AWS's (ASIA key, 40
        character secret, long base64 session token with '+', '/', '=')."""
        akid = "ASIA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
                                for _ in range(16))
        secret = base64.b64encode(secrets.token_bytes(30)).decode()
        token = base64.b64encode(secrets.token_bytes(240)).decode()
        cred = Cred(akid, secret, source, token, time.time() + self.opts.temp_ttl)
        with self.lock:
            self.creds[akid] = cred
        self.record_secret(self.opts.issued_creds, secret, token)
        return cred

    def lookup(self, akid):
        with self.lock:
            c = self.creds.get(akid)
        return None if c is None else (c.secret, c)

    def accepted_web_token(self):
        if self.opts.web_identity_token_file:
            try:
                with open(self.opts.web_identity_token_file, encoding="utf-8") as f:
                    return f.read().strip()
            except OSError:
                return None
        with self.lock:
            return self.web_token

    def install_password(self, password):
        """Make the registry accept AWS:password and nothing else for AWS.
        The file is rewritten under a temporary name and renamed into
        place, so the registry never reads half of it; the password goes
        to htpasswd on stdin, never on a command line."""
        path = self.opts.htpasswd
        if not path:
            return
        d = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".fakeaws.", dir=d)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    with open(path, "rb") as cur:
                        out.write(cur.read())
                except FileNotFoundError:
                    pass
            subprocess.run(["htpasswd", "-iB", "-C", "4", tmp, "AWS"],
                           input=password.encode(), check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def new_password(self, why):
        """Issue a password, install it, and arm its expiry.  Returns
        (password, expiresAt)."""
        password = base64.b64encode(secrets.token_bytes(48)).decode()
        with self.lock:
            self.install_password(password)
            self.password_seq += 1
            seq = self.password_seq
            expires = time.time() + self.opts.password_ttl
            self.stats["passwords_issued"] += 1
            if why == "rotate":
                self.stats["rotations"] += 1
            self.write_stats()
            self.record_secret(self.opts.issued, password)
        if not self.opts.keep_expired:
            t = threading.Timer(self.opts.password_ttl, self.expire_password, (seq,))
            t.daemon = True
            t.start()
        return password, expires

    def expire_password(self, seq):
        """Replace an expired password that is still the current one by
        one nobody holds."""
        with self.lock:
            if seq != self.password_seq:
                return
            self.install_password(base64.b64encode(secrets.token_bytes(48)).decode())
            self.password_seq += 1
            self.stats["passwords_expired"] += 1
            self.write_stats()
        log("password #%d expired: replaced at the registry" % seq)


def atomic_write(path, text):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fakeaws.", dir=d)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def log(msg):
    sys.stderr.write("fakeaws: %s\n" % msg)
    sys.stderr.flush()


# --- HTTP -----------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "regcache-test-fakeaws"

    def log_message(self, fmt, *args):
        pass  # one line of our own per request, without query strings

    @property
    def state(self):
        return self.server.state

    # --- plumbing -----------------------------------------------------
    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
                if len(body) > MAX_BODY:
                    raise ValueError("body too large")
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n)

    def send(self, status, body, ctype, extra=()):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", self.request_id)
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.status = status

    def send_json(self, status, obj, ctype="application/json", extra=()):
        self.send(status, json.dumps(obj), ctype, extra)

    def aws_json_error(self, status, kind, message):
        self.send_json(status, {"__type": kind, "message": message}, ECR_CONTENT_TYPE,
                       [("x-amzn-ErrorType", kind)])

    def sts_error(self, status, code, message):
        kind = "Sender" if status < 500 else "Receiver"
        xml = ('<ErrorResponse xmlns="%s"><Error><Type>%s</Type><Code>%s</Code>'
               '<Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>'
               % (STS_NS, kind, code, xml_escape(message), self.request_id))
        self.send(status, xml, "text/xml")

    def handle_one_request(self):
        self.request_id = "%08x-%04x-%04x-%04x-%012x" % tuple(
            secrets.randbits(b) for b in (32, 16, 16, 16, 48))
        self.status = None
        self.note = ""
        super().handle_one_request()

    def dispatch(self):
        path = urllib.parse.urlsplit(self.path).path
        try:
            if path.startswith("/_control/"):
                self.control(path)
            elif path.startswith("/latest/"):
                self.imds(path)
            elif self.command == "POST" and "X-Amz-Target" in self.headers:
                self.ecr()
            elif self.command in ("GET", "POST") and path == "/":
                self.sts()
            else:
                self.send_json(404, {"message": "no such resource"})
        except Exception as e:  # a bug or bad input: answer, log, keep serving
            self.note = "error: %s" % type(e).__name__
            traceback.print_exc(limit=3)
            if self.status is None:
                self.send_json(500, {"message": "fakeaws: %s" % type(e).__name__})
                self.close_connection = True
        # Never the query string: STS carries the web identity token there.
        log("%s %s %s -> %s%s" % (self.client_address[0], self.command, path,
                                  self.status, " " + self.note if self.note else ""))

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = dispatch

    # --- ECR ------------------------------------------------------------
    def ecr(self):
        st = self.state
        st.bump("ecr_calls")
        body = self.read_body()
        try:
            cred, _, _ = sigv4_verify(self.command, self.path, self.headers.items(), body,
                                      st.lookup, st.opts.region, "ecr", time.time())
            self.check_session(cred)
        except SigError as e:
            if e.kind in ("InvalidSignatureException", "IncompleteSignatureException"):
                st.bump("bad_signatures")
            elif e.kind == "UnrecognizedClientException":
                st.bump("unknown_keys")
            elif e.kind == "ExpiredTokenException":
                st.bump("expired_tokens")
            self.note = "ecr %s: %s" % (e.kind, e.message)
            return self.aws_json_error(e.status, e.kind, e.message)
        self.note = "ecr key %s (%s)" % (cred.akid, cred.source)

        with st.lock:
            fail = st.fail_next > 0
            if fail:
                st.fail_next -= 1
                st.stats["ecr_failed_injected"] += 1
                st.write_stats()
        if fail:
            self.note += " injected failure"
            return self.aws_json_error(st.fail_status, "ServerException",
                                       "injected failure (fakeaws /_control/fail)")
        if self.headers.get("X-Amz-Target") != ECR_TARGET:
            return self.aws_json_error(400, "UnknownOperationException",
                                       "unknown operation")
        if self.headers.get("Content-Type", "").split(";")[0].strip() != ECR_CONTENT_TYPE:
            return self.aws_json_error(400, "SerializationException",
                                       "Content-Type must be " + ECR_CONTENT_TYPE)
        try:
            req = json.loads(body.decode() or "{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self.aws_json_error(400, "SerializationException", "body is not JSON")
        if not isinstance(req, dict):
            return self.aws_json_error(400, "SerializationException", "body is not an object")
        ids = req.get("registryIds", [st.opts.account])
        if (not isinstance(ids, list) or not 1 <= len(ids) <= 10 or
                not all(isinstance(i, str) and re.fullmatch(r"\d{12}", i) for i in ids)):
            return self.aws_json_error(400, "InvalidParameterException",
                                       "registryIds must be 1 to 10 twelve-digit ids")

        password, expires = st.new_password("ecr")
        token = base64.b64encode(("AWS:" + password).encode()).decode()
        st.record_secret(st.opts.issued_creds, token)
        data = []
        for rid in ids:
            endpoint = st.opts.proxy_endpoint or "https://%s.dkr.ecr.%s.amazonaws.com" % (
                rid, st.opts.region)
            data.append({"authorizationToken": token, "expiresAt": round(expires, 3),
                         "proxyEndpoint": endpoint})
        with st.lock:
            st.stats["ecr_ok"] += 1
            st.stats["ecr_by_source"][cred.source] += 1
            st.write_stats()
        self.note += " password #%d, valid %gs" % (st.password_seq, st.opts.password_ttl)
        self.send_json(200, {"authorizationData": data}, ECR_CONTENT_TYPE)

    def check_session(self, cred):
        """Temporary credentials need their own session token, signed, and
        are refused once expired."""
        if cred.token is None:
            return
        got = self.headers.get_all("X-Amz-Security-Token") or []
        if len(got) != 1 or not hmac.compare_digest(got[0].strip().encode(),
                                                    cred.token.encode()):
            raise SigError(403, "UnrecognizedClientException",
                           "The security token included in the request is invalid.")
        authz = self.headers.get("Authorization", "")
        m = re.search(r"SignedHeaders=([^,\s]*)", authz)
        if not m or "x-amz-security-token" not in m.group(1).split(";"):
            raise SigError(403, "InvalidSignatureException",
                           "x-amz-security-token must be a signed header")
        if time.time() >= cred.expires:
            raise SigError(403, "ExpiredTokenException",
                           "The security token included in the request is expired")

    # --- STS ------------------------------------------------------------
    def sts(self):
        st = self.state
        st.bump("sts_calls")
        if self.command == "POST":
            ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            body = self.read_body()
            if ctype != "application/x-www-form-urlencoded":
                return self.sts_error(400, "InvalidParameterValue",
                                      "expected a form body (application/x-www-form-urlencoded)")
            query = body.decode("utf-8", "replace")
        else:
            query = urllib.parse.urlsplit(self.path).query
        params = {k: v[0] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        action = params.get("Action")
        self.note = "sts %s" % action
        if action != "AssumeRoleWithWebIdentity":
            st.bump("sts_refused")
            return self.sts_error(400, "InvalidAction",
                                  "Could not find operation %s for version %s"
                                  % (action, params.get("Version")))
        if params.get("Version") != STS_VERSION:
            st.bump("sts_refused")
            return self.sts_error(400, "InvalidParameterValue", "Version must be " + STS_VERSION)
        for p in ("RoleArn", "RoleSessionName", "WebIdentityToken"):
            if not params.get(p):
                st.bump("sts_refused")
                return self.sts_error(400, "MissingParameter",
                                      "The request must contain the parameter " + p)
        session = params["RoleSessionName"]
        if not re.fullmatch(r"[\w+=,.@-]{2,64}", session):
            st.bump("sts_refused")
            return self.sts_error(400, "ValidationError",
                                  "RoleSessionName must match [\\w+=,.@-]{2,64}")
        if "DurationSeconds" in params and not re.fullmatch(r"\d{3,5}", params["DurationSeconds"]):
            st.bump("sts_refused")
            return self.sts_error(400, "ValidationError", "DurationSeconds is not a number")
        if params["RoleArn"] != st.opts.role_arn:
            st.bump("sts_refused")
            self.note += " wrong role"
            return self.sts_error(403, "AccessDenied",
                                  "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        accepted = st.accepted_web_token()
        got = params["WebIdentityToken"].encode()
        if not accepted or not hmac.compare_digest(got, accepted.encode()):
            st.bump("sts_refused")
            self.note += " wrong web identity token"
            return self.sts_error(400, "InvalidIdentityToken",
                                  "Couldn't retrieve verification key from your identity provider")
        cred = st.issue_temp("sts")
        with st.lock:
            st.stats["sts_ok"] += 1
            st.tokens_seen.add(hashlib.sha256(got).hexdigest())
            st.stats["sts_tokens_seen"] = len(st.tokens_seen)
            st.write_stats()
        self.note += " key %s session %s" % (cred.akid, session)
        role = st.opts.role_arn
        xml = (
            '<AssumeRoleWithWebIdentityResponse xmlns="%s">'
            '<AssumeRoleWithWebIdentityResult>'
            '<SubjectFromWebIdentityToken>system:serviceaccount:test:regcache'
            '</SubjectFromWebIdentityToken>'
            '<Audience>sts.amazonaws.com</Audience>'
            '<AssumedRoleUser><Arn>%s/%s</Arn><AssumedRoleId>AROATESTROLEID:%s</AssumedRoleId>'
            '</AssumedRoleUser>'
            '<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey>'
            '<SessionToken>%s</SessionToken><Expiration>%s</Expiration></Credentials>'
            '<Provider>oidc.regcache.test</Provider>'
            '</AssumeRoleWithWebIdentityResult>'
            '<ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata>'
            '</AssumeRoleWithWebIdentityResponse>'
            % (STS_NS, xml_escape(role.replace(":role/", ":assumed-role/")),
               xml_escape(session), xml_escape(session), cred.akid, xml_escape(cred.secret),
               xml_escape(cred.token), iso_time(cred.expires), self.request_id))
        self.send(200, xml, "text/xml")

    # --- IMDSv2 -----------------------------------------------------------
    def imds(self, path):
        st = self.state
        st.bump("imds_calls")
        self.note = "imds"
        if self.command == "PUT" and path == "/latest/api/token":
            self.read_body()
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not re.fullmatch(r"\d{1,5}", ttl) or not 1 <= int(ttl) <= IMDS_TTL_MAX:
                st.bump("imds_refused")
                return self.send(400, "", "text/plain")
            if "X-Forwarded-For" in self.headers:
                st.bump("imds_refused")
                return self.send(403, "", "text/plain")
            token = base64.urlsafe_b64encode(secrets.token_bytes(42)).decode()
            with st.lock:
                st.imds_tokens[token] = time.time() + int(ttl)
                st.stats["imds_tokens"] += 1
                st.write_stats()
            st.record_secret(st.opts.issued_creds, token)
            self.note += " session token, ttl %s" % ttl
            return self.send(200, token, "text/plain",
                             [("X-aws-ec2-metadata-token-ttl-seconds", ttl)])
        if self.command not in ("GET", "HEAD"):
            return self.send(405, "", "text/plain")
        token = self.headers.get("X-aws-ec2-metadata-token", "")
        with st.lock:
            exp = st.imds_tokens.get(token)
        if not token or exp is None or time.time() >= exp:
            st.bump("imds_refused")
            self.note += " no valid session token (IMDSv1 refused)"
            return self.send(401, "", "text/plain")
        role = st.opts.imds_role
        if path in (CRED_PREFIX, CRED_PREFIX + "/"):
            return self.send(200, role, "text/plain")
        if path == CRED_PREFIX + "/" + role:
            cred = st.issue_temp("imds")
            st.bump("imds_creds")
            self.note += " key %s" % cred.akid
            now = time.time()
            return self.send_json(200, {
                "Code": "Success", "LastUpdated": iso_time(now), "Type": "AWS-HMAC",
                "AccessKeyId": cred.akid, "SecretAccessKey": cred.secret,
                "Token": cred.token, "Expiration": iso_time(cred.expires)},
                "text/plain")
        return self.send(404, "", "text/plain")

    # --- controls ---------------------------------------------------------
    def control(self, path):
        st = self.state
        query = urllib.parse.urlsplit(self.path).query
        q = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
        body = self.read_body() if self.command == "POST" else b""
        self.note = "control"
        if path == "/_control/stats" and self.command == "GET":
            return self.send_json(200, st.snapshot())
        if self.command != "POST":
            return self.send_json(405, {"message": "POST"})
        if path == "/_control/fail":
            with st.lock:
                st.fail_next = int(q.get("n", "1"))
                st.fail_status = int(q.get("status", "500"))
            self.note += " fail next %d ECR calls with %d" % (st.fail_next, st.fail_status)
            return self.send_json(200, {"fail_next": st.fail_next})
        if path == "/_control/rotate":
            st.new_password("rotate")
            self.note += " rotated to password #%d" % st.password_seq
            return self.send_json(200, {"passwords_issued": st.snapshot()["passwords_issued"]})
        if path == "/_control/web-identity-token":
            token = body.decode().strip()
            if not token:
                return self.send_json(400, {"message": "empty token"})
            with st.lock:
                st.web_token = token
            return self.send_json(200, {})
        if path == "/_control/expire-temp":
            now = time.time()
            with st.lock:
                n = 0
                for c in st.creds.values():
                    if c.token is not None:
                        c.expires = min(c.expires, now)
                        n += 1
            return self.send_json(200, {"expired": n})
        return self.send_json(404, {"message": "unknown control"})


# --- self-test against the AWS SigV4 test suite --------------------------

def parse_req(data):
    """The suite's .req: request line, 'Name:value' lines (a line starting
    with white space continues the previous value), blank line, body.
    The target may contain spaces: the version is after the last one."""
    text = data.decode("latin-1")
    head, sep, body = text.partition("\n\n")
    if not sep:
        head, body = text, ""
    lines = head.split("\n")
    first = lines[0].rstrip("\r")
    method, _, rest = first.partition(" ")
    target = rest.rsplit(" ", 1)[0]
    headers = []
    for line in lines[1:]:
        line = line.rstrip("\r")
        if line[:1] in (" ", "\t") and headers:
            headers[-1] = (headers[-1][0], headers[-1][1] + "\n" + line)
        else:
            name, _, value = line.partition(":")
            headers.append((name, value))
    return method, target, headers, body.encode("latin-1")


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, name, detail=None):
        self.n += 1
        if not cond:
            self.failed += 1
        print("%s %d - %s" % ("ok" if cond else "not ok", self.n, name))
        if not cond and detail:
            for line in str(detail).splitlines():
                print("# " + line)
        sys.stdout.flush()


def flip(s, i):
    """s with the character at i changed to another one of its kind."""
    c = s[i]
    if c.isdigit():
        r = "0" if c != "0" else "1"
    elif c.isalpha():
        r = "a" if c.lower() != "a" else "b"
    else:
        r = "x"
    return s[:i] + r + s[i + 1:]


def selftest(d):
    tap = Tap()
    suite = lambda akid: (SUITE_SECRET, None) if akid == SUITE_AKID else None  # noqa: E731
    cases = sorted(c for c in os.listdir(d) if os.path.isdir(os.path.join(d, c)))
    tap.ok(len(cases) >= 25, "at least 25 suite cases under %s (%d)" % (d, len(cases)))

    def verify(case, method, target, headers, body, now, lookup=suite, region=SUITE_REGION):
        try:
            return sigv4_verify(method, target, headers, body, lookup, region,
                                SUITE_SERVICE, now), None
        except SigError as e:
            return None, e

    def refused(err, kind="InvalidSignatureException"):
        return err is not None and err.kind == kind

    vanilla = None
    for case in cases:
        base = os.path.join(d, case, case)
        with open(base + ".req", "rb") as f:
            method, target, headers, body = parse_req(f.read())
        with open(base + ".creq", "rb") as f:
            want_creq = f.read().decode("latin-1")
        with open(base + ".sts", "rb") as f:
            want_sts = f.read().decode("latin-1")
        with open(base + ".authz", "rb") as f:
            authz = f.read().decode("latin-1").strip()
        headers = headers + [("Authorization", authz)]
        amz = next(v for n, v in headers if n.lower() == "x-amz-date").strip()
        now = datetime.datetime.strptime(amz, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        if case == "get-vanilla":
            vanilla = (method, target, headers, body, now)

        res, err = verify(case, method, target, headers, body, now)
        tap.ok(res is not None, "%s: verifies" % case, err and err.message)
        if res is not None:
            tap.ok(res[1] == want_creq, "%s: canonical request as in the suite" % case,
                   "got:\n%s\nwant:\n%s" % (res[1], want_creq))
            tap.ok(res[2] == want_sts, "%s: string to sign as in the suite" % case)

        # One changed byte anywhere that is signed must fail.
        sig_at = authz.index("Signature=") + len("Signature=") + 10
        bad = [h if h[0] != "Authorization" else (h[0], flip(authz, sig_at)) for h in headers]
        _, err = verify(case, method, target, bad, body, now)
        tap.ok(refused(err), "%s: a changed signature byte fails" % case)
        bad = [(n, flip(v.strip(), 2)) if n.lower() == "host" else (n, v) for n, v in headers]
        _, err = verify(case, method, target, bad, body, now)
        tap.ok(refused(err), "%s: a changed Host byte fails" % case)
        bad = [(n, flip(v.strip(), 14)) if n.lower() == "x-amz-date" else (n, v)
               for n, v in headers]
        _, err = verify(case, method, target, bad, body, now)
        tap.ok(refused(err), "%s: a changed X-Amz-Date byte fails" % case)
        _, err = verify(case, "PUT" if method != "PUT" else "GET", target, headers, body, now)
        tap.ok(refused(err), "%s: a changed method fails" % case)
        _, err = verify(case, method, target + ("&" if "?" in target else "?") + "x=1",
                        headers, body, now)
        tap.ok(refused(err), "%s: an added query parameter fails" % case)
        if body:
            _, err = verify(case, method, target, headers, flip(body.decode(), 0).encode(), now)
            tap.ok(refused(err), "%s: a changed body byte fails" % case)

    # The checks around the signature, on get-vanilla.
    tap.ok(vanilla is not None, "get-vanilla is in the suite")
    if vanilla:
        method, target, headers, body, now = vanilla
        _, err = verify("", method, target, headers, body, now + MAX_SKEW + 1)
        tap.ok(refused(err) and "expired" in err.message, "a request 5 minutes old fails")
        _, err = verify("", method, target, headers, body, now, lookup=lambda a: None)
        tap.ok(refused(err, "UnrecognizedClientException"), "an unknown key fails")
        _, err = verify("", method, target, headers, body, now, region="eu-west-1")
        tap.ok(refused(err), "a credential scoped to another region fails")
        _, err = verify("", method, target, headers, body, now,
                        lookup=lambda a: (SUITE_SECRET[:-1] + "X", None))
        tap.ok(refused(err), "a wrong secret fails")
        bad = [(n, v) for n, v in headers if n.lower() != "authorization"]
        _, err = verify("", method, target, bad, body, now)
        tap.ok(refused(err, "MissingAuthenticationTokenException"), "no Authorization fails")
        bad = [(n, v.replace("host;x-amz-date", "x-amz-date"))
               if n == "Authorization" else (n, v) for n, v in headers]
        _, err = verify("", method, target, bad, body, now)
        tap.ok(refused(err), "Host not signed fails")
    print("1..%d" % tap.n)
    return 1 if tap.failed else 0


# --- main -----------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description="fake AWS (ECR, STS, IMDSv2) for tests")
    ap.add_argument("--port", type=int, default=0, help="0 = pick one (printed)")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--account", default="123456789012", help="default registry id")
    ap.add_argument("--proxy-endpoint", help="proxyEndpoint to answer (default: AWS's form)")
    ap.add_argument("--access-key", default="AKIDREGCACHETEST", help="static access key id")
    ap.add_argument("--secret-key", default="regcache-test-secret-key", help="its secret")
    ap.add_argument("--role-arn", default="arn:aws:iam::123456789012:role/regcache-test")
    ap.add_argument("--web-identity-token", help="the token STS accepts")
    ap.add_argument("--web-identity-token-file",
                    help="STS accepts what this file holds at each request (overrides)")
    ap.add_argument("--imds-role", default="regcache-test-role")
    ap.add_argument("--password-ttl", type=float, default=43200.0, help="seconds")
    ap.add_argument("--temp-ttl", type=float, default=3600.0,
                    help="lifetime of STS and IMDS credentials, seconds")
    ap.add_argument("--keep-expired", action="store_true",
                    help="leave an expired password valid at the registry")
    ap.add_argument("--htpasswd", help="the registry's htpasswd file (user AWS)")
    ap.add_argument("--issued", help="append each issued password here")
    ap.add_argument("--issued-creds", help="append each temporary secret, token here")
    ap.add_argument("--stats-file", help="JSON counters, rewritten on each change")
    ap.add_argument("--selftest", metavar="DIR", help="check the verifier against the suite")
    opts = ap.parse_args()

    if opts.selftest:
        return selftest(opts.selftest)

    server = ThreadingHTTPServer(("127.0.0.1", opts.port), Handler)
    server.daemon_threads = True
    server.state = State(opts)
    port = server.server_address[1]
    if opts.port_file:
        atomic_write(opts.port_file, "%d\n" % port)
    print("listening on 127.0.0.1:%d, region %s" % (port, opts.region), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/bin/bash
# Bad input and upstream faults: every case gets the right status and an
# OCI error body (or a clean close), and the daemon keeps serving.  The
# faults come from tests/tools/fakeupstream.py, since no real registry
# hangs, resets or truncates on demand.
# shellcheck disable=SC2154
set -eu
. "$(dirname "$0")/../lib/common.sh"
. "$SRCDIR/tests/lib/registry.sh"
. "$SRCDIR/tests/lib/regcache.sh"

require_cmd docker-registry skopeo htpasswd openssl python3 curl jq
require_regcache
plan 40

DIGEST=$(mkimage "$TESTDIR/img" --seed bad --layers 1 --layer-size 100000)
registry_start_plain good
registry_start_basic tlsup
registry_push_dir good "$TESTDIR/img" test/app:latest >/dev/null

fake() {
  local mode=$1 port
  port=$(free_port)
  spawn "fake_$mode" python3 "$TOOLSDIR/fakeupstream.py" "$mode" "$port"
  printf -v "fake_${mode}_URL" '%s' "http://127.0.0.1:$port"
  wait_for "fake upstream $mode" 10 grep -q listening "$TESTDIR/fake_$mode.log"
}
for m in hang 429 500 truncate reset badhead dupcl badchunk; do fake "$m"; done
DOWN_PORT=$(free_port)   # nothing listens there

regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$TESTDIR/data\",
  \"timeouts\": {\"connect\": 2, \"first_byte\": 1, \"idle\": 2},
  \"limits\": {\"max_header_bytes\": 8192},
  \"upstreams\": [
    {\"name\": \"good\", \"url\": \"$good_URL\", \"aliases\": [\"good.example\"]},
    {\"name\": \"down\", \"url\": \"http://127.0.0.1:$DOWN_PORT\", \"prefix\": \"down\"},
    {\"name\": \"tlsbad\", \"url\": \"$tlsup_URL\", \"prefix\": \"tlsbad\"},
    {\"name\": \"hang\", \"url\": \"$fake_hang_URL\", \"prefix\": \"hang\"},
    {\"name\": \"limited\", \"url\": \"$fake_429_URL\", \"prefix\": \"limited\"},
    {\"name\": \"broken\", \"url\": \"$fake_500_URL\", \"prefix\": \"broken\"},
    {\"name\": \"truncate\", \"url\": \"$fake_truncate_URL\", \"prefix\": \"truncate\"},
    {\"name\": \"reset\", \"url\": \"$fake_reset_URL\", \"prefix\": \"reset\"},
    {\"name\": \"badhead\", \"url\": \"$fake_badhead_URL\", \"prefix\": \"badhead\"},
    {\"name\": \"dupcl\", \"url\": \"$fake_dupcl_URL\", \"prefix\": \"dupcl\"},
    {\"name\": \"badchunk\", \"url\": \"$fake_badchunk_URL\", \"prefix\": \"badchunk\"}
  ]
}"

SHA=sha256:$(printf '%064d' 0)
BODY=$TESTDIR/body

# expect STATUS CODE PATH [curl args...]: the answer has STATUS and, when
# CODE is not "-", an OCI error body whose first code is CODE.
expect() {
  local status=$1 code=$2 path=$3 got
  shift 3
  got=$(curl -q -s --path-as-is --max-time 10 -o "$BODY" -w '%{http_code}' "$@" "$rc_URL$path") || true
  if [ "$got" != "$status" ]; then
    diag "status $got, want $status; body: $(head -c 300 "$BODY")"
    return 1
  fi
  [ "$code" = - ] || jq -e --arg c "$code" '.errors[0].code == $c' "$BODY" >/dev/null || {
    diag "body: $(head -c 300 "$BODY")"
    return 1
  }
}

# --- the client's input ------------------------------------------------------
check "'..' in the path: 400 NAME_INVALID" expect 400 NAME_INVALID /v2/../etc/manifests/passwd
check "'..' inside a name: 400 NAME_INVALID" expect 400 NAME_INVALID /v2/test/../app/manifests/latest
check "%2e%2e in the path: 400 NAME_INVALID" expect 400 NAME_INVALID /v2/%2e%2e/manifests/latest
check "percent-encoded slash: 400 NAME_INVALID" expect 400 NAME_INVALID /v2/test%2fapp/manifests/latest
check "upper-case name: 400 NAME_INVALID" expect 400 NAME_INVALID /v2/Test/App/manifests/latest
LONG=$(printf 'a%.0s' $(seq 300))
check "over-long name: 400 NAME_INVALID" expect 400 NAME_INVALID "/v2/$LONG/manifests/latest"
check "sha256:xyz: 400 DIGEST_INVALID" expect 400 DIGEST_INVALID /v2/test/app/blobs/sha256:xyz
check "digest of the wrong length: 400 DIGEST_INVALID" expect 400 DIGEST_INVALID "/v2/test/app/blobs/${SHA}0"
check "upper-case hex digest: 400 DIGEST_INVALID" expect 400 DIGEST_INVALID \
  "/v2/test/app/manifests/sha256:$(printf 'A%.0s' $(seq 64))"
check "unknown digest algorithm: 400 DIGEST_INVALID" expect 400 DIGEST_INVALID \
  /v2/test/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e
check "blob by tag: 400 DIGEST_INVALID" expect 400 DIGEST_INVALID /v2/test/app/blobs/latest
check "bad tag: 400 TAG_INVALID" expect 400 TAG_INVALID /v2/test/app/manifests/.hidden
check "negative n on tags/list: 400" expect 400 PAGINATION_NUMBER_INVALID "/v2/test/app/tags/list?n=-1"
check "unknown route: 404 with a JSON body" expect 404 NOT_FOUND /v2/test/app/nothing/here
check "catalog is not served: 404" expect 404 NOT_FOUND /v2/_catalog
check "push (POST upload): 405 UNSUPPORTED" expect 405 UNSUPPORTED /v2/test/app/blobs/uploads/ -X POST
check "push (PUT manifest): 405 UNSUPPORTED" expect 405 UNSUPPORTED /v2/test/app/manifests/latest \
  -X PUT --data-binary '{}'
check "DELETE: 405 UNSUPPORTED" expect 405 UNSUPPORTED "/v2/test/app/manifests/$SHA" -X DELETE
check "PATCH: 405 UNSUPPORTED" expect 405 UNSUPPORTED /v2/test/app/blobs/uploads/x -X PATCH -d x

before=$(count_lines "$good_LOG" 'response completed')
check "unknown ns: 404 NAME_UNKNOWN" expect 404 NAME_UNKNOWN "/v2/test/app/manifests/latest?ns=quay.io"
check "malformed ns: 400 NAME_INVALID" expect 400 NAME_INVALID "/v2/test/app/manifests/latest?ns=a%20b"
after=$(count_lines "$good_LOG" 'response completed')
ok "$([ "$before" = "$after" ]; echo $?)" "refused ns and names were never sent upstream ($before = $after)"

# evhttp itself answers a head over max_header_bytes: 400 and a close.
printf 'X-Big: %s\n' "$(head -c 9000 /dev/zero | tr '\0' x)" >"$TESTDIR/bighdr"
check "oversized request headers: refused with 400 and closed, no crash" \
  expect 400 - /v2/ -H @"$TESTDIR/bighdr"

# --- upstream faults ------------------------------------------------------
check "upstream down: 502 UNAVAILABLE" expect 502 UNAVAILABLE /v2/down/test/app/manifests/latest
grep -q "upstream down: .*connect" "$rc_LOG"; ok $? "the log names the upstream and the cause"
check "upstream TLS failure (untrusted certificate): 502" expect 502 UNAVAILABLE \
  /v2/tlsbad/test/app/manifests/latest
grep -qi "upstream tlsbad: .*TLS" "$rc_LOG"; ok $? "the log says TLS"
check "upstream never answers: 504 after the first-byte timeout" expect 504 UNAVAILABLE \
  /v2/hang/test/app/manifests/latest
check "upstream 429 passes through with Retry-After" expect 429 TOOMANYREQUESTS \
  /v2/limited/test/app/manifests/latest -D "$TESTDIR/h429"
grep -qi '^Retry-After: 17' "$TESTDIR/h429" && ! grep -qi '^WWW-Authenticate' "$TESTDIR/h429"
ok $? "Retry-After kept, the upstream challenge dropped"
check "upstream 500 passes through with its body" expect 500 UNKNOWN /v2/broken/test/app/manifests/latest
check "upstream malformed response: 502" expect 502 UNAVAILABLE /v2/badhead/test/app/manifests/latest
check "upstream sends two different Content-Lengths: 502" expect 502 UNAVAILABLE \
  /v2/dupcl/test/app/manifests/latest
check "upstream sends a negative chunk size: 502" expect 502 UNAVAILABLE \
  /v2/badchunk/test/app/manifests/latest

# A body cut short must reach the client short, never complete-looking.
short_body() {
  local got
  got=$(curl -q -s --max-time 10 -o "$BODY" -w '%{size_download}' \
    "$rc_URL/v2/$1/test/app/blobs/$SHA"; echo " rc=$?")
  diag "$1: $got"
  case $got in *" rc=0") return 1 ;; esac
  [ "${got%% *}" -lt 1048576 ]
}
check "upstream truncates the body: the client sees a short body and an error" short_body truncate
check "upstream resets mid-body: the client sees a short body and an error" short_body reset

check "manifest unknown upstream: 404 passes through" expect 404 MANIFEST_UNKNOWN \
  /v2/test/app/manifests/nosuchtag
check "the real image still pulls after all that" \
  skopeo_run copy --src-tls-verify=false "docker://$rc_ADDR/test/app:latest" "dir:$TESTDIR/out"
check "the daemon is still running" regcache_alive rc
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

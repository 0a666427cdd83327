#!/bin/bash
# No cross-repository leaks through a credentialed upstream.  The cache is
# keyed by digest only; for an upstream regcache sends credentials to, a
# digest cached through one repository is served through another only once
# that upstream confirmed it there with one HEAD, which is remembered.
#
#   priv  HTTPS + Basic auth (docker-registry), regcache has credentials:
#         a/one and a/two hold image X, a/three holds another image, a/four
#         holds X too (pulled by tag only);
#   pub   anonymous HTTP, prefix "pub": p/one holds image P;
#   slow  credentialed, prefix "slow": fakeupstream.py proxy-faulty in front
#         of a plain registry, holding the first big blob GET half-way until
#         the test opens a gate, so other clients can come while it fills.
#
# Cases: (1) a layer of X via a/two: one upstream HEAD, 200, then no more
# upstream requests; (2) via a/three: 404 BLOB_UNKNOWN though cached; (3)
# the manifest X by digest, the same two ways; a pull by tag records the
# tag's digest for its repository; another credentialed upstream asks its
# own registry too; (4) the anonymous upstream shares without asking; (5)
# joining a fill for another repository: confirmed first (404 refused, 200
# joins the fill); (6) with priv stopped, the confirmed repository is still
# served from the cache and unconfirmed ones are refused with 502.
# Variables like priv_URL and rc_URL are set indirectly (printf -v).
# shellcheck disable=SC2154
set -eu
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
# shellcheck source=../lib/registry.sh
. "$SRCDIR/tests/lib/registry.sh"
# shellcheck source=../lib/verify.sh
. "$SRCDIR/tests/lib/verify.sh"
# shellcheck source=../lib/regcache.sh
. "$SRCDIR/tests/lib/regcache.sh"

require_cmd docker-registry skopeo python3 curl jq sha256sum htpasswd openssl
require_regcache
plan 49

# --- images and upstreams ------------------------------------------------------
X=$(mkimage "$TESTDIR/img-x" --seed xr-x --layers 2 --layer-size 100000)
mkimage "$TESTDIR/img-z" --seed xr-z --layers 1 --layer-size 50000 >/dev/null
P=$(mkimage "$TESTDIR/img-p" --seed xr-p --layers 1 --layer-size 50000)
J=$(mkimage "$TESTDIR/img-j" --seed xr-j --layers 1 --layer-size 3000000)
# blobs_of DIR DIGEST: the config and layer digests of an image manifest.
blobs_of() { jq -r '.config.digest, .layers[].digest' "$1/blobs/sha256/${2#sha256:}"; }
layer_of() { jq -r '.layers[0].digest' "$1/blobs/sha256/${2#sha256:}"; }
LAYER=$(layer_of "$TESTDIR/img-x" "$X")
JLAYER=$(layer_of "$TESTDIR/img-j" "$J")
PLAYER=$(layer_of "$TESTDIR/img-p" "$P")
NBLOBS_X=$(blobs_of "$TESTDIR/img-x" "$X" | sort -u | wc -l)

registry_start_basic priv
for r in a/one a/two a/four; do registry_push_dir priv "$TESTDIR/img-x" "$r:latest" >/dev/null; done
registry_push_dir priv "$TESTDIR/img-z" a/three:latest >/dev/null
registry_start_plain anon
registry_push_dir anon "$TESTDIR/img-p" p/one:latest >/dev/null
registry_start_plain back
for r in j/one j/two; do registry_push_dir back "$TESTDIR/img-j" "$r:latest" >/dev/null; done
registry_push_dir back "$TESTDIR/img-z" j/three:latest >/dev/null

GATE=$TESTDIR/gate
port=$(free_port)
spawn slow python3 "$TOOLSDIR/fakeupstream.py" proxy-faulty "$port" --target "$back_URL" \
  --fault stall --count 1 --min-size 1000000 --gate "$GATE"
SLOW_URL=http://127.0.0.1:$port
wait_http "$SLOW_URL/v2/"

DATA=$TESTDIR/data
regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$DATA\",
  \"log\": {\"level\": \"debug\"},
  \"upstreams\": [
    {\"name\": \"priv\", \"url\": \"$priv_URL\", \"ca_file\": \"$TLS_CA\",
     \"auth\": {\"username\": \"$TEST_USER\", \"password\": \"$TEST_PASSWORD\"}},
    {\"name\": \"pub\", \"url\": \"$anon_URL\", \"prefix\": \"pub\"},
    {\"name\": \"slow\", \"url\": \"$SLOW_URL\", \"prefix\": \"slow\",
     \"auth\": {\"username\": \"$TEST_USER\", \"password\": \"$TEST_PASSWORD\"}}
  ]
}"

# --- counting what reached an upstream ------------------------------------------
# registry_mark NAME / registry_since NAME (tests/lib/registry.sh): what
# regcache asked the registry NAME since the mark.
count() { grep -cE -- "$2" <<<"$1" || true; }
show() { diag "upstream requests: $(printf '%s' "$1" | tr '\n' ';')"; }

served() { [ "$(rc_status)" = 200 ] && rc_body_is "$1"; }
refused() { [ "$(rc_status)" = "$1" ] && rc_code_is "$2"; }
ACCEPT=(-H "Accept: $MANIFEST_ACCEPT")

# --- 0. pull a/one: everything of X is cached through a/one -------------------------
pull_one() {
  rm -rf "$TESTDIR/o-one"
  skopeo_run copy --quiet --src-tls-verify=false "docker://$rc_ADDR/a/one:latest" \
    "dir:$TESTDIR/o-one" && verify_dir_digests "$TESTDIR/o-one" "$X"
}
check "a/one pulls through regcache and verifies" pull_one
registry_mark priv
rc_get "/v2/a/one/blobs/$LAYER"
ok "$(served "$LAYER"; echo $?)" "a layer of a/one is served for a/one"
R=$(registry_since priv)
show "$R"
ok "$([ -z "$R" ]; echo $?)" "its own repository needs no confirmation: 0 upstream requests"

# --- 1. a/two holds the layer: one HEAD, then served ---------------------------------
registry_mark priv
rc_get "/v2/a/two/blobs/$LAYER"
ok "$(served "$LAYER"; echo $?)" "the layer via a/two: 200 with the right bytes"
ok "$([ "$(rc_header X-Cache)" = HIT ]; echo $?)" "served from the cache (X-Cache: $(rc_header X-Cache))"
R=$(registry_since priv)
show "$R"
ok "$([ "$(count "$R" "^HEAD /v2/a/two/blobs/$LAYER\$")" -eq 1 ] &&
  [ "$(count "$R" .)" -eq 1 ]; echo $?)" "exactly one upstream request: HEAD /v2/a/two/blobs/<layer>"
n=$(count_lines "$rc_LOG" "xrepo_confirm: $LAYER not yet confirmed in priv/a/two: asking")
ok "$([ "$n" -eq 1 ]; echo $?)" "the debug log names the one confirmation ($n)"
registry_mark priv
rc_get "/v2/a/two/blobs/$LAYER"
ok "$(served "$LAYER"; echo $?)" "the layer via a/two again: 200"
R=$(registry_since priv)
ok "$([ -z "$R" ]; echo $?)" "the confirmation is remembered: 0 upstream requests"
rc_get "/v2/a/two/blobs/$LAYER" -I
ok "$([ "$(rc_status)" = 200 ] && [ "$(rc_header Docker-Content-Digest)" = "$LAYER" ]; echo $?)" \
  "HEAD of the layer via a/two: 200 with its digest"

# --- 2. a/three lacks it: 404 although it is cached ----------------------------------
registry_mark priv
rc_get "/v2/a/three/blobs/$LAYER"
ok "$(refused 404 BLOB_UNKNOWN; echo $?)" "the layer via a/three: 404 BLOB_UNKNOWN"
ok "$([ "$(stat -c %s "$RC_B")" -lt 512 ] && [ "$(rc_header Content-Type)" = application/json ] &&
  [ -z "$(rc_header Docker-Content-Digest)" ]; echo $?)" "the answer is the error JSON alone, nothing of the blob"
R=$(registry_since priv)
show "$R"
ok "$([ "$(count "$R" "^HEAD /v2/a/three/blobs/$LAYER\$")" -eq 1 ] &&
  [ "$(count "$R" '^GET ')" -eq 0 ]; echo $?)" "one upstream HEAD for a/three, no GET"
rc_get "/v2/a/three/blobs/$LAYER" -I
ok "$([ "$(rc_status)" = 404 ]; echo $?)" "HEAD of the layer via a/three: 404"
rc_get "/v2/a/three/blobs/$LAYER" -H 'Range: bytes=0-9'
ok "$(refused 404 BLOB_UNKNOWN; echo $?)" "a Range request via a/three: 404 as well"
ok "$([ -z "$(rc_header WWW-Authenticate)" ]; echo $?)" "no upstream challenge reaches the client"

# --- 3. manifests by digest -------------------------------------------------------------
registry_mark priv
rc_get "/v2/a/two/manifests/$X" "${ACCEPT[@]}"
ok "$(served "$X"; echo $?)" "manifest X by digest via a/two: 200 with its bytes"
ok "$([ "$(rc_header Docker-Content-Digest)" = "$X" ]; echo $?)" "with Docker-Content-Digest"
R=$(registry_since priv)
show "$R"
ok "$([ "$(count "$R" "^HEAD /v2/a/two/manifests/$X\$")" -eq 1 ] &&
  [ "$(count "$R" .)" -eq 1 ]; echo $?)" "exactly one upstream request: HEAD /v2/a/two/manifests/<X>"
registry_mark priv
rc_get "/v2/a/two/manifests/$X" "${ACCEPT[@]}"
ok "$(served "$X"; echo $?)" "manifest X via a/two again: 200"
R=$(registry_since priv)
ok "$([ -z "$R" ]; echo $?)" "and 0 upstream requests"
registry_mark priv
rc_get "/v2/a/three/manifests/$X" "${ACCEPT[@]}"
ok "$(refused 404 MANIFEST_UNKNOWN; echo $?)" "manifest X via a/three: 404 MANIFEST_UNKNOWN"
R=$(registry_since priv)
show "$R"
ok "$([ "$(count "$R" "^HEAD /v2/a/three/manifests/$X\$")" -eq 1 ] &&
  [ "$(count "$R" '^GET ')" -eq 0 ]; echo $?)" "one upstream HEAD for a/three, no GET"
rc_get "/v2/a/three/manifests/$X" -I "${ACCEPT[@]}"
ok "$([ "$(rc_status)" = 404 ]; echo $?)" "HEAD of manifest X via a/three: 404"

# A pull by tag: the tag names X in a/four, so X by digest needs no HEAD
# there; the blobs (cached through a/one) are confirmed one HEAD each.
pull_four() {
  rm -rf "$TESTDIR/o-four"
  skopeo_run copy --quiet --src-tls-verify=false "docker://$rc_ADDR/a/four:latest" \
    "dir:$TESTDIR/o-four" && verify_dir_digests "$TESTDIR/o-four" "$X"
}
registry_mark priv
check "a/four pulls by tag through regcache and verifies" pull_four
rc_get "/v2/a/four/manifests/$X" "${ACCEPT[@]}"
ok "$(served "$X"; echo $?)" "then manifest X by digest via a/four: 200"
R=$(registry_since priv)
show "$R"
ok "$([ "$(count "$R" '^GET /v2/a/four/manifests/latest$')" -eq 1 ] &&
  [ "$(count "$R" '^HEAD /v2/a/four/manifests/')" -eq 0 ] &&
  [ "$(count "$R" '^HEAD /v2/a/four/blobs/')" -eq "$NBLOBS_X" ] &&
  [ "$(count "$R" '^GET /v2/a/four/blobs/')" -eq 0 ]; echo $?)" \
  "upstream: the tag GET, one HEAD per blob ($NBLOBS_X), none for the manifest by digest, no blob GET"

# Another credentialed upstream asks its own registry (through the proxy,
# which logs every request it passes on).
rc_get "/v2/slow/j/three/blobs/$LAYER"
ok "$(refused 404 BLOB_UNKNOWN; echo $?)" "the layer via another credentialed upstream (slow/j/three): 404"
n=$(count_lines "$slow_LOG" "^request proxy-faulty [A-Z]+ /v2/j/three/blobs/$LAYER ")
m=$(count_lines "$slow_LOG" "^request proxy-faulty HEAD /v2/j/three/blobs/$LAYER ")
ok "$([ "$n" -eq 1 ] && [ "$m" -eq 1 ]; echo $?)" "after one HEAD to that upstream ($m of $n)"

# --- 4. an anonymous upstream shares freely ---------------------------------------------
rc_get "/v2/pub/p/one/blobs/$PLAYER"
ok "$(served "$PLAYER"; echo $?)" "pub/p/one: the layer is fetched and cached"
registry_mark anon
rc_get "/v2/pub/p/other/blobs/$PLAYER"
ok "$(served "$PLAYER"; echo $?)" "pub/p/other (anonymous upstream): 200 from the cache"
ok "$([ "$(rc_header X-Cache)" = HIT ]; echo $?)" "X-Cache: HIT"
R=$(registry_since anon)
show "$R"
ok "$([ -z "$R" ]; echo $?)" "without asking the anonymous upstream"
# A digest seen only through a credentialed upstream is private even on a
# public route: the anonymous upstream is asked, and it does not have it.
registry_mark anon
rc_get "/v2/pub/p/one/blobs/$LAYER"
ok "$([ "$(rc_status)" = 404 ] && grep -q BLOB_UNKNOWN "$RC_B"; echo $?)" \
  "a private layer via the anonymous upstream: 404 BLOB_UNKNOWN, not the cached bytes"
R=$(registry_since anon)
show "$R"
ok "$([ "$(printf '%s\n' "$R" | grep -c "^HEAD /v2/p/one/blobs/$LAYER\$")" -eq 1 ]; echo $?)" \
  "after one HEAD to the anonymous upstream"

# --- 5. joining a fill that runs for another repository -----------------------------------
spawn first curl -q -s --max-time 60 -o "$TESTDIR/first.body" -w '%{http_code}\n' \
  "$rc_URL/v2/slow/j/one/blobs/$JLAYER"
held() { grep -q "^fault stall /v2/j/one/blobs/$JLAYER " "$slow_LOG" && [ -s "$TESTDIR/first.body" ]; }
rc=0; wait_for "the fill for j/one to be held half-way" 20 held || rc=$?
ok $rc "a fill for slow/j/one runs, held half-way by the upstream"
rc_get "/v2/slow/j/three/blobs/$JLAYER"
ok "$(refused 404 BLOB_UNKNOWN; echo $?)" "slow/j/three during that fill: 404 BLOB_UNKNOWN"
ok "$([ "$(count_lines "$slow_LOG" "^request proxy-faulty HEAD /v2/j/three/blobs/$JLAYER ")" -eq 1 ]; echo $?)" \
  "after one HEAD for j/three"
spawn second curl -q -s --max-time 60 -o "$TESTDIR/second.body" -w '%{http_code}\n' \
  "$rc_URL/v2/slow/j/two/blobs/$JLAYER"
joined() { [ -s "$TESTDIR/second.body" ]; }
rc=0; wait_for "slow/j/two to receive bytes of the held fill" 20 joined || rc=$?
ok $rc "slow/j/two, confirmed by one HEAD, joins the held fill and receives its first bytes"
touch "$GATE"
both_done() { ! pid_alive "$first_PID" && ! pid_alive "$second_PID"; }
wait_for "both readers to end" 30 both_done
stop first
stop second
fill_ok() {
  [ "$(cat "$first_LOG")" = 200 ] && [ "$(cat "$second_LOG")" = 200 ] &&
    [ "sha256:$(sha256sum <"$TESTDIR/first.body" | cut -c1-64)" = "$JLAYER" ] &&
    [ "sha256:$(sha256sum <"$TESTDIR/second.body" | cut -c1-64)" = "$JLAYER" ]
}
check "both readers get 200 and the verified blob" fill_ok
ok "$([ "$(count_lines "$slow_LOG" "^request proxy-faulty HEAD /v2/j/two/blobs/$JLAYER ")" -eq 1 ] &&
  [ "$(count_lines "$slow_LOG" "^request proxy-faulty GET /v2/j/[a-z]+/blobs/$JLAYER ")" -eq 1 ]; echo $?)" \
  "upstream: one HEAD for j/two and a single GET (the fill) for both"
n=$(count_lines "$rc_LOG" "\"GET /v2/slow/j/two/blobs/$JLAYER HTTP/1\\.[01]\" 200 $AL_REST up=slow cache=COALESCED")
ok "$([ "$n" -eq 1 ]; echo $?)" "the access log says COALESCED for j/two ($n)"

# --- 6. the credentialed upstream down -------------------------------------------------------
stop priv
rc_get "/v2/a/two/blobs/$LAYER"
ok "$(served "$LAYER"; echo $?)" "priv down: the confirmed layer via a/two is still served"
rc_get "/v2/a/two/manifests/$X" "${ACCEPT[@]}"
ok "$(served "$X"; echo $?)" "priv down: the confirmed manifest via a/two is still served"
rc_get "/v2/a/five/blobs/$LAYER"
ok "$(refused 502 UNAVAILABLE; echo $?)" "priv down: the layer via unconfirmed a/five is refused (502)"
rc_get "/v2/a/three/manifests/$X" "${ACCEPT[@]}"
ok "$(refused 502 UNAVAILABLE; echo $?)" "priv down: manifest X via a/three is refused (502)"

check "regcache is still running" regcache_alive rc
ok "$(! grep -qiF "$TEST_PASSWORD" "$rc_LOG"; echo $?)" "the password is in no log line"
check "regcache stops cleanly on SIGTERM" regcache_stop rc

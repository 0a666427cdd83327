#!/bin/bash
# Revalidating a tag after tag_ttl when the upstream's answer is not the
# plain "unchanged" or "moved and fetched":
#
#   - the tag was deleted upstream (its manifest DELETEd through the
#     registry API, so the revalidating HEAD is answered 404): a client's
#     GET by tag gets a complete 404 -- curl ends by itself within its
#     --max-time and the body is as long as Content-Length says -- instead
#     of a HEAD's Content-Length with no body (a hang);
#   - the tag moved upstream (HEAD gives a new digest) but the GET of the
#     new digest fails (503 from tests/tools/fakeupstream.py proxy-faulty,
#     for manifest GETs by digest only, while an "armed" file exists): the
#     old digest is served STALE (200, X-Cache: STALE, Warning: 110, the old
#     bytes), never a 5xx; once the upstream behaves the new image arrives.
# Variables like up_URL and rc_URL are set indirectly (printf -v).
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

require_cmd docker-registry skopeo python3 curl jq sha256sum
require_regcache
plan 16

declare -A DIGEST
DIGEST[appA]=$(mkimage "$TESTDIR/img-appA" --seed r-app-a --layers 2 --layer-size 100000)
DIGEST[appB]=$(mkimage "$TESTDIR/img-appB" --seed r-app-b --layers 2 --layer-size 100000)
DIGEST[gone]=$(mkimage "$TESTDIR/img-gone" --seed r-gone --layers 1 --layer-size 100000)

registry_start_plain up
registry_push_dir up "$TESTDIR/img-appA" test/app:v1 >/dev/null
registry_push_dir up "$TESTDIR/img-gone" test/gone:v1 >/dev/null

# A pass-through proxy in front of up (it injects no blob fault: --count 0)
# that answers 503 to manifest GETs by digest while $ARMED exists.
ARMED=$TESTDIR/armed
port=$(free_port)
spawn fake python3 "$TOOLSDIR/fakeupstream.py" proxy-faulty "$port" --target "$up_URL" \
  --fault flip --count 0 --digest-manifest-status 503 --armed "$ARMED"
fake_URL=http://127.0.0.1:$port
wait_for "fake upstream" 10 grep -q listening "$fake_LOG"

DATA=$TESTDIR/data
regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$DATA\",
  \"upstreams\": [ {\"name\": \"up\", \"url\": \"$fake_URL\", \"tag_ttl\": 2} ]
}"

pull_verify() {
  local ref=$1 out=$2 digest=$3
  rm -rf "$out"
  skopeo_run copy --quiet --src-tls-verify=false "docker://$rc_ADDR/$ref" "dir:$out" &&
    verify_dir_digests "$out" "$digest"
}
hdr() { tr -d '\r' <"$1" | awk -F': ' -v n="$2" 'tolower($1) == tolower(n) { v = $2 } END { print v }'; }
status_of() { tr -d '\r' <"$1" | awk 'NR == 1 { print $2 }'; }
ttl_passed() { [ $((($(date +%s%N) - $1) / 1000000)) -ge "$2" ]; }
H=$TESTDIR/h
ALL6=$(jq -rn '["application/vnd.oci.image.manifest.v1+json","application/vnd.docker.distribution.manifest.v2+json","application/vnd.docker.distribution.manifest.v1+prettyjws","application/vnd.docker.distribution.manifest.v1+json","application/vnd.docker.distribution.manifest.list.v2+json","application/vnd.oci.image.index.v1+json"] | join(",")')

check "test/app:v1 cold pull verifies" pull_verify test/app:v1 "$TESTDIR/o-app1" "${DIGEST[appA]}"
check "test/gone:v1 cold pull verifies" pull_verify test/gone:v1 "$TESTDIR/o-gone1" "${DIGEST[gone]}"
T=$(date +%s%N)

# Upstream: test/gone:v1 deleted, test/app:v1 moved to appB, and GETs of
# manifests by digest refused with 503 from now on.
delete_gone() {
  tcurl -f -X DELETE "$up_URL/v2/test/gone/manifests/${DIGEST[gone]}" || return 1
  local s
  s=$(tcurl -I -o /dev/null -w '%{http_code}' -H "Accept: $MANIFEST_ACCEPT" \
    "$up_URL/v2/test/gone/manifests/v1")
  echo "HEAD of the deleted tag at the registry: $s"
  [ "$s" = 404 ]
}
check "upstream: test/gone's manifest deleted; the registry answers 404 to a HEAD of test/gone:v1" \
  delete_gone
registry_push_dir up "$TESTDIR/img-appB" test/app:v1 >/dev/null
touch "$ARMED"
wait_for "tag_ttl (2 s) to pass" 10 ttl_passed "$T" 2200

# --- the deleted tag: a complete 404 -----------------------------------------------------
gone_404() {
  local accept=$1 rc=0 res clen n
  res=$(curl -q -sS --max-time 10 -o "$TESTDIR/gone.body" -D "$H" -H "Accept: $accept" \
    -w '%{http_code} %{size_download}' "$rc_URL/v2/test/gone/manifests/v1") || rc=$?
  tr -d '\r' <"$H"; cat "$TESTDIR/gone.body"; echo
  clen=$(hdr "$H" Content-Length)
  n=$(stat -c %s "$TESTDIR/gone.body" 2>/dev/null || echo 0)
  echo "curl exit $rc, status and bytes: $res; Content-Length: ${clen:-none}; body $n bytes"
  [ "$rc" -eq 0 ] && [ "${res%% *}" = 404 ] && [ -n "$clen" ] && [ "$clen" = "$n" ]
}
check "after tag_ttl, the tag deleted upstream: GET by tag is a complete 404 (curl exits 0, body = Content-Length)" \
  gone_404 "$ALL6"
n=$(count_lines "$fake_LOG" '^request proxy-faulty HEAD /v2/test/gone/manifests/v1 ')
ok "$([ "$n" -ge 1 ]; echo $?)" "regcache revalidated the deleted tag with a HEAD ($n)"
check "… and again, for a client with the four OCI/schema2 types (complete 404)" \
  gone_404 "$MANIFEST_ACCEPT"
gone_head() {
  local rc=0 res
  res=$(curl -q -sS --max-time 10 -I -o /dev/null -D "$H" -w '%{http_code}' \
    -H "Accept: $ALL6" "$rc_URL/v2/test/gone/manifests/v1") || rc=$?
  tr -d '\r' <"$H"
  echo "curl exit $rc, status $res"
  [ "$rc" -eq 0 ] && [ "$res" = 404 ]
}
check "a HEAD of the deleted tag answers 404 and ends" gone_head

# --- the moved tag whose new digest cannot be fetched: STALE --------------------------------
stale_old() {
  local rc=0
  curl -q -sS --max-time 10 -o "$TESTDIR/st.body" -D "$H" -H "Accept: $ALL6" \
    "$rc_URL/v2/test/app/manifests/v1" || rc=$?
  tr -d '\r' <"$H"
  [ "$rc" -eq 0 ] && [ "$(status_of "$H")" = 200 ] && [ "$(hdr "$H" X-Cache)" = STALE ] &&
    [[ "$(hdr "$H" Warning)" == 110* ]] &&
    [ "$(hdr "$H" Docker-Content-Digest)" = "${DIGEST[appA]}" ] &&
    [ "sha256:$(sha256sum <"$TESTDIR/st.body" | cut -c1-64)" = "${DIGEST[appA]}" ]
}
check "tag moved upstream, GET of the new digest 503: GET by tag is 200 STALE, Warning: 110, the old digest's bytes" \
  stale_old
n=$(count_lines "$fake_LOG" "^refused 503 /v2/test/app/manifests/${DIGEST[appB]}\$")
ok "$([ "$n" -ge 1 ]; echo $?)" "regcache did ask for the new digest, and was refused ($n)"
n=$(count_lines "$rc_LOG" '"GET /v2/test/app/manifests/v1 HTTP/1\.[01]" 5[0-9][0-9] ')
ok "$([ "$n" -eq 0 ]; echo $?)" "no 5xx answer for the tag in the access log ($n)"
n=$(count_lines "$rc_LOG" '"GET /v2/test/app/manifests/v1 HTTP/1\.[01]" 200 '"$AL_REST"' up=up cache=STALE$')
ok "$([ "$n" -ge 1 ]; echo $?)" "the access log says STALE for the tag ($n)"
check "… and skopeo still pulls test/app:v1 as the old image, which verifies" \
  pull_verify test/app:v1 "$TESTDIR/o-app2" "${DIGEST[appA]}"

# --- the upstream behaves again: the new image arrives --------------------------------------
rm -f "$ARMED"
T=$(date +%s%N)
wait_for "tag_ttl (2 s) to pass" 10 ttl_passed "$T" 2200
moved() {
  pull_verify test/app:v1 "$TESTDIR/o-app3" "${DIGEST[appB]}"
}
# A stale answer need not count as a check: poll (bounded) until the moved
# tag comes through.
rc=0; wait_for "the moved tag to arrive once the upstream behaves" 15 moved || rc=$?
ok $rc "once GETs by digest work again, test/app:v1 pulls as the new image and verifies"
check "test/app@<old digest> still pulls and verifies (from the cache)" \
  pull_verify "test/app@${DIGEST[appA]}" "$TESTDIR/o-app4" "${DIGEST[appA]}"

check "regcache is still running" regcache_alive rc
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

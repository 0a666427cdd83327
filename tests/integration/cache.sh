#!/bin/bash
# The cache, seen from the clients and from the upstream: what a pull makes
# reach the upstream, counted from distribution's own log ("response
# completed" lines of requests whose User-Agent is regcache).
#
#   - a second pull within tag_ttl makes no upstream request at all;
#   - after tag_ttl (2 s on the "short" upstream) exactly one HEAD per tag
#     and nothing else when the tag did not move; a moved tag brings the new
#     manifest and only the new blobs;
#   - 20 concurrent cold pulls of one image: one upstream GET per blob, and
#     all 20 pulls verify;
#   - an index pulled with --all, then a client that accepts only Docker
#     schema2 manifests gets what the registry gives such a client;
#   - 404 for a tag is remembered for negative_ttl;
#   - HEAD, Range, If-None-Match on cached content, and X-Cache;
#   - stale-if-error: with the upstream stopped, and with upstreams that
#     answer 429 or 503 (a second regcache on the same data directory whose
#     upstreams of the same names point at fakeupstream.py), cached images
#     still pull by tag (STALE, with a Warning) and by digest (HIT).
# Variables like up_URL and rc_ADDR are set indirectly (printf -v).
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
plan 66

DOCKER_V2=application/vnd.docker.distribution.manifest.v2+json
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
NCONC=20

# --- images and upstreams ------------------------------------------------------
declare -A DIGEST
DIGEST[single]=$(mkimage "$TESTDIR/img-single" --seed c-single --layers 3 --layer-size 200000)
DIGEST[list]=$(mkimage "$TESTDIR/img-list" --seed c-list --layers 1 --layer-size 100000 \
  --platforms linux/amd64,linux/arm64 --docker)
DIGEST[index]=$(mkimage "$TESTDIR/img-index" --seed c-index --layers 1 --layer-size 100000 \
  --platforms linux/amd64,linux/arm64)
DIGEST[conc]=$(mkimage "$TESTDIR/img-conc" --seed c-conc --layers 4 --layer-size 400000)
DIGEST[appA]=$(mkimage "$TESTDIR/img-appA" --seed c-app-a --layers 2 --layer-size 100000)
DIGEST[appB]=$(mkimage "$TESTDIR/img-appB" --seed c-app-b --layers 2 --layer-size 100000)
DIGEST[idx]=$(mkimage "$TESTDIR/img-idx" --seed c-idx --layers 1 --layer-size 100000 \
  --platforms linux/amd64,linux/arm64)

registry_start_plain up       # tag_ttl 300: everything within the TTL
registry_start_plain ttlreg   # tag_ttl 2, under the prefix "short"
for i in single list index conc; do
  registry_push_dir up "$TESTDIR/img-$i" "test/$i:latest" >/dev/null
done
registry_push_dir ttlreg "$TESTDIR/img-appA" test/app:v1 >/dev/null
registry_push_dir ttlreg "$TESTDIR/img-idx" test/idx:latest >/dev/null

DATA=$TESTDIR/data
regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$DATA\",
  \"upstreams\": [
    {\"name\": \"up\", \"url\": \"$up_URL\", \"tag_ttl\": 300, \"negative_ttl\": 30},
    {\"name\": \"short\", \"url\": \"$ttlreg_URL\", \"prefix\": \"short\", \"tag_ttl\": 2}
  ]
}"

# --- counting what reached an upstream ------------------------------------------
# registry_mark NAME / registry_since NAME (tests/lib/registry.sh): what
# regcache asked the registry NAME since the mark.
# count WHAT PATTERN: lines of the text WHAT matching the ERE PATTERN.
count() { grep -cE -- "$2" <<<"$1" || true; }
show() { diag "upstream requests: $(printf '%s' "$1" | tr '\n' ';')"; }

# pull REF OUT [skopeo args]: skopeo copy through regcache into dir:OUT.
# pull_verify REF OUT DIGEST [skopeo args]: and check every file.
pull() {
  local ref=$1 out=$2
  shift 2
  rm -rf "$out"
  skopeo_run copy --quiet --src-tls-verify=false "$@" "docker://$rc_ADDR/$ref" "dir:$out"
}
pull_verify() {
  local ref=$1 out=$2 digest=$3
  shift 3
  pull "$ref" "$out" "$@" && verify_dir_digests "$out" "$digest"
}

# hdr FILE NAME: the value of header NAME in a curl -D dump.
hdr() { tr -d '\r' <"$1" | awk -F': ' -v n="$2" 'tolower($1) == tolower(n) { v = $2 } END { print v }'; }
status_of() { tr -d '\r' <"$1" | awk 'NR == 1 { print $2 }'; }

# ttl_passed T_NS MS: at least MS milliseconds since date +%s%N said T_NS.
ttl_passed() { [ $((($(date +%s%N) - $1) / 1000000)) -ge "$2" ]; }

# --- 1. within the TTL: no upstream request at all -------------------------------
registry_mark up
check "cold pull of test/single through regcache verifies" \
  pull_verify test/single:latest "$TESTDIR/o-single1" "${DIGEST[single]}"
R=$(registry_since up)
NBLOBS=$(jq -r '(.config.digest), (.layers[].digest)' "$TESTDIR/o-single1/manifest.json" | sort -u | wc -l)
cold_counts() {
  [ "$(count "$R" '^GET /v2/test/single/manifests/latest$')" -eq 1 ] &&
    [ "$(count "$R" '^GET /v2/test/single/blobs/')" -eq "$NBLOBS" ] &&
    [ "$(count "$R" '^HEAD ')" -eq 0 ]
}
show "$R"
check "the cold pull made 1 manifest GET and 1 GET per blob ($NBLOBS), no HEAD" cold_counts

registry_mark up
check "second pull of test/single verifies" \
  pull_verify test/single:latest "$TESTDIR/o-single2" "${DIGEST[single]}"
R=$(registry_since up)
show "$R"
ok "$([ -z "$R" ]; echo $?)" "the second pull within the TTL made 0 upstream requests"
n=$(count_lines "$rc_LOG" '"GET /v2/test/single/(manifests|blobs)/[^" ]* HTTP/1\.[01]" 200 '"$AL_REST"' up=up cache=HIT$')
ok "$([ "$n" -eq $((NBLOBS + 1)) ]; echo $?)" \
  "the access log says HIT for the manifest and each blob of the second pull ($n)"
n=$(count_lines "$rc_LOG" '"GET /v2/test/single/(manifests|blobs)/[^" ]* HTTP/1\.[01]" 200 '"$AL_REST"' up=up cache=MISS$')
ok "$([ "$n" -eq $((NBLOBS + 1)) ]; echo $?)" "and MISS for each of the cold pull ($n)"

# --- 2. HEAD, Range, If-None-Match, X-Cache on cached content -----------------------
LAYER=$(jq -r '.layers[0].digest' "$TESTDIR/o-single1/manifest.json")
LAYER_FILE=$TESTDIR/o-single1/${LAYER#sha256:}
LAYER_SIZE=$(stat -c %s "$LAYER_FILE")
MF_SIZE=$(stat -c %s "$TESTDIR/o-single1/manifest.json")
H=$TESTDIR/h
registry_mark up

head_blob() {
  tcurl -I -o /dev/null -D "$H" "$rc_URL/v2/test/single/blobs/$LAYER" || return 1
  cat "$H"
  [ "$(status_of "$H")" = 200 ] && [ "$(hdr "$H" Content-Length)" = "$LAYER_SIZE" ] &&
    [ "$(hdr "$H" Docker-Content-Digest)" = "$LAYER" ] && [ "$(hdr "$H" X-Cache)" = HIT ]
}
check "HEAD of a cached blob: 200, Content-Length, Docker-Content-Digest, X-Cache: HIT" head_blob

head_manifest() {
  tcurl -I -o /dev/null -D "$H" -H "Accept: $OCI_MANIFEST" "$rc_URL/v2/test/single/manifests/$1" ||
    return 1
  cat "$H"
  [ "$(status_of "$H")" = 200 ] && [ "$(hdr "$H" Content-Length)" = "$MF_SIZE" ] &&
    [ "$(hdr "$H" Docker-Content-Digest)" = "${DIGEST[single]}" ] &&
    [ "$(hdr "$H" Content-Type)" = "$OCI_MANIFEST" ] && [ "$(hdr "$H" X-Cache)" = HIT ]
}
check "HEAD of a cached manifest by tag: Content-Length, Docker-Content-Digest, HIT" \
  head_manifest latest
check "HEAD of a cached manifest by digest: the same" head_manifest "${DIGEST[single]}"

range_blob() {
  local got want
  want=$(head -c 1000 "$LAYER_FILE" | tail -c 900 | sha256sum)
  got=$(tcurl -D "$H" -H "Range: bytes=100-999" "$rc_URL/v2/test/single/blobs/$LAYER" | sha256sum)
  cat "$H"
  [ "$got" = "$want" ] && [ "$(status_of "$H")" = 206 ] &&
    [ "$(hdr "$H" Content-Range)" = "bytes 100-999/$LAYER_SIZE" ] &&
    [ "$(hdr "$H" Content-Length)" = 900 ] && [ "$(hdr "$H" X-Cache)" = HIT ]
}
check "Range on a cached blob: 206, Content-Range, the right 900 bytes, HIT" range_blob

range_suffix() {
  local got want
  want=$(tail -c 500 "$LAYER_FILE" | sha256sum)
  got=$(tcurl -D "$H" -H "Range: bytes=-500" "$rc_URL/v2/test/single/blobs/$LAYER" | sha256sum)
  [ "$got" = "$want" ] && [ "$(status_of "$H")" = 206 ] &&
    [ "$(hdr "$H" Content-Range)" = "bytes $((LAYER_SIZE - 500))-$((LAYER_SIZE - 1))/$LAYER_SIZE" ]
}
check "a suffix Range (bytes=-500) on a cached blob: 206 and the last 500 bytes" range_suffix

range_416() {
  tcurl -o /dev/null -D "$H" -H "Range: bytes=$LAYER_SIZE-" "$rc_URL/v2/test/single/blobs/$LAYER"
  cat "$H"
  [ "$(status_of "$H")" = 416 ] && [ "$(hdr "$H" Content-Range)" = "bytes */$LAYER_SIZE" ]
}
check "a Range past the end: 416 with Content-Range bytes */SIZE" range_416

inm() {
  local path=$1 etag=$2 n
  n=$(tcurl -o "$TESTDIR/inm.body" -D "$H" -H "If-None-Match: \"$etag\"" \
      -H "Accept: $OCI_MANIFEST" -w '%{size_download}' "$rc_URL$path") || return 1
  cat "$H"
  [ "$(status_of "$H")" = 304 ] && [ "$n" = 0 ]
}
check "If-None-Match with the blob's digest: 304, no body" \
  inm "/v2/test/single/blobs/$LAYER" "$LAYER"
check "If-None-Match with the manifest's digest (by tag): 304, no body" \
  inm /v2/test/single/manifests/latest "${DIGEST[single]}"

inm_other() {
  tcurl -o /dev/null -D "$H" -H "If-None-Match: \"sha256:$(printf '%064d' 1)\"" \
    "$rc_URL/v2/test/single/blobs/$LAYER" || return 1
  [ "$(status_of "$H")" = 200 ] && [ "$(hdr "$H" ETag)" = "\"$LAYER\"" ]
}
check "If-None-Match with another digest: 200 and ETag \"<digest>\"" inm_other

R=$(registry_since up)
show "$R"
ok "$([ -z "$R" ]; echo $?)" "HEAD, Range and If-None-Match on cached content made 0 upstream requests"

# --- 3. negative cache ---------------------------------------------------------------
missing() {
  local n
  tcurl -o "$TESTDIR/neg.body" -D "$H" -H "Accept: $OCI_MANIFEST" \
    "$rc_URL/v2/test/single/manifests/nosuchtag" || return 1
  cat "$H" "$TESTDIR/neg.body"
  [ "$(status_of "$H")" = 404 ] &&
    jq -e '.errors[0].code == "MANIFEST_UNKNOWN"' "$TESTDIR/neg.body" >/dev/null || return 1
  [ -z "$1" ] || [ "$(hdr "$H" X-Cache)" = "$1" ]
}
registry_mark up
check "a missing tag: 404 MANIFEST_UNKNOWN" missing ""
R=$(registry_since up)
show "$R"
ok "$([ "$(count "$R" '^GET /v2/test/single/manifests/nosuchtag$')" -eq 1 ]; echo $?)" \
  "the first request for the missing tag asked the upstream once"
registry_mark up
check "the missing tag again: 404 MANIFEST_UNKNOWN" missing ""
R=$(registry_since up)
show "$R"
ok "$([ -z "$R" ]; echo $?)" "the second request within negative_ttl made 0 upstream requests"
n=$(count_lines "$rc_LOG" '"GET /v2/test/single/manifests/nosuchtag HTTP/1\.[01]" 404 '"$AL_REST"' up=up cache=HIT$')
ok "$([ "$n" -eq 1 ]; echo $?)" "the access log says HIT for the remembered 404 ($n)"
ok "$([ "$(hdr "$H" X-Cache)" = HIT ]; echo $?)" "the remembered 404 carries X-Cache: HIT"

# --- 4. indexes and a client that accepts less ----------------------------------------
registry_mark up
check "test/list (Docker manifest list) with --all verifies" \
  pull_verify test/list:latest "$TESTDIR/o-list1" "${DIGEST[list]}" --all
check "test/index (OCI index) with --all verifies" \
  pull_verify test/index:latest "$TESTDIR/o-index1" "${DIGEST[index]}" --all
R=$(registry_since up)
show "$R"
registry_mark up
check "test/list with --all again verifies" \
  pull_verify test/list:latest "$TESTDIR/o-list2" "${DIGEST[list]}" --all
check "test/index with --all again verifies" \
  pull_verify test/index:latest "$TESTDIR/o-index2" "${DIGEST[index]}" --all
R=$(registry_since up)
show "$R"
ok "$([ -z "$R" ]; echo $?)" "the repeated --all pulls within the TTL made 0 upstream requests"

# narrow REPO ACCEPT TAG: the same GET with one Accept type to the registry
# and to regcache: the same status, media type, digest and bytes.
narrow() {
  local repo=$1 accept=$2 want=$3 d r
  tcurl -o "$TESTDIR/n-direct" -D "$TESTDIR/n-direct.h" -H "Accept: $accept" \
    "$up_URL/v2/$repo/manifests/latest" || return 1
  tcurl -o "$TESTDIR/n-rc" -D "$TESTDIR/n-rc.h" -H "Accept: $accept" \
    "$rc_URL/v2/$repo/manifests/latest" || return 1
  cat "$TESTDIR/n-rc.h"
  for r in n-direct n-rc; do
    diag "$r: status $(status_of "$TESTDIR/$r.h") type $(hdr "$TESTDIR/$r.h" Content-Type) digest $(hdr "$TESTDIR/$r.h" Docker-Content-Digest) body sha256:$(sha256sum <"$TESTDIR/$r" | cut -c1-64)"
  done
  [ "$(status_of "$TESTDIR/n-rc.h")" = "$(status_of "$TESTDIR/n-direct.h")" ] || return 1
  [ "$(status_of "$TESTDIR/n-rc.h")" = "$want" ] || return 1
  [ "$want" = 200 ] || return 0
  d=$(hdr "$TESTDIR/n-direct.h" Docker-Content-Digest)
  [ "$(hdr "$TESTDIR/n-rc.h" Content-Type)" = "$(hdr "$TESTDIR/n-direct.h" Content-Type)" ] &&
    [ "$(hdr "$TESTDIR/n-rc.h" Docker-Content-Digest)" = "$d" ] &&
    cmp -s "$TESTDIR/n-rc" "$TESTDIR/n-direct" &&
    [ "sha256:$(sha256sum <"$TESTDIR/n-rc" | cut -c1-64)" = "$d" ]
}
AMD64=$(jq -r '.manifests[] | select(.platform.architecture == "amd64") | .digest' \
  "$TESTDIR/o-list1/manifest.json")
registry_mark up
check "Accept: Docker schema2 only, on the manifest list: what the registry gives (200, the same manifest)" \
  narrow test/list "$DOCKER_V2" 200
ok "$([ "$(hdr "$TESTDIR/n-rc.h" Docker-Content-Digest)" = "$AMD64" ] &&
      [ "$(hdr "$TESTDIR/n-rc.h" Content-Type)" = "$DOCKER_V2" ]; echo $?)" \
  "that is the linux/amd64 schema2 manifest, not the list"
check "Accept: Docker schema2 only, on the OCI index: what the registry gives (404)" \
  narrow test/index "$DOCKER_V2" 404
R=$(registry_since up)
show "$R"
ok "$([ "$(count "$R" '^GET /v2/test/(list|index)/manifests/latest$')" -eq 2 ]; echo $?)" \
  "each narrower Accept asked the upstream once"
registry_mark up
check "the narrow Accept again on the list: the same answer" narrow test/list "$DOCKER_V2" 200
ok "$([ "$(hdr "$TESTDIR/n-rc.h" X-Cache)" = HIT ]; echo $?)" "… from the cache (X-Cache: HIT)"
check "the narrow Accept again on the index: the same answer" narrow test/index "$DOCKER_V2" 404
R=$(registry_since up)
show "$R"
ok "$([ -z "$R" ]; echo $?)" "the repeats within the TTL made 0 upstream requests"

# --- 5. 20 concurrent cold pulls ----------------------------------------------------------
registry_mark up
for i in $(seq "$NCONC"); do
  spawn "conc$i" skopeo_run copy --quiet --src-tls-verify=false \
    "docker://$rc_ADDR/test/conc:latest" "dir:$TESTDIR/o-conc$i"
done
none_alive() {
  local i p
  for i in $(seq "$NCONC"); do p=conc${i}_PID; ! pid_alive "${!p}" || return 1; done
}
wait_for "$NCONC concurrent pulls to end" 60 none_alive
fails=0
for i in $(seq "$NCONC"); do
  p=conc${i}_PID
  rc=0; wait "${!p}" || rc=$?
  for j in "${!_spawn_names[@]}"; do [ "${_spawn_names[$j]}" != "conc$i" ] || _spawn_pids[j]=; done
  if [ "$rc" -ne 0 ] || ! verify_dir_digests "$TESTDIR/o-conc$i" "${DIGEST[conc]}" 2>"$TESTDIR/v.err"; then
    fails=$((fails + 1))
    diag "pull $i: exit $rc; $(tail -n 3 "$TESTDIR/conc$i.log" "$TESTDIR/v.err")"
  fi
done
ok "$fails" "all $NCONC concurrent cold pulls of test/conc verify ($fails failed)"
R=$(registry_since up)
CBLOBS=$(jq -r '(.config.digest), (.layers[].digest)' "$TESTDIR/img-conc/blobs/sha256/${DIGEST[conc]#sha256:}" | sort -u)
once_each() {
  local d n bad=0
  for d in $CBLOBS; do
    n=$(count "$R" "^GET /v2/test/conc/blobs/$d\$")
    [ "$n" -eq 1 ] || { diag "$d: $n upstream GETs"; bad=1; }
  done
  [ "$(count "$R" '^GET /v2/test/conc/blobs/')" -eq "$(wc -w <<<"$CBLOBS")" ] || bad=1
  return $bad
}
diag "upstream: $(count "$R" '^GET /v2/test/conc/manifests/') manifest GETs, $(count "$R" '^GET /v2/test/conc/blobs/') blob GETs, $(count "$R" '^HEAD ') HEADs"
check "exactly one upstream GET per blob ($(wc -w <<<"$CBLOBS") blobs) for the $NCONC pulls" once_each
n=$(count "$R" '^GET /v2/test/conc/manifests/')
ok "$([ "$n" -eq 1 ]; echo $?)" "and one upstream GET of the manifest ($n)"
n=$(count_lines "$rc_LOG" '"GET /v2/test/conc/blobs/[^" ]* HTTP/1\.[01]" 200 '"$AL_REST"' up=up cache=COALESCED$')
diag "access log for test/conc blobs: $(count_lines "$rc_LOG" '/v2/test/conc/blobs/.* up=up cache=MISS$') MISS, $n COALESCED, $(count_lines "$rc_LOG" '/v2/test/conc/blobs/.* up=up cache=HIT$') HIT"
ok "$([ "$(count_lines "$rc_LOG" '"GET /v2/test/conc/blobs/[^" ]* HTTP/1\.[01]" 200 '"$AL_REST"' up=up cache=(MISS|COALESCED|HIT)$')" -eq $((NCONC * $(wc -w <<<"$CBLOBS"))) ]; echo $?)" \
  "every blob answer of the $NCONC pulls was a 200 from the fill or the cache"

# --- 6. after the TTL: one HEAD per tag; a moved tag --------------------------------------
registry_mark ttlreg
check "short/test/app:v1 cold pull verifies" \
  pull_verify short/test/app:v1 "$TESTDIR/o-app1" "${DIGEST[appA]}"
check "short/test/idx:latest cold pull with --all verifies" \
  pull_verify short/test/idx:latest "$TESTDIR/o-idx1" "${DIGEST[idx]}" --all
T=$(date +%s%N)
R=$(registry_since ttlreg)
show "$R"
wait_for "tag_ttl (2 s) to pass" 10 ttl_passed "$T" 2200
registry_mark ttlreg
check "short/test/app:v1 after the TTL verifies" \
  pull_verify short/test/app:v1 "$TESTDIR/o-app2" "${DIGEST[appA]}"
check "short/test/idx:latest with --all after the TTL verifies" \
  pull_verify short/test/idx:latest "$TESTDIR/o-idx2" "${DIGEST[idx]}" --all
R=$(registry_since ttlreg)
show "$R"
reval_counts() {
  [ "$(count "$R" '^HEAD /v2/test/app/manifests/v1$')" -eq 1 ] &&
    [ "$(count "$R" '^HEAD /v2/test/idx/manifests/latest$')" -eq 1 ] &&
    [ "$(count "$R" '^HEAD ')" -eq 2 ] &&
    [ "$(count "$R" '^GET ')" -eq 0 ]
}
check "after the TTL: exactly one HEAD per tag, no manifest or blob GET" reval_counts
n=$(count_lines "$rc_LOG" '"GET /v2/short/test/(app/manifests/v1|idx/manifests/latest) HTTP/1\.[01]" 200 '"$AL_REST"' up=short cache=REVALIDATED$')
ok "$([ "$n" -eq 2 ]; echo $?)" "the access log says REVALIDATED for both tags ($n)"

# The tag moves upstream.
registry_push_dir ttlreg "$TESTDIR/img-appB" test/app:v1 >/dev/null
T=$(date +%s%N)
wait_for "tag_ttl (2 s) to pass" 10 ttl_passed "$T" 2200
registry_mark ttlreg
check "short/test/app:v1 after it moved upstream: the new image arrives and verifies" \
  pull_verify short/test/app:v1 "$TESTDIR/o-app3" "${DIGEST[appB]}"
T_B=$(date +%s%N)
R=$(registry_since ttlreg)
show "$R"
NEWB=$(jq -r '(.config.digest), (.layers[].digest)' "$TESTDIR/o-app3/manifest.json" | sort -u | wc -l)
moved_counts() {
  [ "$(count "$R" '^HEAD /v2/test/app/manifests/v1$')" -eq 1 ] &&
    [ "$(count "$R" '^HEAD ')" -eq 1 ] &&
    [ "$(count "$R" '^GET /v2/test/app/manifests/')" -eq 1 ] &&
    [ "$(count "$R" "^GET /v2/test/app/manifests/${DIGEST[appB]}\$")" -eq 1 ] &&
    [ "$(count "$R" '^GET /v2/test/app/blobs/')" -eq "$NEWB" ]
}
check "the moved tag: 1 HEAD, then 1 GET of the new digest, 1 GET per new blob ($NEWB)" moved_counts

# --- 7. the upstream stopped: stale-if-error ------------------------------------------------
stop ttlreg
wait_for "tag_ttl (2 s) to pass" 10 ttl_passed "$T_B" 2200
check "upstream stopped: short/test/app:v1 still pulls by tag and verifies" \
  pull_verify short/test/app:v1 "$TESTDIR/o-app4" "${DIGEST[appB]}"
check "upstream stopped: short/test/app@digest pulls and verifies" \
  pull_verify "short/test/app@${DIGEST[appB]}" "$TESTDIR/o-app5" "${DIGEST[appB]}"
check "upstream stopped: short/test/idx:latest --all still pulls and verifies" \
  pull_verify short/test/idx:latest "$TESTDIR/o-idx3" "${DIGEST[idx]}" --all
n=$(count_lines "$rc_LOG" '"GET /v2/short/test/app/manifests/v1 HTTP/1\.[01]" 200 '"$AL_REST"' up=short cache=STALE$')
ok "$([ "$n" -ge 1 ]; echo $?)" "the access log says STALE for the tag ($n)"
n=$(count_lines "$rc_LOG" "\"GET /v2/short/test/app/manifests/${DIGEST[appB]} HTTP/1\\.[01]\" 200 $AL_REST up=short cache=HIT\$")
ok "$([ "$n" -ge 1 ]; echo $?)" "and HIT for the digest ($n)"

# stale_curl PATH ACCEPT: a manifest by tag answered from the cache with a
# stale warning.
stale_curl() {
  tcurl -o "$TESTDIR/st.body" -D "$H" -H "Accept: $2" "$rc_URL$1" || return 1
  cat "$H"
  [ "$(status_of "$H")" = 200 ] && [ "$(hdr "$H" X-Cache)" = STALE ] &&
    [[ "$(hdr "$H" Warning)" == 110* ]] &&
    [ "$(hdr "$H" Docker-Content-Digest)" = "${DIGEST[appB]}" ] &&
    [ "sha256:$(sha256sum <"$TESTDIR/st.body" | cut -c1-64)" = "${DIGEST[appB]}" ]
}
ALL6=$(jq -rn '["application/vnd.oci.image.manifest.v1+json","application/vnd.docker.distribution.manifest.v2+json","application/vnd.docker.distribution.manifest.v1+prettyjws","application/vnd.docker.distribution.manifest.v1+json","application/vnd.docker.distribution.manifest.list.v2+json","application/vnd.oci.image.index.v1+json"] | join(",")')
check "upstream stopped: GET by tag answers 200, X-Cache: STALE, Warning: 110, the cached bytes" \
  stale_curl /v2/short/test/app/manifests/v1 "$ALL6"
check "… also for a client with another Accept set (the four OCI/schema2 types)" \
  stale_curl /v2/short/test/app/manifests/v1 "$MANIFEST_ACCEPT"
check "… and for a client that accepts only the cached manifest's type (OCI manifest)" \
  stale_curl /v2/short/test/app/manifests/v1 "$OCI_MANIFEST"
T_S=$(date +%s%N)   # a stale answer might count as a check: wait from here
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

# --- 8. upstreams answering 429 and 503: a second regcache on the same data ------------------
fake() {
  local mode=$1 port
  port=$(free_port)
  spawn "fake_$mode" python3 "$TOOLSDIR/fakeupstream.py" "$mode" "$port"
  printf -v "fake_${mode}_URL" '%s' "http://127.0.0.1:$port"
  wait_for "fake upstream $mode" 10 grep -q listening "$TESTDIR/fake_$mode.log"
}
fake 429
fake 503
# The same upstream names as before: the cached tags are theirs.
regcache_start rc2 "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$DATA\",
  \"upstreams\": [
    {\"name\": \"up\", \"url\": \"$fake_429_URL\", \"tag_ttl\": 2},
    {\"name\": \"short\", \"url\": \"$fake_503_URL\", \"prefix\": \"short\", \"tag_ttl\": 2}
  ]
}"
rc_ADDR=$rc2_ADDR rc_URL=$rc2_URL
wait_for "tag_ttl (2 s) to pass" 10 ttl_passed "$T_S" 2200
check "upstream answers 429: test/single:latest still pulls by tag and verifies" \
  pull_verify test/single:latest "$TESTDIR/o-s429" "${DIGEST[single]}"
check "upstream answers 429: test/single@digest pulls and verifies" \
  pull_verify "test/single@${DIGEST[single]}" "$TESTDIR/o-s429d" "${DIGEST[single]}"
check "upstream answers 503: short/test/app:v1 still pulls by tag and verifies" \
  pull_verify short/test/app:v1 "$TESTDIR/o-a503" "${DIGEST[appB]}"
check "upstream answers 503: short/test/app@digest pulls and verifies" \
  pull_verify "short/test/app@${DIGEST[appB]}" "$TESTDIR/o-a503d" "${DIGEST[appB]}"
n429=$(count_lines "$fake_429_LOG" '^request 429 HEAD /v2/test/single/manifests/latest ')
n503=$(count_lines "$fake_503_LOG" '^request 503 HEAD /v2/test/app/manifests/v1 ')
ok "$([ "$n429" -ge 1 ] && [ "$n503" -ge 1 ]; echo $?)" \
  "regcache did ask both upstreams (HEAD by tag: $n429 to the 429 one, $n503 to the 503 one)"
nd=$(count_lines "$fake_429_LOG" "request 429 [A-Z]+ /v2/test/single/(manifests/sha256|blobs)")
nd=$((nd + $(count_lines "$fake_503_LOG" "request 503 [A-Z]+ /v2/test/app/(manifests/sha256|blobs)")))
ok "$([ "$nd" -eq 0 ]; echo $?)" "content by digest never went upstream ($nd requests)"
n=$(count_lines "$rc2_LOG" '"GET /v2/(test/single/manifests/latest|short/test/app/manifests/v1) HTTP/1\.[01]" 200 '"$AL_REST"' up=(up|short) cache=STALE$')
ok "$([ "$n" -ge 2 ]; echo $?)" "the access log says STALE for both tags ($n)"
check "upstream answers 503: GET by tag answers 200, X-Cache: STALE, Warning: 110" \
  stale_curl /v2/short/test/app/manifests/v1 "$ALL6"
check "regcache is still running" regcache_alive rc2
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc2

#!/bin/bash
# regcache warm: images pulled into a running regcache's cache through its
# client port, then served with the upstream stopped.
#
#   - a single-platform image named with its registry host (?ns=) and a
#     two-platform index named as under regcache: exit 0, one line each,
#     a GET of every blob in regcache's access log;
#   - warming again fetches no blob (HEAD says HIT);
#   - --platform linux/arm64: only that platform's manifest and blobs;
#   - a missing image and an unknown registry: exit 1, status and OCI code
#     on stderr, the other images still warmed;
#   - https with --ca-file (and without it, a refused certificate);
#   - on a terminal, a progress line redrawn in place;
#   - with the upstream stopped skopeo pulls what was warmed (digests
#     verified), and not the platform that was left out.
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

require_cmd docker-registry skopeo python3 curl jq sha256sum openssl
require_regcache
plan 23

declare -A DIGEST
DIGEST[single]=$(mkimage "$TESTDIR/img-single" --seed w-single --layers 2 --layer-size 200000)
DIGEST[index]=$(mkimage "$TESTDIR/img-index" --seed w-index --layers 2 --layer-size 100000 \
  --platforms linux/amd64,linux/arm64)
DIGEST[multi]=$(mkimage "$TESTDIR/img-multi" --seed w-multi --layers 2 --layer-size 100000 \
  --platforms linux/amd64,linux/arm64)

registry_start_plain up
for i in single index multi; do
  registry_push_dir up "$TESTDIR/img-$i" "test/$i:latest" >/dev/null
done

tls_init
TLS_PORT=$(free_port)
regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\",
    {\"address\": \"127.0.0.1:$TLS_PORT\",
     \"tls\": {\"certificate\": \"$TLS_CERT\", \"key\": \"$TLS_KEY\"}}],
  \"data_dir\": \"$TESTDIR/data\",
  \"upstreams\": [{\"name\": \"up\", \"url\": \"$up_URL\"}]
}"

# image_blobs NAME [OS/ARCH]: the config and layer digests of the image in
# the OCI layout img-NAME (of that platform only, for an index).
image_blobs() {
  local dir=$TESTDIR/img-$1 plat=${2:-} top m
  _blob() { cat "$dir/blobs/sha256/${1#sha256:}"; }
  top=$(jq -r '.manifests[0].digest' "$dir/index.json")
  if _blob "$top" | jq -e 'has("manifests")' >/dev/null; then
    for m in $(_blob "$top" | jq -r --arg p "$plat" '.manifests[] |
        select($p == "" or (.platform.os + "/" + .platform.architecture) == $p) | .digest'); do
      _blob "$m" | jq -r '.config.digest, .layers[].digest'
    done
  else
    _blob "$top" | jq -r '.config.digest, .layers[].digest'
  fi
}
# platform_manifest NAME OS/ARCH: the digest of that platform's manifest.
platform_manifest() {
  local dir=$TESTDIR/img-$1 top
  top=$(jq -r '.manifests[0].digest' "$dir/index.json")
  jq -r --arg p "$2" '.manifests[] |
    select((.platform.os + "/" + .platform.architecture) == $p) | .digest' \
    "$dir/blobs/sha256/${top#sha256:}"
}

# warm ARGS...: run regcache warm against rc; stdout in $OUT, stderr in
# $ERR, exit status in $RC.
OUT=$TESTDIR/warm.out
ERR=$TESTDIR/warm.err
warm() {
  RC=0
  "$REGCACHE" warm "$@" >"$OUT" 2>"$ERR" </dev/null || RC=$?
  diag "regcache warm $*: exit $RC" "$(cat "$OUT" "$ERR")"
}

# gets REPO DIGEST [QUERY_ERE]: regcache's access log has this many GETs
# of the blob answered 200.
gets() {
  count_lines "$rc_LOG" "\"GET /v2/$1/blobs/$2${3:-} HTTP/1\\.[01]\" 200 "
}
# all_got REPO QUERY_ERE DIGEST...: each blob was GET once, exactly.
all_got() {
  local repo=$1 q=$2 d
  shift 2
  for d; do
    [ "$(gets "$repo" "$d" "$q")" -eq 1 ] || { echo "$repo $d: $(gets "$repo" "$d" "$q") GETs"; return 1; }
  done
}

SINGLE_REF=127.0.0.1:$up_PORT/test/single:latest
mapfile -t SINGLE_BLOBS < <(image_blobs single)
mapfile -t INDEX_BLOBS < <(image_blobs index)

# --- 1. a cold warm ---------------------------------------------------------------
warm --url "$rc_URL" "$SINGLE_REF" test/index:latest
ok "$RC" "warm of test/single (with its registry host) and test/index exits 0"
lines_ok() {
  [ "$(wc -l <"$OUT")" -eq 2 ] &&
    grep -qxE "$(sed 's/[.]/\\./g' <<<"$SINGLE_REF"): 1 manifest, 3 blobs \(3 fetched, 0 already cached\), .* in [0-9.]+ s" "$OUT" &&
    grep -qxE "test/index:latest: 3 manifests, 6 blobs \(6 fetched, 0 already cached\), .* in [0-9.]+ s" "$OUT" &&
    [ ! -s "$ERR" ]
}
check "one line per image, with its manifests and blobs counted; nothing on stderr" lines_ok
# The line is written as the reply ends: poll for the last one.
logged_all() {
  all_got test/single '\?ns=127\.0\.0\.1(%3A|:)'"$up_PORT" "${SINGLE_BLOBS[@]}" &&
    all_got test/index '' "${INDEX_BLOBS[@]}"
}
rc=0; wait_for "a GET of every blob in the access log" 10 logged_all || rc=$?
ok "$rc" "regcache's access log has one GET (200) of each of the 9 blobs, with ns= for test/single"
[ "$rc" -eq 0 ] || diag "$(logged_all 2>&1)"
n=$(count_lines "$rc_LOG" '"GET /v2/test/index/manifests/sha256:[0-9a-f]{64} HTTP/1\.[01]" 200 ')
ok "$([ "$n" -eq 2 ]; echo $?)" "… and a GET of each platform's manifest ($n)"

# --- 2. again: nothing to fetch ------------------------------------------------------
warm --url "$rc_URL" "$SINGLE_REF"
second_ok() {
  [ "$RC" -eq 0 ] &&
    grep -qE ": 1 manifest, 3 blobs \(0 fetched, 3 already cached\)" "$OUT" &&
    all_got test/single '\?ns=127\.0\.0\.1(%3A|:)'"$up_PORT" "${SINGLE_BLOBS[@]}"
}
check "warming it again: exit 0, 3 blobs already cached, no new GET of any blob" second_ok

# --- 3. one platform -----------------------------------------------------------------
mapfile -t ARM_BLOBS < <(image_blobs multi linux/arm64)
mapfile -t AMD_BLOBS < <(image_blobs multi linux/amd64)
AMD_MANIFEST=$(platform_manifest multi linux/amd64)
ARM_MANIFEST=$(platform_manifest multi linux/arm64)
warm --url "$rc_URL" --platform linux/arm64 test/multi:latest
ok "$RC" "warm --platform linux/arm64 of test/multi exits 0"
check "… and says 2 manifests, 3 blobs" grep -qE "^test/multi:latest: 2 manifests, 3 blobs \(3 fetched" "$OUT"
arm_only() {
  local d
  all_got test/multi '' "${ARM_BLOBS[@]}" || return 1
  for d in "${AMD_BLOBS[@]}"; do
    [ "$(count_lines "$rc_LOG" "/v2/test/multi/blobs/$d ")" -eq 0 ] || { echo "amd64 blob $d asked for"; return 1; }
  done
  [ "$(count_lines "$rc_LOG" "/v2/test/multi/manifests/$ARM_MANIFEST ")" -eq 1 ] &&
    [ "$(count_lines "$rc_LOG" "/v2/test/multi/manifests/$AMD_MANIFEST ")" -eq 0 ]
}
rc=0; wait_for "the arm64 blobs in the access log" 10 arm_only || rc=$?
ok "$rc" "only the arm64 manifest and blobs were asked for, none of amd64's"
[ "$rc" -eq 0 ] || diag "$(arm_only 2>&1)"

# --- 4. failures -----------------------------------------------------------------------
warm --url "$rc_URL" test/nosuch:latest "$SINGLE_REF"
ok "$([ "$RC" -eq 1 ]; echo $?)" "a missing image: exit 1"
check "… stderr names it with the status and the OCI code" \
  grep -qE '^regcache warm: test/nosuch:latest: manifest latest: 404 [A-Z_]+_UNKNOWN' "$ERR"
check "… and the other image is still warmed" grep -qE ": 1 manifest, 3 blobs \(0 fetched, 3 already cached\)" "$OUT"
warm --url "$rc_URL" ghcr.io/nobody/nothing:1
unknown_ns() {
  [ "$RC" -eq 1 ] &&
    grep -qE '^regcache warm: ghcr.io/nobody/nothing:1: manifest 1: 404 NAME_UNKNOWN: .*namespace' "$ERR"
}
check "a registry regcache has no upstream for: exit 1, 404 NAME_UNKNOWN" unknown_ns
warm --url "$rc_URL" 'test/UPPER:latest'
ok "$([ "$RC" -eq 2 ] && grep -q 'invalid repository name' "$ERR"; echo $?)" \
  "an invalid reference: exit 2 before anything is asked"
warm --url "http://127.0.0.1:$(free_port)" test/single:latest
ok "$([ "$RC" -eq 1 ] && grep -qi 'connect' "$ERR"; echo $?)" "nothing listening: exit 1, the connection error"

# --- 5. https ---------------------------------------------------------------------------
warm --url "https://127.0.0.1:$TLS_PORT" --ca-file "$TLS_CA" test/single:latest
ok "$([ "$RC" -eq 0 ] && grep -q '3 already cached' "$OUT"; echo $?)" \
  "over https with --ca-file: exit 0, every blob already cached"
warm --url "https://127.0.0.1:$TLS_PORT" test/single:latest
ok "$([ "$RC" -eq 1 ] && grep -qiE 'certificate|tls' "$ERR"; echo $?)" \
  "over https without the CA: exit 1, the certificate is refused"

# --- 6. a terminal ----------------------------------------------------------------------
if command -v script >/dev/null 2>&1; then
  tty_out=$TESTDIR/tty.out
  script -q -e -c "$(printf '%q ' "$REGCACHE" warm --url "$rc_URL" test/index:latest)" /dev/null \
    >"$tty_out" 2>&1 </dev/null || true
  tty_ok() {
    grep -q $'\r\033\[K' "$tty_out" &&
      tr '\r' '\n' <"$tty_out" | grep -qE '^(.\[K)?test/index:latest: 3 manifests, 6 blobs'
  }
  check "on a terminal the line is redrawn in place and ends with the summary" tty_ok
  [ -n "$(tr -d '\r' <"$tty_out")" ] || diag "script wrote nothing"
else
  skip "on a terminal the line is redrawn in place" "script(1) not installed"
fi

# --- 7. the upstream stopped ----------------------------------------------------------
stop up
pull_verify() {
  local ref=$1 out=$2 digest=$3
  shift 3
  rm -rf "$out"
  skopeo_run "$@" copy --quiet --src-tls-verify=false "docker://$rc_ADDR/$ref" "dir:$out" &&
    verify_dir_digests "$out" "$digest"
}
check "upstream stopped: skopeo pulls test/single, every file matches its digest" \
  pull_verify test/single:latest "$TESTDIR/o-single" "${DIGEST[single]}"
all_copy() {
  rm -rf "$TESTDIR/o-index"
  skopeo_run copy --quiet --all --src-tls-verify=false "docker://$rc_ADDR/test/index:latest" \
    "dir:$TESTDIR/o-index" && verify_dir_digests "$TESTDIR/o-index" "${DIGEST[index]}"
}
check "… and test/index with --all, both platforms" all_copy
check "… and test/multi for linux/arm64" \
  pull_verify test/multi:latest "$TESTDIR/o-arm" "$ARM_MANIFEST" --override-os linux --override-arch arm64
amd_fails() {
  ! skopeo_run --override-os linux --override-arch amd64 copy --quiet --src-tls-verify=false \
    "docker://$rc_ADDR/test/multi:latest" "dir:$TESTDIR/o-amd"
}
check "… but not test/multi for linux/amd64, which was not warmed" amd_fails

check "regcache is still running" regcache_alive rc
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

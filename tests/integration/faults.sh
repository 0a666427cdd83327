#!/bin/bash
# A blob that goes wrong on its way from the upstream never reaches a client
# whole and never lands in the cache; once the upstream behaves again the
# next pull succeeds.
#
# tests/tools/fakeupstream.py proxy-faulty sits in front of a real
# docker-registry and spoils the first blob GET of at least 4 KiB it
# proxies, in one way per upstream: the body cut short, one byte flipped, a
# reset mid-body, a Content-Length larger or smaller than the body, no
# Content-Length and a cut.  Every fault has its own image, so its layer is
# cold when the fault hits.  For each: the client's GET ends in an error
# (never a clean 200), the fill fails, no file for the digest is left under
# blobs/ or tmp/, the index does not know it (HEAD says MISS), and a skopeo
# pull of the image then verifies and caches it.  Then a flipped byte held
# back at the upstream while three clients read the same fill: all three
# are cut off, none gets the last byte.  `regcache verify` finds nothing
# wrong at the end.
#
# A Range read (bytes 0-999) of a cold blob whose upstream GET has byte 100
# flipped: the fill is not verified, so the client never gets a clean 206
# with all 1000 bytes (the last byte of the range is held back until the
# blob verifies); nothing is cached and the next pull verifies.
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

FAULTS="truncate flip reset cl-long cl-short noclen"
plan $((6 * 6 + 5 + 8 + 3))

registry_start_plain up
declare -A DIGEST LAYER
for f in $FAULTS gated rangeflip; do
  DIGEST[$f]=$(mkimage "$TESTDIR/img-$f" --seed "fault-$f" --layers 1 --layer-size 300000)
  LAYER[$f]=$(jq -r '.layers[0].digest' "$TESTDIR/img-$f/blobs/sha256/${DIGEST[$f]#sha256:}")
  registry_push_dir up "$TESTDIR/img-$f" "test/$f:latest" >/dev/null
done

# fake NAME FAULT [ARGS]: a proxy-faulty in front of up; sets fake_NAME_URL.
fake() {
  local name=$1 fault=$2 port
  shift 2
  port=$(free_port)
  spawn "fake_${name//-/_}" python3 "$TOOLSDIR/fakeupstream.py" proxy-faulty "$port" \
    --target "$up_URL" --fault "$fault" --count 1 --min-size 4096 "$@"
  printf -v "fake_${name//-/_}_URL" '%s' "http://127.0.0.1:$port"
  wait_for "fake upstream $name" 10 grep -q listening "$TESTDIR/fake_${name//-/_}.log"
}
UPS=""
for f in $FAULTS; do
  fake "$f" "$f"
  u=fake_${f//-/_}_URL
  UPS="$UPS{\"name\": \"$f\", \"url\": \"${!u}\", \"prefix\": \"$f\"},"
done
GATE=$TESTDIR/gate
fake gated flip --gate "$GATE"
UPS="$UPS{\"name\": \"gated\", \"url\": \"$fake_gated_URL\", \"prefix\": \"gated\"},"
fake rangeflip flip --flip-at 100
UPS="$UPS{\"name\": \"rangeflip\", \"url\": \"$fake_rangeflip_URL\", \"prefix\": \"rangeflip\"}"

DATA=$TESTDIR/data
regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$DATA\",
  \"timeouts\": {\"idle\": 5},
  \"upstreams\": [$UPS]
}"

blob_file() { local h=${1#sha256:}; printf '%s/blobs/sha256/%s/%s' "$DATA" "${h:0:2}" "$h"; }
tmp_empty() { [ -z "$(ls -A "$DATA/tmp")" ]; }
fill_failed() { grep -qE -- "fill $1 from $2/test/$2 failed" "$rc_LOG"; }

# not_cached F: no file for the layer, tmp/ empty once the fill has failed,
# and regcache's index does not know it (HEAD of an uncached blob: MISS).
not_cached() {
  local f=$1 d=${LAYER[$1]} x
  wait_for "regcache to log the failed fill of $d" 10 fill_failed "$d" "$f" || return 1
  grep -E -- "fill $d from" "$rc_LOG"
  wait_for "tmp/ to be empty" 10 tmp_empty || { ls -la "$DATA/tmp"; return 1; }
  [ ! -e "$(blob_file "$d")" ] || { echo "$(blob_file "$d") exists"; return 1; }
  x=$(tcurl -I -o /dev/null -w '%{http_code}' -D "$TESTDIR/h" "$rc_URL/v2/$f/test/$f/blobs/$d")
  tr -d '\r' <"$TESTDIR/h"
  [ "$x" = 200 ] && grep -qi '^X-Cache: MISS' "$TESTDIR/h"
}

recovers() {
  local f=$1 d=${LAYER[$1]}
  skopeo_run copy --quiet --src-tls-verify=false "docker://$rc_ADDR/$f/test/$f:latest" \
    "dir:$TESTDIR/o-$f" || return 1
  verify_dir_digests "$TESTDIR/o-$f" "${DIGEST[$f]}" || return 1
  [ "sha256:$(sha256sum <"$(blob_file "$d")" | cut -c1-64)" = "$d" ] || return 1
  tcurl -o /dev/null -D "$TESTDIR/h" "$rc_URL/v2/$f/test/$f/blobs/$d" &&
    grep -qi '^X-Cache: HIT' "$TESTDIR/h"
}

for f in $FAULTS; do
  d=${LAYER[$f]}
  log=fake_${f//-/_}_LOG
  rc=0
  res=$(curl -q -s --max-time 20 -o "$TESTDIR/body-$f" -w '%{http_code} %{size_download}' \
    "$rc_URL/v2/$f/test/$f/blobs/$d") || rc=$?
  n=$(count_lines "${!log}" "^fault $f /v2/test/$f/blobs/$d ")
  ok "$([ "$n" -eq 1 ]; echo $?)" "$f: the upstream spoiled the layer's GET ($n)"
  got=sha256:$(sha256sum <"$TESTDIR/body-$f" 2>/dev/null | cut -c1-64)
  diag "$f: curl exit $rc, status and bytes: $res (the layer has $(stat -c %s "$TESTDIR/img-$f/blobs/sha256/${d#sha256:}"))"
  # A clean exit is only fine with an error status; a 200 must break off.
  clean=1
  case "$rc:${res%% *}" in
    0:200 | 0:206) clean=0 ;;
  esac
  [ "$got" != "$d" ] || clean=0
  ok "$([ "$clean" -eq 1 ]; echo $?)" "$f: the client's GET fails (curl exit $rc, ${res:-?}), never a clean 200"
  check "$f: no file for the digest under blobs/ or tmp/, the index does not know it" not_cached "$f"
  # Without a length regcache waits for the verified blob before it
  # answers, so that fault gets a clean 502 instead of a cut-off 200.
  st=200; [ "$f" != noclen ] || st=502
  n=$(count_lines "$rc_LOG" "\"GET /v2/$f/test/$f/blobs/$d HTTP/1\\.[01]\" $st $AL_REST up=$f cache=MISS why=")
  ok "$([ "$n" -eq 1 ]; echo $?)" "$f: the access line says $st and why the answer ended ($n)"
  check "$f: once the upstream behaves, skopeo pulls the image, it verifies and is cached" \
    recovers "$f"
  n=$(count_lines "${!log}" '^fault ')
  ok "$([ "$n" -eq 1 ]; echo $?)" "$f: the recovery pull went through a clean upstream ($n faults in all)"
done

# --- a Range read of a cold blob whose byte 100 is flipped upstream ---------------
f=rangeflip
d=${LAYER[$f]}
rc=0
res=$(curl -q -s --max-time 20 -r 0-999 -o "$TESTDIR/body-$f" -w '%{http_code} %{size_download}' \
  "$rc_URL/v2/$f/test/$f/blobs/$d") || rc=$?
n=$(count_lines "$fake_rangeflip_LOG" "^fault flip /v2/test/$f/blobs/$d ")
ok "$([ "$n" -eq 1 ]; echo $?)" "$f: the upstream spoiled byte 100 of the layer's GET ($n)"
diag "$f: curl -r 0-999: exit $rc, status and bytes: ${res:-?}"
clean=1
case "$rc:$res" in
  "0:206 1000" | "0:200 1000") clean=0 ;;
esac
ok "$([ "$clean" -eq 1 ]; echo $?)" \
  "$f: Range 0-999 never ends as a clean 206 with 1000 wrong bytes (curl exit $rc, ${res:-?})"
check "$f: no file for the digest under blobs/ or tmp/, the index does not know it" not_cached "$f"
check "$f: once the upstream behaves, skopeo pulls the image, it verifies and is cached" \
  recovers "$f"
range_ok() {
  local got want
  want=$(head -c 1000 "$TESTDIR/img-$f/blobs/sha256/${d#sha256:}" | sha256sum)
  got=$(tcurl -r 0-999 -D "$TESTDIR/h" "$rc_URL/v2/$f/test/$f/blobs/$d" | sha256sum)
  tr -d '\r' <"$TESTDIR/h"
  [ "$got" = "$want" ] && grep -q '^HTTP/1.1 206' "$TESTDIR/h" && grep -qi '^X-Cache: HIT' "$TESTDIR/h"
}
check "$f: the same Range now answers 206 with the right 1000 bytes from the cache" range_ok

# --- three readers of one fill whose last half carries a flipped byte --------------
d=${LAYER[gated]}
size=$(stat -c %s "$TESTDIR/img-gated/blobs/sha256/${d#sha256:}")
for i in 1 2 3; do
  spawn "reader$i" curl -q -s --max-time 30 -o "$TESTDIR/reader$i.body" \
    -w '%{http_code} %{size_download}\n' "$rc_URL/v2/gated/test/gated/blobs/$d"
  # one at a time, so the first one starts the fill and the others join it
  started() { [ -s "$TESTDIR/reader$1.body" ]; }
  rc=0; wait_for "reader $i's first bytes" 10 started "$i" || rc=$?
  ok $rc "reader $i receives the first bytes while the upstream holds the rest"
done
n=$(count_lines "$fake_gated_LOG" "^fault flip /v2/test/gated/blobs/$d ")
ok "$([ "$n" -eq 1 ]; echo $?)" "one upstream GET for the three readers, and it is the spoiled one ($n)"
touch "$GATE"
readers_done() { ! pid_alive "$reader1_PID" && ! pid_alive "$reader2_PID" && ! pid_alive "$reader3_PID"; }
wait_for "the three readers to end" 20 readers_done
bad=0
for i in 1 2 3; do
  p=reader${i}_PID
  rc=0; wait "${!p}" || rc=$?
  stop "reader$i"
  b=$(stat -c %s "$TESTDIR/reader$i.body")
  diag "reader $i: curl exit $rc, $(tail -n 1 "$TESTDIR/reader$i.log"), $b of $size bytes"
  if [ "$rc" -eq 0 ] || [ "$b" -ge "$size" ]; then bad=1; fi
done
ok "$bad" "all three readers are cut off short: none completes, none gets the last byte"
n=$(count_lines "$rc_LOG" "\"GET /v2/gated/test/gated/blobs/$d HTTP/1\\.[01]\" 200 $AL_REST up=gated cache=(MISS|COALESCED) why=")
m=$(count_lines "$rc_LOG" "\"GET /v2/gated/test/gated/blobs/$d HTTP/1\\.[01]\" 200 $AL_REST up=gated cache=COALESCED why=")
ok "$([ "$n" -eq 3 ] && [ "$m" -eq 2 ]; echo $?)" "the access log has 1 MISS and 2 COALESCED lines, each cut short ($n, $m)"
check "gated: no file for the digest under blobs/ or tmp/, the index does not know it" not_cached gated
check "gated: the next pull verifies" recovers gated

verify_data() {
  "$REGCACHE" verify -d "$DATA"
}
if "$REGCACHE" verify -h >/dev/null 2>&1; then
  check "regcache verify (beside the daemon) finds nothing wrong in the cache" verify_data
else
  skip "regcache verify finds nothing wrong in the cache" "no verify subcommand"
fi
check "regcache is still running" regcache_alive rc
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

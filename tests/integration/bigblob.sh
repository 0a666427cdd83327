#!/bin/bash
# A 512 MiB blob streams through regcache to a deliberately slow client:
# regcache's peak RSS stays under 40 MB, and the first bytes reach the
# client before the upstream has sent the last.  The blob is fetched once
# into the cache at the upstream's pace while the client is fed from the
# growing file at its own, so memory stays flat either way.
#
# The upstream is a plain docker-registry holding one random 512 MiB blob
# in test/big (uploaded monolithically; no manifest needed).  distribution
# logs "response completed" for a GET only once it has written the whole
# body, so the absence of that line when the client holds its first bytes
# shows the body is streamed, not stored first.  A second client, served
# from the cache, disconnects mid-blob.  tests/tools/slowclient.py is the
# client.
#
# Then a client that goes away after 10 MB: regcache logs the aborted
# request ("client gone"), releases the upstream connection ("request
# abandoned", a debug line: regcache runs with -v) and keeps serving.
# Variables like up_URL and rc_PID are set indirectly (printf -v).
# shellcheck disable=SC2154
set -eu
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
# shellcheck source=../lib/registry.sh
. "$SRCDIR/tests/lib/registry.sh"
# shellcheck source=../lib/regcache.sh
. "$SRCDIR/tests/lib/regcache.sh"

require_cmd docker-registry python3 curl jq sha256sum
require_regcache
plan 14

SIZE=$((512 * 1024 * 1024))
RSS_LIMIT_KB=40960
ABORT_AFTER=$((10 * 1024 * 1024))
REPO=test/big

# --- the blob, the upstream, regcache ------------------------------------------
t=$SECONDS
head -c "$SIZE" /dev/urandom >"$TESTDIR/big.blob"
HEX=$(sha256sum <"$TESTDIR/big.blob" | cut -d' ' -f1)
DIGEST=sha256:$HEX
diag "generated $SIZE random bytes ($DIGEST) in $((SECONDS - t))s"

registry_start_plain up

t=$SECONDS
check "upload a 512 MiB blob to the upstream; HEAD answers with its size and digest" \
  registry_upload_blob up "$REPO" "$TESTDIR/big.blob" "$DIGEST"
diag "upload took $((SECONDS - t))s"

regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$TESTDIR/data\",
  \"upstreams\": [ {\"name\": \"up\", \"url\": \"$up_URL\"} ]
}" -v

# Lines of the upstream's log saying it finished a GET of the blob
# (any outcome), and the one for a complete 200 of every byte.
BLOB_URI="/v2/$REPO/blobs/$DIGEST"
UP_GET_DONE="msg=\"response completed\".* http\\.request\\.method=GET .*http\\.request\\.uri=\"$BLOB_URI\""
UP_GET_FULL="$UP_GET_DONE.* http\\.response\\.status=200 http\\.response\\.written=$SIZE( |\$)"
up_get_done() { count_lines "$up_LOG" "$UP_GET_DONE"; }

# VmRSS samples of regcache, taken while the tests poll.
RSS_MAX=0 RSS_N=0
sample_rss() {
  local v
  v=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$rc_PID/status" 2>/dev/null) || return 0
  [ -n "$v" ] || return 0
  RSS_N=$((RSS_N + 1))
  [ "$v" -le "$RSS_MAX" ] || RSS_MAX=$v
}
# peak_rss: VmHWM, or the highest VmRSS sample if that is higher (the
# kernel updates VmHWM lazily, so it can lag a sample by a few pages).
peak_rss() {
  local h
  h=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$rc_PID/status") || return 1
  [ -n "$h" ] || return 1
  if [ "$h" -ge "$RSS_MAX" ]; then echo "$h"; else echo "$RSS_MAX"; fi
}
sampling() { sample_rss; [ -e "$1" ]; }

# --- the slow client -----------------------------------------------------------
# Slow phase: 16 KiB every 50 ms (~320 KB/s) for at least 8 s, and until
# the test touches big.go; then full speed.
spawn big python3 -u "$TOOLSDIR/slowclient.py" --addr "$rc_ADDR" --path "$BLOB_URI" \
  --slow-seconds 8 --slow-chunk 16384 --slow-pause 0.05 \
  --first-file "$TESTDIR/big.first" --slowdone-file "$TESTDIR/big.slowdone" \
  --go "$TESTDIR/big.go" --timeout 90

rc=0; wait_for "the slow client's first body bytes" 30 sampling "$TESTDIR/big.first" || rc=$?
ok $rc "the slow client receives the first bytes of the blob"
n=$(up_get_done)
if [ "$rc" -eq 0 ] && [ "$n" -eq 0 ]; then rc=0; else rc=1; fi
ok $rc "the upstream has not finished sending the blob when the first bytes reach the client"
[ "$n" -eq 0 ] || diag "upstream completion lines already present: $n"
[ "$rc" -ne 0 ] || diag "first body bytes at $(cut -d' ' -f1 "$TESTDIR/big.first")s"

# The fill does not wait for the slow client: regcache takes the whole blob
# from the upstream (once) into the cache while the client still reads
# slowly, and memory stays flat because the client is fed from the file.
fill_done() { sample_rss; grep -qE -- "$UP_GET_FULL" "$up_LOG"; }
rc=0; wait_for "the upstream to finish sending the blob into the cache" 60 fill_done || rc=$?
still_slow=0; [ -e "$TESTDIR/big.go" ] || still_slow=1
if [ "$rc" -eq 0 ] && [ "$still_slow" -eq 1 ] && pid_alive "$big_PID"; then rc=0; else rc=1; fi
ok $rc "the fill finishes at the upstream's pace while the client still reads slowly"
diag "regcache VmRSS now $(awk '$1 == "VmRSS:" { print $2 " kB" }' "/proc/$rc_PID/status")"
: >"$TESTDIR/big.go"

client_finished() { sample_rss; ! pid_alive "$big_PID"; }
rc=0; wait_for "the slow client to finish" 90 client_finished || rc=$?
stop big
RES=$(tail -n 1 "$big_LOG")
diag "slow client: $RES"
rc=0; jq -e --argjson size "$SIZE" '.status == 200 and .content_length == $size' \
  <<<"$RES" >/dev/null 2>&1 || rc=$?
ok $rc "the client gets 200 with Content-Length $SIZE"
rc=0; jq -e --argjson size "$SIZE" --arg hex "$HEX" '.bytes == $size and .sha256 == $hex' \
  <<<"$RES" >/dev/null 2>&1 || rc=$?
ok $rc "the client receives all $SIZE bytes and they hash to the blob's digest"
if jq -e '.t_end and .t_slow_end' <<<"$RES" >/dev/null 2>&1; then
  diag "$(jq -r --argjson size "$SIZE" '"timings: first byte \(.t_first_byte)s, slow phase to \(.t_slow_end)s (\(.slow_bytes) B), end \(.t_end)s; fast phase \((($size - .slow_bytes) / 1048576 / ((.t_end - .t_slow_end) + 0.001)) | floor) MiB/s"' <<<"$RES")"
fi

rc=0; wait_for "the upstream's completion line for the blob GET" 10 \
  grep -qE -- "$UP_GET_FULL" "$up_LOG" || rc=$?
ok $rc "the upstream logs that it sent the whole blob (200, $SIZE bytes written)"

sample_rss
HWM=$(peak_rss) || HWM=
diag "regcache VmRSS: max ${RSS_MAX} kB over ${RSS_N} samples during the transfer; VmHWM $(
  awk '$1 == "VmHWM:" { print $2 }' "/proc/$rc_PID/status") kB"
if built_with_sanitizers; then
  skip "regcache's peak RSS stays under $RSS_LIMIT_KB kB" "ASan build: its allocator keeps freed memory"
else
  if [ -n "$HWM" ] && [ "$HWM" -lt "$RSS_LIMIT_KB" ]; then rc=0; else rc=1; fi
  ok $rc "regcache's peak RSS (${HWM:-?} kB) stays under $RSS_LIMIT_KB kB"
fi

# --- a client that goes away mid-blob -------------------------------------------
# The blob is cached now: this client is served from the file.
ACCESS_GONE="\"GET $BLOB_URI HTTP/1\\.[01]\" [0-9]+ $AL_REST up=up cache=HIT why=\"client gone\"\$"
gone_before=$(count_lines "$rc_LOG" "$ACCESS_GONE")
rc=0
ABORT=$(python3 "$TOOLSDIR/slowclient.py" --addr "$rc_ADDR" --path "$BLOB_URI" \
  --slow-seconds 60 --slow-chunk 65536 --slow-pause 0 --abort-after "$ABORT_AFTER" \
  --timeout 30) || rc=$?
diag "aborting client: $ABORT"
[ "$rc" -ne 0 ] || jq -e --argjson n "$ABORT_AFTER" '.status == 200 and .aborted and .bytes >= $n' \
  <<<"$ABORT" >/dev/null 2>&1 || rc=1
ok $rc "a second client reads 10 MB of the blob and closes the connection"

gone_logged() { [ "$(count_lines "$rc_LOG" "$ACCESS_GONE")" -gt "$gone_before" ]; }
rc=0; wait_for "regcache's access line for the aborted request" 10 gone_logged || rc=$?
ok $rc "regcache logs the aborted request's access line (a cache hit, client gone)"
[ "$rc" -ne 0 ] || diag "$(grep -E -- "$ACCESS_GONE" "$rc_LOG" | tail -n 1)"
n=$(up_get_done)
ok "$([ "$n" -eq 1 ]; echo $?)" "the upstream sent the blob exactly once ($n)"

small_ok() {
  regcache_alive rc &&
    [ "$(tcurl -o /dev/null -w '%{http_code}' "$rc_URL/v2/")" = 200 ]
}
check "regcache is still running and answers /v2/ with 200" small_ok

sample_rss
HWM=$(peak_rss) || HWM=
diag "regcache peak RSS at the end: ${HWM} kB"
if built_with_sanitizers; then
  skip "regcache's peak RSS over the whole test stays under $RSS_LIMIT_KB kB" "ASan build"
else
  if [ -n "$HWM" ] && [ "$HWM" -lt "$RSS_LIMIT_KB" ]; then rc=0; else rc=1; fi
  ok $rc "regcache's peak RSS over the whole test (${HWM:-?} kB) stays under $RSS_LIMIT_KB kB"
fi
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

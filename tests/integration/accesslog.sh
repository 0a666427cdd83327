#!/bin/bash
# The access log: one line per request, in the combined format to a file
# (log.access.file) or as JSON lines (log.access.format), and SIGUSR1
# reopening the file after it was moved away, as logrotate does.
#
#   - combined, to a file: every request of a scripted sequence has one
#     line, in order, matching the format, with the status, the body bytes
#     curl received, the X-Cache verdict, the referer and user agent; a
#     quote in the user agent is escaped; nothing of it goes to stderr;
#   - no Authorization value reaches any log;
#   - mv + SIGUSR1: new lines go to a new file, the old file keeps its own;
#   - JSON to stderr: every line parses, every key is there with its type;
#   - without a "log" section the lines go to stderr in the combined format;
#   - a file that cannot be opened stops the start, with the reason.
# Variables like up_URL and rc_PID are set indirectly (printf -v).
# shellcheck disable=SC2154
set -eu
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
# shellcheck source=../lib/registry.sh
. "$SRCDIR/tests/lib/registry.sh"
# shellcheck source=../lib/regcache.sh
. "$SRCDIR/tests/lib/regcache.sh"

require_cmd docker-registry skopeo python3 curl jq sha256sum
require_regcache
plan 21

OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
UA='accesslog-test/1.0 (tests)'
REFERER=http://referer.test/page
BEARER=accesslog-bearer-0123456789abcdef
BASIC=$(printf 'someone:%s' accesslog-password-42 | base64 -w0)
record_secret "$BEARER" "$BASIC" accesslog-password-42

DIGEST=$(mkimage "$TESTDIR/img" --seed accesslog --layers 1 --layer-size 100000)
registry_start_plain up
registry_push_dir up "$TESTDIR/img" test/app:v1 >/dev/null
MF_SIZE=$(stat -c %s "$TESTDIR/img/blobs/sha256/${DIGEST#sha256:}")
LAYER=$(jq -r '.layers[0].digest' "$TESTDIR/img/blobs/sha256/${DIGEST#sha256:}")

ACCESS=$TESTDIR/access.log
_kept_logs+=(access access-old)
regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$TESTDIR/data\",
  \"upstreams\": [{\"name\": \"up\", \"url\": \"$up_URL\"}],
  \"log\": {\"level\": \"info\", \"access\": {\"format\": \"combined\", \"file\": \"$ACCESS\"}}
}"
# Lines of the readiness polls come first: count from here.
wait_for "the readiness poll's access line" 10 test -s "$ACCESS"
START=$(wc -l <"$ACCESS")

# req EXPECT METHOD PATH [CURL ARGS...]: one request to rc as the test's
# client; appends "STATUS BYTES" (what curl saw) to $EXPECT.
EXPECT=$TESTDIR/expect
: >"$EXPECT"
req() {
  local method=$1 path=$2 w
  shift 2
  w=$(curl -q -sS --max-time 10 -o /dev/null -w '%{http_code} %{size_download}' \
      -X "$method" -A "$UA" -e "$REFERER" "$@" "$rc_URL$path") || true
  echo "$method $path $w" >>"$EXPECT"
}
req GET /v2/test/app/manifests/v1 -H "Accept: $OCI_MANIFEST"
req GET /v2/test/app/manifests/v1 -H "Accept: $OCI_MANIFEST"
req HEAD "/v2/test/app/blobs/$LAYER" -I
req GET "/v2/test/app/blobs/$LAYER"
req GET /v2/test/app/manifests/nosuch -H "Accept: $OCI_MANIFEST"
req GET /v2/ -H "Authorization: Bearer $BEARER"
req GET /v2/test/app/manifests/v1 -H "Authorization: Basic $BASIC" -H "Accept: $OCI_MANIFEST"
req DELETE /v2/test/app/manifests/v1
req GET /v2/test/app/tags/list -A 'say "hi"'
NREQ=$(wc -l <"$EXPECT")

new_lines() { tail -n +"$((START + 1))" "$ACCESS"; }
all_logged() { [ "$(new_lines | wc -l)" -ge "$NREQ" ]; }
wait_for "$NREQ access lines" 10 all_logged
new_lines >"$TESTDIR/lines"
diag "$(cat "$TESTDIR/lines")"

COMBINED='^127\.0\.0\.1 - - \[[0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2} \+0000\] "[A-Z]+ /[^ "]* HTTP/1\.1" [0-9]{3} [0-9]+ "[^"]*" "[^"]*" rt=[0-9]+\.[0-9]{3} ttfb=([0-9]+\.[0-9]{3}|-) up=[^ ]+ cache=[A-Z-]+( why="[^"]*")?$'
ok "$([ "$(wc -l <"$TESTDIR/lines")" -eq "$NREQ" ]; echo $?)" "one line per request ($NREQ)"
all_combined() { ! grep -vE "$COMBINED" "$TESTDIR/lines"; }
check "every line is in the combined format" all_combined

# The lines in order against what each request was and what curl saw.
line_matches() {
  local i=0 method path status bytes line errs=0
  while read -r method path status bytes; do
    i=$((i + 1))
    line=$(sed -n "${i}p" "$TESTDIR/lines")
    [[ $line == *"\"$method $path HTTP/1.1\" $status $bytes "* ]] ||
      { echo "line $i: want \"$method $path\" $status $bytes: $line"; errs=1; }
  done <"$EXPECT"
  [ "$errs" -eq 0 ]
}
check "each line has its request, the status and the body bytes the client got" line_matches
l() { sed -n "$1p" "$TESTDIR/lines"; }
check "the first manifest GET: 200, MISS, upstream up" grep -qE ' 200 '"$MF_SIZE"' .* up=up cache=MISS$' <<<"$(l 1)"
check "the second: HIT" grep -qE ' 200 '"$MF_SIZE"' .* up=up cache=HIT$' <<<"$(l 2)"
check "the referer and the user agent, quoted" grep -qF "\"$REFERER\" \"$UA\" rt=" <<<"$(l 1)"
check "HEAD of an uncached blob: 0 bytes, MISS" grep -qE '"HEAD [^"]*" 200 0 .* cache=MISS$' <<<"$(l 3)"
check "the missing tag: 404 with its error body's bytes" grep -qE '" 404 [1-9][0-9]* ' <<<"$(l 5)"
check "DELETE: 405, answered before routing (up=-)" grep -qE '" 405 [1-9][0-9]* .* up=- cache=-$' <<<"$(l 8)"
check "a quote in the user agent is escaped, the line stays parseable" \
  grep -qF '"say %22hi%22" rt=' <<<"$(l 9)"
n=$(count_lines "$rc_LOG" "$AL_LINE")
ok "$([ "$n" -eq 0 ]; echo $?)" "with a file, no access line on stderr ($n)"
no_secret() {
  ! grep -rqF -e "$BEARER" -e "$BASIC" -e accesslog-password-42 "$ACCESS" "$rc_LOG"
}
check "no Authorization value in the access log or the daemon's log" no_secret

# --- rotation ---------------------------------------------------------------------
mv "$ACCESS" "$TESTDIR/access-old.log"
OLD_COUNT=$(wc -l <"$TESTDIR/access-old.log")
kill -USR1 "$rc_PID"
wait_for "a new access log after SIGUSR1" 10 test -f "$ACCESS"
req GET /v2/test/app/manifests/v1 -H "Accept: $OCI_MANIFEST"
rotated() {
  [ "$(wc -l <"$ACCESS")" -eq 1 ] &&
    grep -qE '"GET /v2/test/app/manifests/v1 HTTP/1\.1" 200 .* cache=HIT$' "$ACCESS" &&
    [ "$(wc -l <"$TESTDIR/access-old.log")" -eq "$OLD_COUNT" ]
}
rc=0; wait_for "the request after SIGUSR1 in the new file" 10 rotated || rc=$?
ok "$rc" "after mv and SIGUSR1 the next line is in a new file, the old file keeps its $OLD_COUNT lines"
check "the reopening is in the daemon's log" grep -qE "info: access log .*access\.log reopened" "$rc_LOG"
mode=$(stat -c %a "$ACCESS" 2>/dev/null || echo none)
ok "$([ "$mode" = 640 ] || [ "$mode" = 600 ]; echo $?)" "the new file is not readable by others ($mode)"

# --- JSON to stderr -----------------------------------------------------------------
regcache_start rcj "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$TESTDIR/data-j\",
  \"upstreams\": [{\"name\": \"up\", \"url\": \"$up_URL\"}],
  \"log\": {\"access\": {\"format\": \"json\"}}
}"
jmark=$(grep -c '^{' "$rcj_LOG" || true)
curl -q -sS --max-time 10 -o /dev/null -A "$UA" -H "Accept: $OCI_MANIFEST" \
  "$rcj_URL/v2/test/app/manifests/v1" || true
json_ok() {
  local lines
  lines=$(grep '^{' "$rcj_LOG" | tail -n +"$((jmark + 1))")
  [ -n "$lines" ] || return 1
  # Every line of the daemon's stderr is either JSON or a general log line.
  ! grep -vE '^\{|^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z (info|warn|debug):' "$rcj_LOG" || return 1
  grep '^{' "$rcj_LOG" | jq -e -s 'all(.[];
      (.time | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$")) and (.peer == "127.0.0.1") and
      has("user") and (.method | type == "string") and (.uri | startswith("/")) and
      (.protocol | startswith("HTTP/1.")) and (.status | type == "number") and
      (.bytes | type == "number") and (.duration_ms | type == "number") and
      has("ttfb_ms") and has("upstream") and has("cache") and has("referer") and
      has("user_agent") and has("why"))' >/dev/null &&
    jq -e --arg ua "$UA" --argjson size "$MF_SIZE" 'select(.uri == "/v2/test/app/manifests/v1") |
      .method == "GET" and .status == 200 and .bytes == $size and .cache == "MISS" and
      .upstream == "up" and .user_agent == $ua and .user == null and (.ttfb_ms | type == "number")' \
      <<<"$lines" | grep -qx true
}
rc=0; wait_for "a JSON access line" 10 json_ok || rc=$?
ok "$rc" "JSON format: every line parses with every key; the manifest GET has its values"
[ "$rc" -eq 0 ] || diag "$(grep '^{' "$rcj_LOG" | tail -n 3)"

# --- the default: combined on stderr ---------------------------------------------
regcache_start rcd "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$TESTDIR/data-d\",
  \"upstreams\": [{\"name\": \"up\", \"url\": \"$up_URL\"}]
}"
curl -q -sS --max-time 10 -o /dev/null -H "Accept: $OCI_MANIFEST" "$rcd_URL/v2/test/app/manifests/v1" || true
default_ok() {
  grep -E "$AL_LINE" "$rcd_LOG" | grep -qE '"GET /v2/test/app/manifests/v1 HTTP/1\.1" 200 '"$AL_REST"' up=up cache=MISS$'
}
rc=0; wait_for "a combined line on stderr" 10 default_ok || rc=$?
ok "$rc" "without a log section the line goes to stderr, combined"

# --- a file that cannot be opened --------------------------------------------------
printf '%s\n' "{\"listen\": [\"127.0.0.1:$(free_port)\"], \"data_dir\": \"$TESTDIR/data-x\",
  \"log\": {\"access\": {\"file\": \"$TESTDIR/no/such/dir/access.log\"}}}" >"$TESTDIR/bad.json"
rc=0
timeout 20 "$REGCACHE" serve -c "$TESTDIR/bad.json" >"$TESTDIR/bad.out" 2>&1 || rc=$?
ok "$([ "$rc" -eq 1 ] && grep -q 'access log .*no/such/dir/access.log: No such file' "$TESTDIR/bad.out"; echo $?)" \
  "an access log that cannot be opened: exit 1 at start, with the reason (exit $rc)"

for n in rc rcj rcd; do
  check "$n exits 0 on SIGTERM, with no sanitizer report" regcache_stop "$n"
done

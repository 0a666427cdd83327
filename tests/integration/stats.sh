#!/bin/bash
# The admin listener: /stats, /metrics, /healthz, /readyz, and
# `regcache stats`, after a scripted sequence whose counts are known:
#
#   - a cold pull (skopeo): misses and bytes from the upstream;
#   - the same pull again: hits and bytes from the cache;
#   - three curls of one big blob whose upstream holds the second half
#     back (fakeupstream.py proxy-faulty --fault stall --gate): one fill in
#     flight, one miss, two coalesced readers;
#   - an upstream that answers 429 with rate-limit headers, one that is
#     not there (connect errors);
#   - a tag past its TTL: revalidated; past it again with the upstream
#     stopped: served stale;
#
# then the exact counts in /stats (jq), the same values in /metrics,
# `promtool check metrics`, /readyz turning 503 while the data directory
# cannot take a file, and the admin port being no client port.
# Variables like reg_URL and rc_ADMIN_URL are set indirectly (printf -v).
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
plan 78

ACCEPT_ALL='application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.docker.distribution.manifest.v2+json'

# --- upstreams -------------------------------------------------------------------
SMALL=$(mkimage "$TESTDIR/img-small" --seed st-small --layers 2 --layer-size 100000)
mkimage "$TESTDIR/img-big" --seed st-big --layers 1 --layer-size 4000000 >/dev/null
registry_start_plain reg
registry_push_dir reg "$TESTDIR/img-small" test/small:latest >/dev/null
registry_push_dir reg "$TESTDIR/img-big" test/big:latest >/dev/null
BIG=$(jq -r '.layers[0].digest' "$TESTDIR/img-big/blobs/sha256/$(jq -r \
  '.manifests[0].digest' "$TESTDIR/img-big/index.json" | cut -d: -f2)")
BIG_FILE=$TESTDIR/img-big/blobs/sha256/${BIG#sha256:}
BIG_SIZE=$(stat -c %s "$BIG_FILE")

# "up": the registry behind a proxy that holds the first big blob GET
# after half its bytes until $GATE exists.
GATE=$TESTDIR/gate
port=$(free_port)
spawn px python3 "$TOOLSDIR/fakeupstream.py" proxy-faulty "$port" --target "$reg_URL" \
  --fault stall --count 1 --min-size 3000000 --gate "$GATE"
PX_URL=http://127.0.0.1:$port
wait_for "the stalling proxy" 10 grep -q listening "$px_LOG"
# "limited": always 429, RateLimit-Limit 100;w=21600, RateLimit-Remaining 0.
port=$(free_port)
spawn lim python3 "$TOOLSDIR/fakeupstream.py" 429 "$port"
LIM_URL=http://127.0.0.1:$port
wait_http "$LIM_URL/v2/"
# "dead": nothing listens there.
DEAD_PORT=$(free_port)

DATA=$TESTDIR/data
regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$DATA\",
  \"cache\": {\"max_bytes\": \"1GiB\"},
  \"upstreams\": [
    {\"name\": \"up\", \"url\": \"$PX_URL\"},
    {\"name\": \"short\", \"url\": \"$reg_URL\", \"prefix\": \"short\", \"tag_ttl\": 1},
    {\"name\": \"limited\", \"url\": \"$LIM_URL\", \"prefix\": \"limited\"},
    {\"name\": \"dead\", \"url\": \"http://127.0.0.1:$DEAD_PORT\", \"prefix\": \"dead\"}
  ]
}"
ADMIN=$rc_ADMIN_URL
diag "client port $rc_PORT, admin $ADMIN"

# --- helpers ---------------------------------------------------------------------
STATS=$TESTDIR/stats.json
METRICS=$TESTDIR/metrics.txt
# snap: /stats and /metrics, one after the other (nothing else runs).
snap() {
  tcurl -o "$STATS" "$ADMIN/stats" && tcurl -o "$METRICS" "$ADMIN/metrics"
}
js() { jq -r "$1" "$STATS"; }
# metric SERIES: the value of one sample, e.g. 'regcache_cache_hits_total'
# or 'regcache_bytes_served_total{source="cache"}'.
metric() { awk -v s="$1" '$1 == s { print $2; f = 1 } END { if (!f) print "absent" }' "$METRICS"; }
# same NAME JQ WANT [SERIES]: /stats says WANT at JQ (and /metrics at SERIES).
same() {
  local name=$1 q=$2 want=$3 series=${4:-} got m=
  got=$(js "$q")
  [ -z "$series" ] || m=$(metric "$series")
  if [ "$got" = "$want" ] && { [ -z "$series" ] || [ "$m" = "$want" ]; }; then
    pass "$name"
  else
    fail "$name"
    diag "want $want; /stats $q: $got${series:+; /metrics $series: $m}"
  fi
}
# wait_stat JQ WANT: poll /stats until JQ is WANT (fills publish in the
# background, after their clients have every byte).
stat_is() { [ "$(tcurl "$ADMIN/stats" | jq -r "$1")" = "$2" ]; }
wait_stat() { wait_for "/stats $1 = $2" 20 stat_is "$1" "$2"; }
# pull OUT: skopeo copy of test/small through regcache, verified.
pull_small() {
  rm -rf "$1"
  skopeo_run copy --quiet --src-tls-verify=false "docker://$rc_ADDR/test/small:latest" "dir:$1" &&
    verify_dir_digests "$1" "$SMALL"
}
# The bytes skopeo got: manifest.json and every blob.
dir_bytes() { find "$1" -type f ! -name version -printf '%s\n' | awk '{ s += $1 } END { print s }'; }
hdr() { tr -d '\r' <"$1" | awk -F': ' -v n="$2" 'tolower($1) == tolower(n) { v = $2 } END { print v }'; }
status_of() { tr -d '\r' <"$1" | awk 'NR == 1 { print $2 }'; }

# --- 0. a fresh instance -----------------------------------------------------------
code=$(tcurl -o "$TESTDIR/h.json" -w '%{http_code}' "$ADMIN/healthz")
ok "$([ "$code" = 200 ] && [ "$(jq -r .status "$TESTDIR/h.json")" = ok ]; echo $?)" \
  "/healthz: 200 {\"status\":\"ok\"} ($code)"
code=$(tcurl -o "$TESTDIR/r.json" -w '%{http_code}' "$ADMIN/readyz")
ok "$([ "$code" = 200 ] && [ "$(jq -r '.checks | [.index, .data_dir, .listeners] | join(",")' "$TESTDIR/r.json")" = ok,ok,ok ]; echo $?)" \
  "/readyz: 200 with index, data directory and listeners ok ($code)"
snap
same "fresh: no hits yet" .cache.hits 0 regcache_cache_hits_total
same "fresh: every upstream is listed, in order" '.upstreams | keys_unsorted | join(",")' up,short,limited,dead
same "fresh: the budget is cache.max_bytes" .cache.budget_bytes 1073741824 regcache_cache_budget_bytes
same "fresh: the version" .version "$("$REGCACHE" version | awk '{ print $2 }')"
ok "$(grep -q "^regcache_build_info{version=\"$(js .version)\"} 1$" "$METRICS"; echo $?)" \
  "/metrics: regcache_build_info carries the version"
ct=$(tcurl -o /dev/null -w '%{content_type}' "$ADMIN/metrics")
ok "$([ "$ct" = 'text/plain; version=0.0.4; charset=utf-8' ]; echo $?)" "/metrics Content-Type: $ct"

# The admin port is not the client port, and the other way round.
code=$(tcurl -o "$TESTDIR/a404.json" -w '%{http_code}' "$ADMIN/v2/")
ok "$([ "$code" = 404 ] && [ "$(jq -r .error "$TESTDIR/a404.json")" = "not found" ]; echo $?)" \
  "the admin port has no /v2/: 404 with a JSON error ($code)"
code=$(tcurl -o "$TESTDIR/c404.json" -w '%{http_code}' "$rc_URL/metrics")
ok "$([ "$code" = 404 ] && jq -e '.errors[0].code' "$TESTDIR/c404.json" >/dev/null; echo $?)" \
  "the client port has no /metrics: a registry 404 ($code)"
code=$(tcurl -o "$TESTDIR/a405.json" -D "$TESTDIR/a405.h" -w '%{http_code}' -X POST "$ADMIN/stats")
ok "$([ "$code" = 405 ] && [ "$(hdr "$TESTDIR/a405.h" Allow)" = "GET, HEAD" ] &&
  jq -e .error "$TESTDIR/a405.json" >/dev/null; echo $?)" "POST /stats: 405 JSON, Allow: GET, HEAD ($code)"
code=$(tcurl -o /dev/null -w '%{http_code} %{size_download}' -I "$ADMIN/stats")
ok "$([ "$code" = "200 0" ]; echo $?)" "HEAD /stats: 200 without a body ($code)"

# --- 1. a cold pull -----------------------------------------------------------------
check "cold pull of test/small through regcache verifies" pull_small "$TESTDIR/cold"
NBLOBS=$(jq -r '.config.digest, .layers[].digest' "$TESTDIR/cold/manifest.json" | sort -u | wc -l)
SMALL_BYTES=$(dir_bytes "$TESTDIR/cold")
wait_stat .fills.in_flight 0
snap
same "cold: one miss for the tag and one per blob" .cache.misses "$((NBLOBS + 1))" regcache_cache_misses_total
same "cold: no hit" .cache.hits 0 regcache_cache_hits_total
same "cold: what skopeo got came from the upstream" .bytes_served.upstream "$SMALL_BYTES" \
  'regcache_bytes_served_total{source="upstream"}'
same "cold: nothing from the cache" .bytes_served.cache 0 'regcache_bytes_served_total{source="cache"}'
same "cold: a fill per blob, all done" '"\(.fills.started) \(.fills.done) \(.fills.failed)"' "$NBLOBS $NBLOBS 0"
same "cold: $NBLOBS blob requests answered 200" '.requests.by_route.blob.status["200"]' "$NBLOBS" \
  'regcache_requests_total{route="blob",status="200"}'
same "cold: one manifest request answered 200" '.requests.by_route.manifest.status["200"]' 1 \
  'regcache_requests_total{route="manifest",status="200"}'
same "cold: the upstream answered $((NBLOBS + 1)) GETs with 200" '.upstreams.up.status["200"]' \
  "$((NBLOBS + 1))" 'regcache_upstream_requests_total{upstream="up",status="200"}'
same "cold: the cache holds the manifest and the blobs" .cache.entries "$((NBLOBS + 1))" regcache_cache_entries
same "cold: ... and their bytes" .cache.bytes "$SMALL_BYTES" regcache_cache_bytes

# --- 2. the same pull, warm --------------------------------------------------------
check "warm pull of test/small verifies" pull_small "$TESTDIR/warm"
snap
same "warm: a hit for the tag and one per blob" .cache.hits "$((NBLOBS + 1))" regcache_cache_hits_total
same "warm: no new miss" .cache.misses "$((NBLOBS + 1))" regcache_cache_misses_total
same "warm: the same bytes, from the cache" .bytes_served.cache "$SMALL_BYTES" \
  'regcache_bytes_served_total{source="cache"}'
same "warm: the upstream was not asked" '.upstreams.up.status["200"]' "$((NBLOBS + 1))" \
  'regcache_upstream_requests_total{upstream="up",status="200"}'

# --- 3. three readers of one fill ----------------------------------------------------
BLOB_URL=$rc_URL/v2/test/big/blobs/$BIG
spawn c1 curl -q -sS --max-time 60 -o "$TESTDIR/c1.body" -D "$TESTDIR/c1.h" "$BLOB_URL"
wait_for "the big blob's fill to stall half way" 20 grep -q "^fault stall /v2/test/big/blobs/$BIG" "$px_LOG"
wait_stat .fills.in_flight 1
snap
same "one fill in flight while the upstream holds the rest" .fills.in_flight 1 regcache_fills_in_flight
spawn c2 curl -q -sS --max-time 60 -o "$TESTDIR/c2.body" -D "$TESTDIR/c2.h" "$BLOB_URL"
spawn c3 curl -q -sS --max-time 60 -o "$TESTDIR/c3.body" -D "$TESTDIR/c3.h" "$BLOB_URL"
wait_stat .fills.readers_joined 2
touch "$GATE"
readers_done() { ! pid_alive "$c1_PID" && ! pid_alive "$c2_PID" && ! pid_alive "$c3_PID"; }
wait_for "the three readers to end" 30 readers_done
good=0
for i in 1 2 3; do
  p=c${i}_PID; rc=0; wait "${!p}" || rc=$?; stop "c$i"
  [ "$rc" -eq 0 ] && [ "sha256:$(sha256sum <"$TESTDIR/c$i.body" | cut -c1-64)" = "$BIG" ] || good=1
done
ok $good "the three readers got the whole big blob, verified"
verdicts=$(for i in 1 2 3; do hdr "$TESTDIR/c$i.h" X-Cache; done | sort | tr '\n' ' ')
ok "$([ "$verdicts" = "COALESCED COALESCED MISS " ]; echo $?)" "X-Cache: one MISS, two COALESCED ($verdicts)"
wait_stat .fills.in_flight 0
snap
same "after: no fill in flight" .fills.in_flight 0 regcache_fills_in_flight
same "one more miss, for the first reader" .cache.misses "$((NBLOBS + 2))" regcache_cache_misses_total
same "two coalesced readers" .cache.coalesced 2 regcache_cache_coalesced_total
same "two readers joined the fill" .fills.readers_joined 2 regcache_fill_readers_joined_total
same "the first reader's bytes came from the upstream" .bytes_served.upstream "$((SMALL_BYTES + BIG_SIZE))" \
  'regcache_bytes_served_total{source="upstream"}'
same "the joiners' bytes cost the upstream nothing" .bytes_served.cache "$((SMALL_BYTES + 2 * BIG_SIZE))" \
  'regcache_bytes_served_total{source="cache"}'
same "one upstream GET for the three" '.upstreams.up.status["200"]' "$((NBLOBS + 2))" \
  'regcache_upstream_requests_total{upstream="up",status="200"}'
same "the fill wrote the blob once" .fills.bytes "$((SMALL_BYTES - $(stat -c %s "$TESTDIR/cold/manifest.json") + BIG_SIZE))" \
  regcache_fill_bytes_total

# --- 4. a rate-limited upstream, and one that is not there ---------------------------
code=$(tcurl -o /dev/null -w '%{http_code}' -H "Accept: $ACCEPT_ALL" "$rc_URL/v2/limited/test/x/manifests/latest")
ok "$([ "$code" = 429 ]; echo $?)" "limited: the upstream's 429 reaches the client ($code)"
code=$(tcurl -o /dev/null -w '%{http_code}' -H "Accept: $ACCEPT_ALL" "$rc_URL/v2/dead/test/x/manifests/latest")
ok "$([ "$code" = 502 ]; echo $?)" "dead: 502 ($code)"
snap
same "limited: one 429 counted" '.upstreams.limited["429"]' 1 'regcache_upstream_429_total{upstream="limited"}'
same "limited: and as a status" '.upstreams.limited.status["429"]' 1 \
  'regcache_upstream_requests_total{upstream="limited",status="429"}'
same "limited: RateLimit-Limit 100;w=21600 read as 100" .upstreams.limited.ratelimit.limit 100 \
  'regcache_upstream_ratelimit_limit{upstream="limited"}'
same "limited: RateLimit-Remaining 0" .upstreams.limited.ratelimit.remaining 0 \
  'regcache_upstream_ratelimit_remaining{upstream="limited"}'
same "no rate limit shown for an upstream that sent none" .upstreams.up.ratelimit null
ok "$([ "$(metric 'regcache_upstream_ratelimit_remaining{upstream="up"}')" = absent ]; echo $?)" \
  "... and no such series in /metrics"
same "dead: one connect error" .upstreams.dead.errors.connect 1 \
  'regcache_upstream_errors_total{upstream="dead",cause="connect"}'
same "dead: no other error" .upstreams.dead.errors_total 1
same "manifest requests by status: 429 and 502" \
  '"\(.requests.by_route.manifest.status["429"]) \(.requests.by_route.manifest.status["502"])"' "1 1"
ok "$([ "$(metric 'regcache_requests_total{route="manifest",status="502"}')" = 1 ]; echo $?)" \
  "/metrics: the 502 of the manifest route"
same "two more misses" .cache.misses "$((NBLOBS + 4))" regcache_cache_misses_total

# --- 5. a tag revalidated, then served stale ----------------------------------------
# short: the same registry, straight, with a tag_ttl of 1 s.
T=$TESTDIR/t
tag_get() {
  tcurl -o "$T.body" -D "$T.h" -H "Accept: $ACCEPT_ALL" "$rc_URL/v2/short/test/small/manifests/latest" || true
}
tag_get
t0=$(date +%s%N)
ok "$([ "$(status_of "$T.h")" = 200 ] && [ "$(hdr "$T.h" X-Cache)" = MISS ]; echo $?)" \
  "short: the tag, cold: 200 MISS ($(status_of "$T.h") $(hdr "$T.h" X-Cache))"
MSIZE=$(stat -c %s "$T.body")
ttl_passed() { [ $((($(date +%s%N) - t0) / 1000000)) -ge 1100 ]; }
wait_for "the tag's TTL" 5 ttl_passed
tag_get
t0=$(date +%s%N)
ok "$([ "$(status_of "$T.h")" = 200 ] && [ "$(hdr "$T.h" X-Cache)" = REVALIDATED ]; echo $?)" \
  "short: past its TTL: 200 REVALIDATED ($(status_of "$T.h") $(hdr "$T.h" X-Cache))"
snap
same "one revalidation" .cache.revalidations 1 regcache_cache_revalidations_total
same "short: a GET and a HEAD, both 200" '.upstreams.short.status["200"]' 2 \
  'regcache_upstream_requests_total{upstream="short",status="200"}'
stop reg
wait_for "the tag's TTL" 5 ttl_passed
tag_get
ok "$([ "$(status_of "$T.h")" = 200 ] && [ "$(hdr "$T.h" X-Cache)" = STALE ] &&
  [ -n "$(hdr "$T.h" Warning)" ]; echo $?)" \
  "short, upstream stopped, past the TTL: 200 STALE with a Warning ($(status_of "$T.h") $(hdr "$T.h" X-Cache))"
snap
same "one stale serve" .cache.stale_served 1 regcache_cache_stale_served_total
same "short: its connect error" .upstreams.short.errors.connect 1 \
  'regcache_upstream_errors_total{upstream="short",cause="connect"}'
same "bytes: the cold tag from the upstream" .bytes_served.upstream "$((SMALL_BYTES + BIG_SIZE + MSIZE))" \
  'regcache_bytes_served_total{source="upstream"}'
same "bytes: the revalidated and the stale one from the cache" .bytes_served.cache \
  "$((SMALL_BYTES + 2 * BIG_SIZE + 2 * MSIZE))" 'regcache_bytes_served_total{source="cache"}'
same "hits did not move" .cache.hits "$((NBLOBS + 1))" regcache_cache_hits_total

# --- 6. the whole of /metrics ----------------------------------------------------------
if command -v promtool >/dev/null 2>&1; then
  check "promtool check metrics accepts /metrics" sh -c "promtool check metrics <'$METRICS'"
else
  skip "promtool check metrics" "promtool not installed (Debian package prometheus)"
fi
sum=$(awk '/^regcache_requests_total\{/ { s += $2 } END { print s }' "$METRICS")
same "the requests of /metrics add up to the total of /stats" .requests.total "$sum"
hist_ok() {
  local r c inf n
  for r in root manifest blob tags referrers token relay other; do
    c=$(metric "regcache_request_duration_seconds_count{route=\"$r\"}")
    inf=$(metric "regcache_request_duration_seconds_bucket{route=\"$r\",le=\"+Inf\"}")
    n=$(jq -r ".requests.by_route.$r.total" "$STATS")
    [ "$c" = "$n" ] && [ "$inf" = "$n" ] || { echo "$r: count $c, +Inf $inf, /stats $n"; return 1; }
    c=$(metric "regcache_time_to_first_byte_seconds_count{route=\"$r\"}")
    [ "$c" = "$n" ] || { echo "$r: ttfb count $c, /stats $n"; return 1; }
  done
  # cumulative: each bucket at least the one before
  awk -F'[{} ]' '/^regcache_request_duration_seconds_bucket/ {
      split($2, a, ","); r = a[1]
      if (r == pr && $4 + 0 < pv + 0) { print "not cumulative: " $0; bad = 1 }
      pr = r; pv = $4 }
    END { exit bad }' "$METRICS"
}
check "each route's histograms count its requests, +Inf equals _count, buckets cumulative" hist_ok
same "connections: every one counted" .connections.total "$(metric regcache_connections_total)"
same "uptime: a positive number" '.uptime_seconds > 0' true

# --- 7. regcache stats -------------------------------------------------------------------
out=$TESTDIR/summary.txt
rc=0; "$REGCACHE" stats "$ADMIN" >"$out" 2>&1 || rc=$?
diag "$(cat "$out")"
hits=$(js .cache.hits); misses=$(js .cache.misses)
ratio=$(awk -v h="$hits" -v m="$misses" 'BEGIN { printf "%.1f%%", 100 * h / (h + m) }')
ok "$([ "$rc" -eq 0 ] && grep -q "hit ratio $ratio ($hits hits, $misses misses)" "$out"; echo $?)" \
  "regcache stats: exit 0, hit ratio $ratio"
ok "$(grep -Eq '^limited +1 +0 +1 +0 of 100 ' "$out" && grep -Eq '^dead +1 +1 +0 +- ' "$out" &&
  grep -q 'errors of dead: connect 1' "$out"; echo $?)" \
  "regcache stats: per upstream requests, errors, 429s and the rate limit left"
ok "$(grep -q 'from the cache (saved)' "$out" && grep -q '^fills *0 in flight, 2 readers joined' "$out"; echo $?)" \
  "regcache stats: bytes saved and fills"
rc=0; got=$("$REGCACHE" stats --json "${ADMIN#http://}/" | jq -r .cache.misses) || rc=$?
ok "$([ "$rc" -eq 0 ] && [ "$got" = "$misses" ]; echo $?)" "regcache stats --json HOST:PORT/: the document ($got)"
rc=0; "$REGCACHE" stats "http://127.0.0.1:$DEAD_PORT" >"$out" 2>&1 || rc=$?
ok "$([ "$rc" -eq 1 ] && grep -q 'connect to 127.0.0.1' "$out"; echo $?)" \
  "regcache stats on a port nobody answers: exit 1 with the reason ($rc)"
rc=0; "$REGCACHE" stats -h >"$out" 2>&1 || rc=$?
ok "$([ "$rc" -eq 0 ] && grep -q '^usage: regcache stats' "$out"; echo $?)" "regcache stats -h"

# --- 8. /readyz when the data directory cannot take a file ------------------------------
# The tests run as root, whom permissions do not stop: put a file where
# tmp/ was instead.
mv "$DATA/tmp" "$DATA/tmp.away"
: >"$DATA/tmp"
code=$(tcurl -o "$TESTDIR/r.json" -w '%{http_code}' "$ADMIN/readyz")
ok "$([ "$code" = 503 ] && [ "$(jq -r .status "$TESTDIR/r.json")" = "not ready" ] &&
  jq -r .checks.data_dir "$TESTDIR/r.json" | grep -q 'Not a directory' &&
  [ "$(jq -r .checks.index "$TESTDIR/r.json")" = ok ]; echo $?)" \
  "/readyz: 503 naming the data directory while tmp/ is a file ($code: $(jq -c .checks "$TESTDIR/r.json"))"
code=$(tcurl -o /dev/null -w '%{http_code}' "$ADMIN/healthz")
ok "$([ "$code" = 200 ]; echo $?)" "/healthz stays 200 meanwhile ($code)"
rm "$DATA/tmp"
mv "$DATA/tmp.away" "$DATA/tmp"
code=$(tcurl -o /dev/null -w '%{http_code}' "$ADMIN/readyz")
ok "$([ "$code" = 200 ]; echo $?)" "/readyz: 200 again once tmp/ is back ($code)"
ok "$([ -z "$(ls -A "$DATA/tmp")" ]; echo $?)" "the readiness probe leaves nothing in tmp/"

check "regcache exits 0 on SIGTERM" regcache_stop rc

#!/bin/bash
# cache.max_bytes below the size of what is pulled: pulling a ~20 MB corpus
# through a cache with an 8 MiB budget keeps the data directory's blobs
# within the budget plus one blob after every pull, every pull verifies,
# the log shows evictions, and an evicted image pulls again (fetched anew
# from the upstream).  Then four pulls at once, with their fills in flight
# together, stay within the same bound.  `regcache verify` finds the index
# and the files consistent afterwards.
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

require_cmd docker-registry skopeo python3 curl jq sha256sum du
require_regcache
N=8
NCONC=4
plan $((2 * N + 2 * NCONC + 9))

BUDGET=$((8 * 1024 * 1024))
registry_start_plain up
declare -A DIGEST
for i in $(seq "$N"); do
  DIGEST[$i]=$(mkimage "$TESTDIR/img$i" --seed "budget-$i" --layers 2 --layer-size 1200000)
  registry_push_dir up "$TESTDIR/img$i" "test/img$i:latest" >/dev/null
done
CORPUS=$(cat "$TESTDIR"/img*/blobs/sha256/* | wc -c)
LARGEST=$(stat -c %s "$TESTDIR"/img*/blobs/sha256/* | sort -n | tail -n 1)
LIMIT=$((BUDGET + LARGEST))
diag "corpus: $CORPUS bytes in $N images; budget $BUDGET; largest blob $LARGEST; bound $LIMIT"

DATA=$TESTDIR/data
regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$DATA\",
  \"cache\": {\"max_bytes\": \"8MiB\"},
  \"upstreams\": [ {\"name\": \"up\", \"url\": \"$up_URL\"} ]
}"

pull_one() {
  rm -rf "$TESTDIR/out$1"
  skopeo_run copy --quiet --src-tls-verify=false "docker://$rc_ADDR/test/img$1:latest" \
    "dir:$TESTDIR/out$1" && verify_dir_digests "$TESTDIR/out$1" "${DIGEST[$1]}"
}
usage() { du -sb "$DATA/blobs" | cut -f1; }
files() { find "$DATA/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
within() {
  local u f
  u=$(usage)
  f=$(files)
  echo "du -sb blobs/: $u; file bytes: $f; bound $LIMIT"
  [ "$u" -le "$LIMIT" ]
}

for i in $(seq "$N"); do
  check "pull $i of $N (test/img$i) verifies" pull_one "$i"
  check "after pull $i: du -sb blobs/ ($(usage)) <= budget + largest blob ($LIMIT)" within
done
ok "$([ "$(usage)" -lt "$CORPUS" ]; echo $?)" \
  "the cache holds less than the corpus ($(usage) < $CORPUS bytes)"
n=$(count_lines "$rc_LOG" 'evicted [0-9]+ blobs?; the cache now holds')
ok "$([ "$n" -ge 1 ]; echo $?)" "the log shows evictions ($n lines)"
diag "$(grep -E 'evicted [0-9]+ blob' "$rc_LOG" | tail -n 3)"

# Image 1 was the least recently served: it is gone, and comes back.
L1=$(jq -r '.layers[0].digest' "$TESTDIR/out1/manifest.json")
before=$(count_lines "$up_LOG" "msg=\"response completed\".* http\\.request\\.method=GET .*http\\.request\\.uri=\"/v2/test/img1/blobs/$L1\"")
check "the first image, evicted since, pulls again and verifies" pull_one 1
refetched() {
  [ "$(count_lines "$up_LOG" "msg=\"response completed\".* http\\.request\\.method=GET .*http\\.request\\.uri=\"/v2/test/img1/blobs/$L1\"")" -gt "$before" ]
}
rc=0; wait_for "the upstream to log the new GET of $L1" 10 refetched || rc=$?
ok $rc "its first layer was fetched from the upstream again"
check "after that pull: du -sb blobs/ <= budget + largest blob" within

# Four at once: their fills are in flight together.
for i in $(seq "$NCONC"); do
  spawn "pull$i" pull_one "$((i + 2))"
done
over() {
  local i p
  for i in $(seq "$NCONC"); do p=pull${i}_PID; ! pid_alive "${!p}" || return 1; done
}
maxu=0
sample() { local u; u=$(usage); [ "$u" -le "$maxu" ] || maxu=$u; over; }
wait_for "the concurrent pulls to end" 60 sample
for i in $(seq "$NCONC"); do
  p=pull${i}_PID
  rc=0; wait "${!p}" || rc=$?
  for j in "${!_spawn_names[@]}"; do [ "${_spawn_names[$j]}" != "pull$i" ] || _spawn_pids[j]=; done
  [ "$rc" -eq 0 ] || diag "$(tail -n 5 "$TESTDIR/pull$i.log")"
  ok "$rc" "concurrent pull of test/img$((i + 2)) verifies"
  rc=0; within >/dev/null || rc=$?
  ok $rc "… and du -sb blobs/ stays <= budget + largest blob"
done
ok "$([ "$maxu" -le "$LIMIT" ]; echo $?)" \
  "du -sb blobs/ sampled while the four pulls ran: at most $maxu <= $LIMIT"

if "$REGCACHE" verify -h >/dev/null 2>&1; then
  check "regcache verify beside the daemon: the index and the files agree" \
    "$REGCACHE" verify -d "$DATA"
else
  skip "regcache verify beside the daemon: the index and the files agree" "no verify subcommand"
fi
check "regcache is still running" regcache_alive rc
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

#!/bin/bash
# cache.max_bytes below the size of what is pulled: pulling a ~20 MB corpus
# through a cache with an 8 MiB budget keeps the data directory's blobs
# within the budget plus one blob after every pull, every pull verifies,
# the log shows evictions, and an evicted image pulls again (fetched anew
# from the upstream).  Then four pulls at once, with their fills in flight
# together, stay within the same bound.  `regcache verify` finds the index
# and the files consistent afterwards.
#
# Then a second daemon with a 2 MiB budget (low_water 85): two small images
# are cached, then an image whose layer is bigger than the whole budget
# pulls and verifies, its layer is not left under blobs/, and the small
# images' blobs are all still cached (not evicted to make room for it).
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
plan $((2 * N + 2 * NCONC + 9 + 8))

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

# --- a blob bigger than the budget ---------------------------------------------------------
for s in s1 s2; do
  DIGEST[$s]=$(mkimage "$TESTDIR/img-$s" --seed "budget-small-$s" --layers 2 --layer-size 150000)
  registry_push_dir up "$TESTDIR/img-$s" "test/$s:latest" >/dev/null
done
DIGEST[big]=$(mkimage "$TESTDIR/img-big" --seed budget-big --layers 1 --layer-size 3000000)
registry_push_dir up "$TESTDIR/img-big" test/big:latest >/dev/null
BIGL=$(jq -r '.layers[0].digest' "$TESTDIR/img-big/blobs/sha256/${DIGEST[big]#sha256:}")
BIG_SIZE=$(stat -c %s "$TESTDIR/img-big/blobs/sha256/${BIGL#sha256:}")
SMALL_BUDGET=$((2 * 1024 * 1024))
diag "big layer $BIGL: $BIG_SIZE bytes; budget $SMALL_BUDGET"
DATA2=$TESTDIR/data2
regcache_start rc2 "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$DATA2\",
  \"cache\": {\"max_bytes\": \"2MiB\", \"low_water\": 85},
  \"upstreams\": [ {\"name\": \"up\", \"url\": \"$up_URL\"} ]
}"
pull2() {
  rm -rf "$TESTDIR/out-$1"
  skopeo_run copy --quiet --src-tls-verify=false "docker://$rc2_ADDR/test/$1:latest" \
    "dir:$TESTDIR/out-$1" && verify_dir_digests "$TESTDIR/out-$1" "${DIGEST[$1]}"
}
blob2() { local h=${1#sha256:}; printf '%s/blobs/sha256/%s/%s' "$DATA2" "${h:0:2}" "$h"; }
SMALLB=$(for s in s1 s2; do
  jq -r --arg s "$s" '(.config.digest), (.layers[].digest) | "\($s)/\(.)"' \
    "$TESTDIR/img-$s/blobs/sha256/${DIGEST[$s]#sha256:}"
done | sort -u)
check "2 MiB budget: small image test/s1 pulls and verifies" pull2 s1
check "2 MiB budget: small image test/s2 pulls and verifies" pull2 s2
check "2 MiB budget: test/big (a $BIG_SIZE-byte layer, more than the budget) pulls and verifies" pull2 big
tmp2_empty() { [ -z "$(ls -A "$DATA2/tmp" 2>/dev/null)" ]; }
not_kept() {
  wait_for "tmp/ to be empty" 10 tmp2_empty || { ls -la "$DATA2/tmp"; return 1; }
  find "$DATA2/blobs" -type f -printf '%s %p\n'
  [ ! -e "$(blob2 "$BIGL")" ] && [ -z "$(find "$DATA2/blobs" -type f -size +2048k)" ]
}
check "the big layer is not left under blobs/ (nor in tmp/)" not_kept
small_kept() {
  local sd d bad=0
  for sd in $SMALLB; do
    d=${sd#*/}
    if [ ! -f "$(blob2 "$d")" ]; then echo "$d: no file"; bad=1; continue; fi
    tcurl -I -o /dev/null -D "$TESTDIR/h2" "$rc2_URL/v2/test/${sd%%/*}/blobs/$d" || { bad=1; continue; }
    grep -qi '^X-Cache: HIT' "$TESTDIR/h2" || { echo "$d: $(tr -d '\r' <"$TESTDIR/h2" | grep -i '^X-Cache')"; bad=1; }
  done
  return $bad
}
check "the small images' $(wc -w <<<"$SMALLB") blobs are all still cached (file present, HEAD says HIT)" small_kept
u2=$(du -sb "$DATA2/blobs" | cut -f1)
ok "$([ "$u2" -le "$SMALL_BUDGET" ]; echo $?)" "du -sb blobs/ stays within the 2 MiB budget ($u2)"
check "test/big pulls and verifies again (streamed anew, still not kept)" pull2 big
check "regcache (2 MiB budget) exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc2

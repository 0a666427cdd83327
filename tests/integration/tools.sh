#!/bin/bash
# The maintenance commands on a cache filled by a real pull: `regcache ls`
# lists the repository, tag and blobs (table and JSON); `regcache verify`
# finds a corrupted blob, a missing file, a file the index does not know
# and a leftover in tmp/, reports them with -n without touching anything,
# removes them otherwise, and a new pull fetches the removed blobs again;
# while the daemon runs, verify leaves tmp/ alone; `regcache gc` evicts to
# the low-water mark of a budget below the cached total, exactly what its
# --dry-run announced.
# Variables like plain_URL and rc_ADDR are set indirectly (printf -v).
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

require_cmd docker-registry skopeo python3 curl jq sha256sum md5sum dd od flock comm
require_regcache
plan 24

DATA=$TESTDIR/data
REPO=test/tools
# Three ~600 KB layers: together over the smallest budget gc accepts (1 MiB).
DIGEST=$(mkimage "$TESTDIR/img" --seed tools --layers 3 --layer-size 600000)
registry_start_plain plain
registry_push_dir plain "$TESTDIR/img" "$REPO:latest" >/dev/null

# rc_config [CACHE_JSON]: the daemon's and the tools' configuration.
rc_config() {
  printf '{"listen": ["127.0.0.1:@PORT@"], "data_dir": "%s",
  "upstreams": [{"name": "plain", "url": "%s", "prefix": "plain"}]%s}\n' \
    "$DATA" "$plain_URL" "${1:+, \"cache\": $1}"
}
regcache_start rc "$(rc_config)"

# --- helpers ------------------------------------------------------------------
tool() { "$REGCACHE" "$@"; }
ls_json() { tool ls -d "$DATA" --json; }
# blob_file DIGEST: the file of a cached blob.
blob_file() { local h=${1#sha256:}; printf '%s/blobs/sha256/%s/%s' "$DATA" "${h:0:2}" "$h"; }
# cached_blobs: the digests the index holds, sorted, one a line.
cached_blobs() { ls_json | jq -r '.blobs[].digest' | sort; }
cached_count_is() { [ "$(ls_json | jq '.totals.blobs')" -eq "$1" ]; }

pull() {
  rm -rf "$TESTDIR/out"
  skopeo_run copy --src-tls-verify=false "docker://$rc_ADDR/plain/$REPO:latest" \
    "dir:$TESTDIR/out" && verify_dir_digests "$TESTDIR/out" "$DIGEST"
}

# --- a pull fills the cache; ls shows it ----------------------------------------
check "skopeo pulls the image through regcache" pull
# The manifest, the config and three layers, as the upstream has them.
WANT=$( { echo "$DIGEST"; jq -r '.config.digest, .layers[].digest' "$TESTDIR/img/blobs/sha256/${DIGEST#sha256:}"; } | sort)
LAYER1=$(jq -r '.layers[0].digest' "$TESTDIR/img/blobs/sha256/${DIGEST#sha256:}")
LAYER2=$(jq -r '.layers[1].digest' "$TESTDIR/img/blobs/sha256/${DIGEST#sha256:}")
WANT_BYTES=$(for d in $WANT; do stat -c %s "$TESTDIR/img/blobs/sha256/${d#sha256:}"; done |
  awk '{ s += $1 } END { print s }')
# Blobs are published when their fill ends, which may be just after the
# client has its last byte: poll.
wait_for "five blobs in the cache" 20 cached_count_is 5

ls_table() {
  local out d
  out=$(REGCACHE_DATA_DIR=$DATA tool ls) || return 1
  printf '%s\n' "$out"
  grep -Eq "^plain/$REPO +latest +[0-9a-f]+ +$DIGEST " <<<"$out" || return 1
  for d in $WANT; do grep -q "^$d .*plain/$REPO" <<<"$out" || return 1; done
  grep -q "^1 repositories, [0-9]* tags, 5 blobs, $WANT_BYTES bytes" <<<"$out"
}
check "ls lists the repository, its tag and every blob with the repository" ls_table

ls_json_right() {
  local j
  j=$(ls_json) || return 1
  jq . <<<"$j"
  [ "$(jq -r '.blobs[].digest' <<<"$j" | sort)" = "$WANT" ] &&
    jq -e --arg d "$DIGEST" --arg r "$REPO" '
      (.repositories | length) == 1 and
      (.repositories[0] | .upstream == "plain" and .name == $r and
        any(.tags[]; .tag == "latest" and .digest == $d and .negative == false) and
        (.blobs | length) == 5) and
      (.blobs[] | select(.digest == $d) | .media_type) == "application/vnd.oci.image.manifest.v1+json" and
      all(.blobs[]; .repositories == [{"upstream": "plain", "name": $r}] and .size > 0)' <<<"$j" &&
    [ "$(jq '.totals.bytes' <<<"$j")" -eq "$WANT_BYTES" ] &&
    [ "$(jq '[.blobs[].size] | add' <<<"$j")" -eq "$WANT_BYTES" ]
}
check "ls --json parses and has the right digests, sizes and totals" ls_json_right

# --- verify while the daemon runs: tmp/ is its own ---------------------------------
echo "in flight" >"$DATA/tmp/inflight.test"
verify_beside_daemon() {
  local out rc=0
  out=$(tool verify -d "$DATA") || rc=$?
  printf '%s\n' "$out"
  [ "$rc" -eq 0 ] && grep -q "a running regcache holds" <<<"$out" &&
    grep -q "^verify: 5 blobs checked, 0 bad, 0 missing, orphans not checked$" <<<"$out" &&
    [ -f "$DATA/tmp/inflight.test" ]
}
check "verify beside the daemon: all good, tmp/ left alone (exit 0)" verify_beside_daemon
rm -f "$DATA/tmp/inflight.test"

check "regcache exits 0 on SIGTERM" regcache_stop rc

verify_clean() {
  local out rc=0
  out=$(tool verify -d "$DATA") || rc=$?
  printf '%s\n' "$out"
  [ "$rc" -eq 0 ] && grep -q "^verify: $1 blobs checked, 0 bad, 0 missing, 0 orphans removed$" <<<"$out"
}
check "verify on an intact cache: 0 bad, exit 0" verify_clean 5

# --- damage: a flipped byte, a deleted file, an unknown file, a tmp/ leftover ------
flip_byte() {
  local f=$1 off=$2 b
  b=$(dd if="$f" bs=1 skip="$off" count=1 status=none | od -An -tu1 | tr -d ' ')
  # shellcheck disable=SC2059
  printf "\\$(printf '%03o' $((b ^ 255)))" | dd of="$f" bs=1 seek="$off" count=1 conv=notrunc status=none
}
flip_byte "$(blob_file "$LAYER1")" 1000
rm "$(blob_file "$LAYER2")"
mkdir -p "$DATA/blobs/sha256/zz"
echo stray >"$DATA/blobs/sha256/zz/stray"
echo partial >"$DATA/tmp/leftover.1234.1"

snapshot() { (cd "$DATA" && find blobs tmp -type f -exec md5sum {} + | sort) && cached_blobs; }
BEFORE=$(snapshot)

verify_dry() {
  local out rc=0
  out=$(tool verify -d "$DATA" -n) || rc=$?
  printf '%s\n' "$out"
  [ "$rc" -eq 1 ] &&
    grep -q "^verify: $LAYER1: bad: the content hashes to sha256:[0-9a-f]*: would remove$" <<<"$out" &&
    grep -q "^verify: $LAYER2: missing: indexed, but .* is gone: would remove$" <<<"$out" &&
    grep -q "^verify: blobs/sha256/zz/stray: not in the index, 6 bytes: would remove$" <<<"$out" &&
    grep -q "^verify: tmp/leftover.1234.1: leftover of an unfinished fill, 8 bytes: would remove$" <<<"$out" &&
    grep -q "^verify: 5 blobs checked, 1 bad, 1 missing, 2 orphans found (-n: nothing removed)$" <<<"$out"
}
check "verify -n reports the bad, the missing and both orphans (exit 1)" verify_dry
unchanged() { [ "$(snapshot)" = "$BEFORE" ]; }
check "verify -n changed nothing" unchanged

verify_fix() {
  local out rc=0
  out=$(tool verify -d "$DATA") || rc=$?
  printf '%s\n' "$out"
  [ "$rc" -eq 1 ] &&
    grep -q "^verify: $LAYER1: bad: .*: removed$" <<<"$out" &&
    grep -q "^verify: $LAYER2: missing: .*: removed$" <<<"$out" &&
    grep -q "^verify: 5 blobs checked, 1 bad, 1 missing, 2 orphans removed$" <<<"$out"
}
check "verify removes them and exits 1" verify_fix
removed() {
  [ ! -e "$(blob_file "$LAYER1")" ] && [ ! -e "$DATA/blobs/sha256/zz/stray" ] &&
    [ ! -e "$DATA/tmp/leftover.1234.1" ] &&
    [ "$(cached_blobs)" = "$(grep -vxF -e "$LAYER1" -e "$LAYER2" <<<"$WANT")" ]
}
check "the bad and missing entries, their files and the orphans are gone" removed
check "a second verify finds nothing (exit 0)" verify_clean 3

# --- the removed blobs come back with the next pull ---------------------------------
regcache_start rc "$(rc_config)"
check "a new pull through regcache succeeds" pull
check "the removed blobs were fetched and cached again" wait_for "five blobs again" 20 cached_count_is 5
check "regcache exits 0 on SIGTERM again" regcache_stop rc
check "verify after the new pull: clean (exit 0)" verify_clean 5

# --- gc against a budget below the cached total ----------------------------------------
MAX=$((1024 * 1024))
TARGET=$((MAX / 100 * 85 + MAX % 100 * 85 / 100))	# the default low water mark, 85 %
rc_config "{\"max_bytes\": $MAX}" | sed "s/@PORT@/$(free_port)/" >"$TESTDIR/gc.json"
budget_exceeded() { [ "$(ls_json | jq '.totals.bytes')" -gt "$MAX" ]; }
check "the cache holds more than the budget" budget_exceeded

# What --dry-run announces, in eviction order: least recently served first.
gc_dry() {
  local out rc=0
  out=$(tool gc -c "$TESTDIR/gc.json" --dry-run) || rc=$?
  printf '%s\n' "$out"
  [ "$rc" -eq 0 ] || return 1
  grep -q "down to $TARGET bytes" <<<"$out" &&
    sed -n 's/^gc: \(sha256:[0-9a-f]*\): .*: would evict$/\1/p' <<<"$out" | sort >"$TESTDIR/would" &&
    [ -s "$TESTDIR/would" ] &&
    grep -q "^gc: would evict $(wc -l <"$TESTDIR/would") blobs" <<<"$out"
}
BEFORE=$(cached_blobs)
check "gc --dry-run with a budget below the total reports what it would evict" gc_dry
gc_dry_unchanged() { [ "$(cached_blobs)" = "$BEFORE" ]; }
check "gc --dry-run evicted nothing" gc_dry_unchanged

gc_run() {
  local out rc=0 total
  out=$(tool gc -c "$TESTDIR/gc.json") || rc=$?
  printf '%s\n' "$out"
  [ "$rc" -eq 0 ] || return 1
  total=$(ls_json | jq '.totals.bytes')
  diag "after gc: $total bytes cached, low water mark $TARGET"
  [ "$total" -le "$TARGET" ] && [ "$total" -gt 0 ] &&
    grep -q "; the cache holds [0-9]* blobs, $total bytes" <<<"$out"
}
check "gc evicts down to the low-water mark (ls --json agrees)" gc_run
gc_as_announced() {
  comm -23 <(printf '%s\n' "$BEFORE") <(cached_blobs) | diff - "$TESTDIR/would"
}
check "gc evicted exactly what --dry-run announced" gc_as_announced
check "verify after gc: clean (exit 0)" verify_clean "$(cached_blobs | wc -l)"

# --- errors -----------------------------------------------------------------------
no_cache() {
  local rc=0
  tool verify -d "$TESTDIR/nothing" || rc=$?
  [ "$rc" -eq 2 ] || return 1
  rc=0; tool ls -d "$TESTDIR/nothing" || rc=$?
  [ "$rc" -eq 2 ] || return 1
  rc=0; tool gc -d "$TESTDIR/nothing" || rc=$?
  [ "$rc" -eq 2 ]
}
check "verify, ls and gc on a directory with no cache exit 2" no_cache
bad_usage() {
  local rc=0
  tool verify --json || rc=$?
  [ "$rc" -eq 2 ] || return 1
  rc=0; tool ls -n || rc=$?
  [ "$rc" -eq 2 ] || return 1
  tool gc -h | grep -q '^usage: regcache gc \[-c FILE\] \[-d DIR\] \[--dry-run\]$'
}
check "bad options exit 2; -h prints the usage" bad_usage
lock_held() {
  # A daemon cannot start while gc sweeps; here a second holder stands in
  # for the daemon: gc then leaves tmp/ alone.
  local out
  echo partial >"$DATA/tmp/leftover.held"
  out=$(flock -x "$DATA/regcache.lock" "$REGCACHE" gc -d "$DATA") || return 1
  printf '%s\n' "$out"
  grep -q "a running regcache holds" <<<"$out" && [ -f "$DATA/tmp/leftover.held" ]
}
check "gc leaves tmp/ alone while DATA/regcache.lock is held" lock_held

#!/bin/bash
# The data directory on a small tmpfs (8 MiB) that fills up: pulls still
# succeed, and regcache keeps serving.  regcache runs in its own mount
# namespace (unshare --mount) with the tmpfs mounted over its data
# directory, so the mount goes away with the process whatever happens to
# the test; the test looks at the tmpfs through /proc/PID/root.
#
#   - an image that fits is cached;
#   - an image whose second layer does not fit: the fill hits ENOSPC part
#     way through and the client still gets every byte;
#   - an image with a layer bigger than the whole tmpfs;
#   - with the tmpfs filled to the last block by another file: a new image
#     (manifest and blobs that cannot be stored at all) still pulls;
#   - the cached image still pulls from the cache, tmp/ holds no leftover,
#     and once space is back new content is cached again.
# Variables like up_URL and rc_PID are set indirectly (printf -v).
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

require_cmd docker-registry skopeo python3 curl jq sha256sum unshare mount
require_regcache

DATA=$TESTDIR/data
mkdir -p "$DATA"
# Can we mount a tmpfs in a mount namespace of our own?  As root, or else
# as root of a user namespace of our own.
UNSHARE=
for u in "unshare --mount" "unshare --user --map-root-user --mount"; do
  probe=$($u sh -c "mount -t tmpfs -o size=1m tmpfs '$DATA' && echo mounted" 2>&1) || true
  if [ "$probe" = mounted ]; then UNSHARE=$u; break; fi
done
[ -n "$UNSHARE" ] || skip_all "cannot mount a tmpfs in a private mount namespace: $probe"
plan 19

registry_start_plain up
declare -A DIGEST
DIGEST[fits]=$(mkimage "$TESTDIR/img-fits" --seed df-fits --layers 2 --layer-size 2200000)
DIGEST[half]=$(mkimage "$TESTDIR/img-half" --seed df-half --layers 2 --layer-size 2200000)
DIGEST[huge]=$(mkimage "$TESTDIR/img-huge" --seed df-huge --layers 1 --layer-size 10000000)
DIGEST[full]=$(mkimage "$TESTDIR/img-full" --seed df-full --layers 2 --layer-size 300000)
DIGEST[after]=$(mkimage "$TESTDIR/img-after" --seed df-after --layers 1 --layer-size 300000)
for i in fits half huge full after; do
  registry_push_dir up "$TESTDIR/img-$i" "test/$i:latest" >/dev/null
done

# regcache_start, but inside a mount namespace with the tmpfs on DATA.
# unshare and sh exec, so rc_PID is regcache's own pid.
port=$(free_port)
printf '%s\n' "{
  \"admin\": null,
  \"listen\": [\"127.0.0.1:$port\"],
  \"data_dir\": \"$DATA\",
  \"upstreams\": [ {\"name\": \"up\", \"url\": \"$up_URL\"} ]
}" >"$TESTDIR/rc.json"
# shellcheck disable=SC2016,SC2086
spawn rc $UNSHARE sh -c 'mount -t tmpfs -o size=8m tmpfs "$1" && exec "$2" serve -c "$3"' \
  _ "$DATA" "$REGCACHE" "$TESTDIR/rc.json"
rc_ADDR=127.0.0.1:$port
rc_URL=http://$rc_ADDR
wait_http "$rc_URL/v2/"
# The tmpfs as regcache sees it.
TMPFS=/proc/$rc_PID/root$DATA
check "regcache runs with its data directory on an 8 MiB tmpfs" \
  sh -c "grep -q ' $DATA tmpfs ' /proc/$rc_PID/mounts && [ -d '$TMPFS/blobs' ]"
# statfs of the path itself (df would look the mount up in our own namespace).
free_kb() { stat -f -c '%a %S' "$TMPFS/." | awk '{ print int($1 * $2 / 1024) }'; }

pull_verify() {
  rm -rf "$TESTDIR/out-$1-$2"
  skopeo_run copy --quiet --src-tls-verify=false "docker://$rc_ADDR/test/$1:latest" \
    "dir:$TESTDIR/out-$1-$2" && verify_dir_digests "$TESTDIR/out-$1-$2" "${DIGEST[$1]}"
}
blob_file() { local h=${1#sha256:}; printf '%s/blobs/sha256/%s/%s' "$TMPFS" "${h:0:2}" "$h"; }
cached() { [ -f "$(blob_file "$1")" ]; }
layers() { jq -r '.layers[].digest' "$TESTDIR/img-$1/blobs/sha256/${DIGEST[$1]#sha256:}"; }
tmp_empty() { [ -z "$(ls -A "$TMPFS/tmp")" ]; }

check "test/fits (2 x 2.2 MB) pulls and verifies" pull_verify fits 1
all_cached() { local d; for d in $(layers "$1"); do cached "$d" || return 1; done; }
check "… and both its layers are cached" all_cached fits
diag "tmpfs free after test/fits: $(free_kb) KiB"

check "test/half (2 x 2.2 MB; the second layer does not fit) pulls and verifies" pull_verify half 1
n=$(count_lines "$rc_LOG" 'No space left on device')
ok "$([ "$n" -ge 1 ]; echo $?)" "regcache did run out of space during that pull ($n ENOSPC lines)"
diag "$(grep -E 'No space left|could not keep|not stored' "$rc_LOG" | head -n 5)"
check "test/huge (one 10 MB layer, more than the whole tmpfs) pulls and verifies" pull_verify huge 1
check "test/half again: pulls and verifies" pull_verify half 2
check "test/huge again: pulls and verifies" pull_verify huge 2
rc=0; wait_for "tmp/ to be empty" 10 tmp_empty || rc=$?
ok $rc "no failed fill is left in tmp/ ($(find "$TMPFS/tmp" -mindepth 1 | wc -l) files)"
diag "tmpfs free now: $(free_kb) KiB"

# Another file takes every block that is left.
head -c $((16 * 1024 * 1024)) /dev/zero >"$TMPFS/filler" 2>/dev/null || true
ok "$([ "$(free_kb)" -eq 0 ]; echo $?)" "the tmpfs is full to the last block ($(free_kb) KiB free)"
check "with the tmpfs full, a new image (manifest and blobs not storable) pulls and verifies" \
  pull_verify full 1
check "with the tmpfs full, test/full pulls and verifies a second time" pull_verify full 2
check "with the tmpfs full, test/fits still pulls from the cache and verifies" pull_verify fits 2
n=$(count_lines "$rc_LOG" '"GET /v2/test/fits/blobs/[^" ]* HTTP/1\.[01]" 200 '"$AL_REST"' up=up cache=HIT$')
ok "$([ "$n" -ge 3 ]; echo $?)" "… its blobs served as HIT ($n)"
answers() { [ "$(tcurl -o /dev/null -w '%{http_code}' "$rc_URL/v2/")" = 200 ] && pid_alive "$rc_PID"; }
check "regcache is running and answers /v2/" answers

# Space comes back: new content is cached again.
rm -f "$TMPFS/filler"
check "after space came back, test/after pulls and verifies" pull_verify after 1
check "… and its layer is cached" all_cached after
rc=0; wait_for "tmp/ to be empty" 10 tmp_empty || rc=$?
ok $rc "tmp/ is empty at the end"
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

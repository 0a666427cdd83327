#!/bin/bash
# kill -9 during 10 concurrent fills, then restart on the same data
# directory: the crash damaged nothing (`regcache verify` finds no bad or
# missing blob), the restart clears tmp/, and every image pulls and
# verifies.
#
# To have ten fills surely in flight when the kill comes, regcache's
# upstream is first tests/tools/fakeupstream.py proxy-faulty --fault stall
# in front of a real docker-registry: it sends the first half of every
# layer and holds the rest until the test opens its gate, which it does
# only after the kill.  The restarted regcache has an upstream of the same
# name pointing at the registry itself.
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

require_cmd docker-registry skopeo python3 curl jq sha256sum
require_regcache
N=10
plan $((N + 11))

registry_start_plain up
declare -A DIGEST
for i in $(seq "$N"); do
  DIGEST[$i]=$(mkimage "$TESTDIR/img$i" --seed "crash-$i" --layers 1 --layer-size 1500000)
  registry_push_dir up "$TESTDIR/img$i" "test/img$i:latest" >/dev/null
done

GATE=$TESTDIR/gate
port=$(free_port)
spawn stall python3 "$TOOLSDIR/fakeupstream.py" proxy-faulty "$port" --target "$up_URL" \
  --fault stall --count -1 --min-size 65536 --gate "$GATE"
STALL_URL=http://127.0.0.1:$port
wait_for "the stalling proxy" 10 grep -q listening "$stall_LOG"

DATA=$TESTDIR/data
regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$DATA\",
  \"upstreams\": [ {\"name\": \"up\", \"url\": \"$STALL_URL\"} ]
}"

# forget NAME: a spawned process we reaped ourselves.
forget() {
  local i
  for i in "${!_spawn_names[@]}"; do [ "${_spawn_names[$i]}" != "$1" ] || _spawn_pids[i]=; done
}

for i in $(seq "$N"); do
  spawn "pull$i" skopeo_run copy --quiet --src-tls-verify=false \
    "docker://$rc_ADDR/test/img$i:latest" "dir:$TESTDIR/cut$i"
done
# Every layer's fill has written its first half and waits for the rest.
in_flight() {
  [ "$(count_lines "$stall_LOG" '^fault stall /v2/test/img[0-9]+/blobs/')" -ge "$N" ] &&
    [ "$(find "$DATA/tmp" -type f -size +0 | wc -l)" -ge "$N" ]
}
rc=0; wait_for "$N fills in flight" 45 in_flight || rc=$?
[ "$rc" -eq 0 ] || diag "held layers: $(count_lines "$stall_LOG" '^fault stall ')" \
  "$(tail -n 3 "$TESTDIR"/pull*.log)"
ok $rc "$N layer fills are in flight: $(find "$DATA/tmp" -type f -size +0 | wc -l) partial files in tmp/"
diag "$(find "$DATA/tmp" -type f -printf '%s %f\n' | head -n 12)"

kill -KILL "$rc_PID"
rc=0; { wait "$rc_PID"; } 2>/dev/null || rc=$?
forget rc
ok "$([ "$rc" -eq 137 ]; echo $?)" "regcache died of SIGKILL (status $rc) with the fills in flight"

pulls_over() {
  local i p
  for i in $(seq "$N"); do p=pull${i}_PID; ! pid_alive "${!p}" || return 1; done
}
wait_for "the interrupted pulls to end" 60 pulls_over
failed=0
for i in $(seq "$N"); do
  p=pull${i}_PID
  rc=0; wait "${!p}" || rc=$?
  forget "pull$i"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
done
ok "$([ "$failed" -eq "$N" ]; echo $?)" "the $N interrupted pulls failed ($failed)"
touch "$GATE"   # let the proxy's held threads go

have_verify=0
"$REGCACHE" verify -h >/dev/null 2>&1 || have_verify=$?
rc=0
"$REGCACHE" verify -n -d "$DATA" >"$TESTDIR/verify0.out" 2>&1 || rc=$?
diag "regcache verify -n right after the crash: exit $rc" "$(cat "$TESTDIR/verify0.out")"
if [ "$have_verify" -eq 0 ]; then
  grep -qE '^verify: [0-9]+ blobs checked, 0 bad, 0 missing' "$TESTDIR/verify0.out" &&
    [ "$rc" -ne 2 ]
  ok $? "regcache verify -n after the crash: no bad and no missing blob"
else
  skip "regcache verify -n after the crash: no bad and no missing blob" "no verify subcommand"
fi

# Every file under blobs/ is whole: its content hashes to its name.
blobs_whole() {
  local f n=0 bad=0
  while IFS= read -r f; do
    n=$((n + 1))
    [ "$(sha256sum <"$f" | cut -c1-64)" = "${f##*/}" ] || { echo "damaged: $f"; bad=1; }
  done < <(find "$DATA/blobs" -type f)
  echo "$n files under blobs/"
  return $bad
}
check "every file under blobs/ hashes to its name" blobs_whole

regcache_start rc2 "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$DATA\",
  \"upstreams\": [ {\"name\": \"up\", \"url\": \"$up_URL\"} ]
}"
tmp_empty() { [ -z "$(ls -A "$DATA/tmp")" ]; }
check "after the restart tmp/ is empty" tmp_empty
check "the restart says it removed the unfinished fills" \
  grep -qE 'removed [0-9]+ unfinished fills? from tmp/' "$rc2_LOG"

if [ "$have_verify" -eq 0 ]; then
  check "regcache verify beside the restarted daemon: exit 0, nothing wrong" \
    "$REGCACHE" verify -d "$DATA"
else
  skip "regcache verify beside the restarted daemon: exit 0, nothing wrong" "no verify subcommand"
fi

pull_one() {
  skopeo_run copy --quiet --src-tls-verify=false "docker://$rc2_ADDR/test/img$1:latest" \
    "dir:$TESTDIR/out$1" && verify_dir_digests "$TESTDIR/out$1" "${DIGEST[$1]}"
}
for i in $(seq "$N"); do
  check "test/img$i pulls and verifies after the restart" pull_one "$i"
done

check "regcache is still running" regcache_alive rc2
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc2
if [ "$have_verify" -eq 0 ]; then
  check "regcache verify with no daemon running (tmp/ and orphans too): exit 0" \
    "$REGCACHE" verify -d "$DATA"
else
  skip "regcache verify with no daemon running: exit 0" "no verify subcommand"
fi

# tests/lib/common.sh -- sourced by every integration test (bash, set -eu).
#
# Gives each test a private work dir, TAP output helpers, process spawning
# with guaranteed cleanup, and bounded polling.  Nothing here sleeps for a
# fixed time: every wait polls a condition with a bound in count and time.

set -eu

# --- locations ----------------------------------------------------------
# SRCDIR: top of the source tree, found from this file so it works from
# `make check` (any builddir), from VPATH builds and by hand.
SRCDIR=${TOP_SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# BUILDDIR: `make check` runs tests with cwd = the builddir holding the
# tests' Makefile (top or tests/) and $srcdir set; config.status marks the
# top builddir.  By hand, assume an in-tree build.
if [ -n "${BUILDDIR:-}" ]; then :
elif [ -f ./config.status ]; then BUILDDIR=$PWD
elif [ -f ../config.status ]; then BUILDDIR=$(cd .. && pwd)
else BUILDDIR=$SRCDIR
fi
REGCACHE=${REGCACHE:-$BUILDDIR/src/regcache}
TOOLSDIR=$SRCDIR/tests/tools

# --- per-test work dir ----------------------------------------------------
TESTDIR=$(mktemp -d "${TMPDIR:-/tmp}/regcache-test.XXXXXX")
mkdir -p "$TESTDIR/tmp"

# --- kept logs and used secrets ---------------------------------------------
# Every regcache log of a run is kept under tests/logs/NAME/ in the build
# dir, and every password and token the test used is listed in
# tests/logs/NAME.secrets: secrets.sh, which runs last, greps the logs for
# each of them.  record_secret VALUE...: add to the list.
TESTNAME=$(basename "$0" .sh)
LOGKEEP=$BUILDDIR/tests/logs
mkdir -p "$LOGKEEP"
if [ "$TESTNAME" != secrets ]; then
  rm -rf "${LOGKEEP:?}/$TESTNAME"
  mkdir -p "$LOGKEEP/$TESTNAME"
  SECRETS_FILE=$LOGKEEP/$TESTNAME.secrets
  : >"$SECRETS_FILE"
fi
record_secret() { printf '%s\n' "$@" >>"$SECRETS_FILE"; }
_kept_logs=()

# --- TAP ------------------------------------------------------------------
_tap_n=0          # tests reported so far
_tap_failed=0
_tap_plan=        # planned count, empty until plan() (done_testing plans late)

plan()      { _tap_plan=$1; echo "1..$1"; }
diag()      { local l; for l in "$@"; do printf '%s\n' "$l" | sed 's/^/# /'; done; }
pass()      { _tap_n=$((_tap_n + 1)); echo "ok $_tap_n - $1"; }
fail()      { _tap_n=$((_tap_n + 1)); _tap_failed=$((_tap_failed + 1)); echo "not ok $_tap_n - $1"; }
skip()      { _tap_n=$((_tap_n + 1)); echo "ok $_tap_n - $1 # SKIP ${2:-}"; }
# ok RC NAME: report a test from an exit code, e.g.  `rc=0; cmd || rc=$?; ok $rc "cmd works"`
ok()        { if [ "$1" -eq 0 ]; then pass "$2"; else fail "$2"; fi; }
skip_all()  { echo "1..0 # SKIP $1"; _tap_plan=0; exit 0; }
bail_out()  { echo "Bail out! $1"; exit 99; }
# done_testing: print the plan at the end when the count isn't known upfront.
done_testing() { [ -n "$_tap_plan" ] || { _tap_plan=$_tap_n; echo "1..$_tap_n"; }; }

# check NAME CMD...: run CMD (output to a log) and report one test; on
# failure show the output as diagnostics.  Never aborts the script.
check() {
  local name=$1 log="$TESTDIR/check.$((_tap_n + 1)).log" rc=0
  shift
  "$@" >"$log" 2>&1 || rc=$?
  ok "$rc" "$name"
  if [ "$rc" -ne 0 ]; then diag "exit status $rc from: $*"; diag "$(tail -n 40 "$log")"; fi
  return 0
}

# require_cmd CMD...: skip the whole test when a tool is missing.
require_cmd() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || skip_all "$c not installed"; done
}
require_regcache() { [ -x "$REGCACHE" ] || skip_all "regcache not built ($REGCACHE)"; }

# --- processes --------------------------------------------------------------
_spawn_pids=()
_spawn_names=()

# spawn NAME CMD...: start CMD in the background, output to $TESTDIR/NAME.log;
# sets ${NAME}_PID and ${NAME}_LOG.  NAME must be a shell identifier.  Call
# it from the test's main shell (not inside $(...)) so cleanup knows the pid.
spawn() {
  local name=$1
  shift
  "$@" >"$TESTDIR/$name.log" 2>&1 </dev/null &
  _spawn_pids+=("$!")
  _spawn_names+=("$name")
  printf -v "${name}_PID" '%s' "$!"
  printf -v "${name}_LOG" '%s' "$TESTDIR/$name.log"
}

# pid_alive PID: running and not a zombie (zombies still answer kill -0).
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# stop_pid PID: TERM, poll up to 5 s, then KILL; reap it.
stop_pid() {
  local pid=$1 i
  pid_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do pid_alive "$pid" || break; sleep 0.1; done
  if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}

# stop NAME: stop one spawned process (e.g. to take an upstream down) and
# forget it, so cleanup never signals a recycled pid.
stop() {
  local i
  for i in "${!_spawn_names[@]}"; do
    if [ "${_spawn_names[$i]}" = "$1" ] && [ -n "${_spawn_pids[$i]}" ]; then
      stop_pid "${_spawn_pids[$i]}"
      _spawn_pids[i]=
    fi
  done
}

# dump_logs [NAME...]: tail the named logs (default: all) as diagnostics.
# shellcheck disable=SC2120
dump_logs() {
  local f names=("$@")
  [ ${#names[@]} -gt 0 ] || names=("${_spawn_names[@]}")
  for f in "${names[@]}"; do
    [ -f "$TESTDIR/$f.log" ] || continue
    diag "----- $f.log (last 30 lines) -----" "$(tail -n 30 "$TESTDIR/$f.log")"
  done
}

_err_at=
trap '_err_at="line $LINENO: $BASH_COMMAND"' ERR

_cleanup() {
  local rc=$? i
  trap - EXIT
  set +e
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 99 ]; then
    echo "Bail out! aborted with status $rc${_err_at:+ at $_err_at}"
    dump_logs
  fi
  for ((i = ${#_spawn_pids[@]} - 1; i >= 0; i--)); do
    [ -z "${_spawn_pids[$i]}" ] || stop_pid "${_spawn_pids[$i]}"
  done
  for i in "${_kept_logs[@]}"; do
    [ ! -f "$TESTDIR/$i.log" ] || cp "$TESTDIR/$i.log" "$LOGKEEP/$TESTNAME/$i.log"
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "# KEEP=1: work dir kept: $TESTDIR"
  else rm -rf "$TESTDIR"; fi
  # A mismatched plan or a failure makes the script fail when run by hand.
  if [ "$rc" -eq 0 ] && { [ "$_tap_failed" -gt 0 ] || [ "${_tap_plan:-$_tap_n}" != "$_tap_n" ]; }; then
    [ "$_tap_failed" -gt 0 ] || echo "# planned ${_tap_plan} tests but ran $_tap_n"
    rc=1
  fi
  exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- waiting ----------------------------------------------------------------
# wait_for DESC TIMEOUT_SECONDS CMD...: run CMD every 0.1 s until it
# succeeds; after TIMEOUT seconds (or 10*TIMEOUT tries) print DESC and the
# logs as diagnostics and return 1 (which aborts a set -e script).
wait_for() {
  local desc=$1 timeout=$2 i start=$SECONDS
  shift 2
  for ((i = 0; i < timeout * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    [ $((SECONDS - start)) -lt "$timeout" ] || break
    sleep 0.1
  done
  "$@" >/dev/null 2>&1 && return 0   # one last try after the deadline
  diag "timed out after ${timeout}s waiting for: $desc"
  dump_logs
  return 1
}

# curl, isolated from ~/.curlrc (-q must come first) and always bounded.
tcurl() { curl -q -sS --max-time 10 "$@"; }

# wait_http URL [CURL ARGS...]: wait up to 20 s until URL answers any HTTP status.
wait_http() {
  local url=$1
  shift
  wait_for "HTTP answer from $url" 20 \
    curl -q -s -o /dev/null --max-time 2 "$@" "$url"
}

# free_port: a 127.0.0.1 TCP port that was free a moment ago.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- skopeo, isolated from the user's config -----------------------------
# Private HOME/XDG dirs (so no auth.json or docker config of the user is
# read), an empty registries.conf and registries.d, a permissive policy,
# temp files in TESTDIR, and a bound on the run time.
mkdir -p "$TESTDIR/home" "$TESTDIR/run/containers" "$TESTDIR/registries.d"
chmod 700 "$TESTDIR/run"
: >"$TESTDIR/registries.conf"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$TESTDIR/policy.json"

skopeo_run() {
  env HOME="$TESTDIR/home" XDG_RUNTIME_DIR="$TESTDIR/run" \
      XDG_CONFIG_HOME="$TESTDIR/home/.config" DOCKER_CONFIG="$TESTDIR/home/.docker" \
      REGISTRY_AUTH_FILE="$TESTDIR/run/containers/auth.json" \
      CONTAINERS_REGISTRIES_CONF="$TESTDIR/registries.conf" TMPDIR="$TESTDIR/tmp" \
    skopeo --policy "$TESTDIR/policy.json" --registries.d "$TESTDIR/registries.d" \
      --registries-conf "$TESTDIR/registries.conf" \
      --command-timeout "${SKOPEO_TIMEOUT:-60s}" "$@"
}

# mkimage OUTDIR ARGS...: deterministic OCI layout (see tests/tools/mkimage.py);
# prints the top-level digest.
mkimage() { python3 "$TOOLSDIR/mkimage.py" "$@"; }

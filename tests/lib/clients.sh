# tests/lib/clients.sh -- real container clients as root (containerd, and
# what clients.sh needs for podman and dockerd), sourced after common.sh.
#
# Each client gets its own state under $TESTDIR and runs in a private mount
# namespace (see isolate_init), so nothing lands in the host's /run or
# /var/lib.
# shellcheck shell=bash

# skip_n REASON NAME...: report each named test as skipped.
skip_n() {
  local reason=$1
  shift
  for n; do skip "$n" "$reason"; done
}

# reason_from LOG: a one-line reason from a daemon's log (its last error).
reason_from() {
  local r
  r=$(grep -iE 'level=(fatal|error)|failed|error' "$1" 2>/dev/null | tail -n 1 |
    sed -E 's/^.*msg="(([^"\\]|\\.)*)".*$/\1/' | cut -c1-200)
  [ -n "$r" ] || r=$(tail -n 1 "$1" 2>/dev/null | cut -c1-200)
  printf '%s' "${r:-no output}" | tr '\n#' '  '
}

# up_or_dead PID CMD...: CMD succeeds or PID has exited (for wait_for: stop
# waiting as soon as either is known).
up_or_dead() {
  local pid=$1
  shift
  "$@" >/dev/null 2>&1 || ! pid_alive "$pid"
}

# stop_group NAME: stop a daemon started with setsid (so it leads its own
# process group): TERM and wait, then KILL whatever is left of the group
# (dockerd's containerd, shims).
stop_group() {
  local pid_var="${1}_PID" pid
  pid=${!pid_var}
  stop "$1"
  kill -KILL -- "-$pid" 2>/dev/null || true
}

# isolate_init: sets ISOLATE, a command prefix that runs a client in a
# private mount namespace with an empty tmpfs over /run and /var/lib.  Every
# path the clients allow is configured into $TESTDIR, but some are
# hard-coded: dockerd 20.10 creates /run/docker/plugins, podman 4.3 writes
# /var/lib/containers/cache/blob-info-cache-v1.boltdb.  In the namespace
# those land in the tmpfs and vanish with the client.  (mount -n: no
# /run/mount/utab on the host.)  A directory holding $TESTDIR is not
# covered.  Without namespaces NO_ISOLATE says why, and the clients are
# skipped rather than let loose on /run.
isolate_init() {
  local d dirs=() sh
  for d in /run /var/lib; do
    case $TESTDIR/ in "$d"/*) ;; *) dirs+=("$d") ;; esac
  done
  # shellcheck disable=SC2016
  sh='while [ "$1" != -- ]; do mount -n -t tmpfs -o mode=0755,size=64m regcache-test "$1"; shift; done; shift; exec "$@"'
  ISOLATE=(unshare --mount --propagation private -- sh -ec "$sh" sh "${dirs[@]}" --)
  NO_ISOLATE=
  if [ "$(id -u)" != 0 ]; then
    NO_ISOLATE="the clients need root here"
  elif ! command -v unshare >/dev/null || ! command -v setsid >/dev/null; then
    NO_ISOLATE="unshare or setsid not installed"
  elif ! "${ISOLATE[@]}" true >"$TESTDIR/unshare.log" 2>&1; then
    NO_ISOLATE="cannot make a private mount namespace: $(tr '\n#' '  ' <"$TESTDIR/unshare.log")"
  fi
}

# containerd_start DIR [ENV...]: start containerd (as "containerd", in the
# ISOLATE namespace, with ENV such as proxy variables) with its root,
# state, socket and config.toml under DIR, and wait for its socket.  Sets
# CTR, the ctr command for it.  Returns 1 with CONTAINERD_SKIP set to the
# reason when containerd is missing or cannot run here (it is stopped
# again); stop it with stop_group containerd.
# shellcheck disable=SC2034
containerd_start() {
  local d=$1
  shift
  CONTAINERD_SKIP=
  if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
    CONTAINERD_SKIP="containerd or ctr not installed"
    return 1
  fi
  if [ -n "$NO_ISOLATE" ]; then
    CONTAINERD_SKIP=$NO_ISOLATE
    return 1
  fi
  mkdir -p "$d/root" "$d/state" "$d/opt"
  CTR=(ctr --address "$d/containerd.sock")
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
# Only what a pull needs: no CRI, no snapshotters that mount.
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
EOF
  spawn containerd env "$@" setsid "${ISOLATE[@]}" containerd -c "$d/config.toml"
  # shellcheck disable=SC2154
  wait_for "containerd socket" 30 \
    up_or_dead "$containerd_PID" "${CTR[@]}" --connect-timeout 1s version || true
  if ! "${CTR[@]}" --connect-timeout 2s version >"$d/version.log" 2>&1; then
    # shellcheck disable=SC2154
    CONTAINERD_SKIP="containerd cannot start here: $(reason_from "$containerd_LOG")"
    stop_group containerd
    return 1
  fi
}

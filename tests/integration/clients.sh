#!/bin/bash
# Real clients pull through regcache acting as a docker.io mirror:
# containerd (ctr with a hosts.toml mirror; sends ?ns=docker.io), podman
# (registries.conf mirror) and dockerd (registry-mirrors).  The upstream is
# a plain docker-registry holding two generated images:
#   library/regcache-test:latest  single-platform OCI manifest (this host's
#                                 platform)
#   library/regcache-test:multi   Docker schema2 manifest list, this host's
#                                 platform and one other
# Each client must end up with exactly the generated digests, and regcache's
# access log must show that the pull went through it.  The clients are set up
# with the examples in contrib/client-config/ (mirror address replaced).
#
# Every client runs as root with vfs/native storage and its own state,
# config and socket directories under $TESTDIR.  A few paths are hard-coded
# in the clients, so each daemon and podman runs in a private mount
# namespace with an empty tmpfs over /run and /var/lib; the last test checks
# that nothing changed in the host's default places (/var/lib/docker,
# /etc/docker, /run/containerd, ...).
#
# Network: each client gets HTTP(S)_PROXY pointing at a local "trap" that
# refuses and logs every request.  Loopback (regcache) is never proxied, so
# anything that would leave the machine - a fallback from the mirror to the
# real registry-1.docker.io - ends at the trap and fails the test.
#
# A client whose binary is missing, or whose daemon cannot start on this
# machine, is reported as SKIP with the reason from its log.  A client that
# starts but cannot pull is a failure.
# Variables like rc_ADDR and up_URL are set indirectly (printf -v).
# shellcheck disable=SC2154
set -eu
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
# shellcheck source=../lib/registry.sh
. "$SRCDIR/tests/lib/registry.sh"
# shellcheck source=../lib/regcache.sh
. "$SRCDIR/tests/lib/regcache.sh"
# shellcheck source=../lib/clients.sh
. "$SRCDIR/tests/lib/clients.sh"

require_cmd docker-registry skopeo python3 curl jq timeout setsid unshare
require_regcache
[ "$(id -u)" = 0 ] || skip_all "containerd, podman and dockerd need root here"

N_CTR=7 N_PODMAN=5 N_DOCKER=6
plan $((3 + N_CTR + N_PODMAN + N_DOCKER + 3))

REPO=library/regcache-test
REF=docker.io/$REPO:latest
MREF=docker.io/$REPO:multi

# --- images, upstream, trap proxy, regcache -----------------------------------
# This host's platform (what the clients pick), and another one.
case $(uname -m) in
  x86_64) ARCH=amd64 ;; aarch64 | arm64) ARCH=arm64 ;; ppc64le) ARCH=ppc64le ;;
  s390x) ARCH=s390x ;; riscv64) ARCH=riscv64 ;; *) ARCH=amd64 ;;
esac
if [ "$ARCH" = amd64 ]; then OTHER=arm64; else OTHER=amd64; fi
blob() { printf '%s' "$TESTDIR/img/blobs/sha256/${1#sha256:}"; }
# Sets DIGEST CONFIG LAYERS (single) and MDIGEST MCHILD MCONFIG MLAYERS
# (the manifest list; MCHILD is its $ARCH manifest) and OTHER_LAYERS.
gen_images() {
  local other
  DIGEST=$(mkimage "$TESTDIR/img" --seed clients --layers 2 --layer-size 30000 \
    --platforms "linux/$ARCH")
  MDIGEST=$(mkimage "$TESTDIR/img-multi" --seed clients-multi --layers 1 --layer-size 30000 \
    --platforms "linux/$ARCH,linux/$OTHER" --docker)
  [[ $DIGEST =~ ^sha256:[0-9a-f]{64}$ && $MDIGEST =~ ^sha256:[0-9a-f]{64}$ ]] || return 1
  CONFIG=$(jq -er .config.digest "$(blob "$DIGEST")")
  mapfile -t LAYERS < <(jq -r '.layers[].digest' "$(blob "$DIGEST")")
  mblob() { printf '%s' "$TESTDIR/img-multi/blobs/sha256/${1#sha256:}"; }
  MCHILD=$(jq -er --arg a "$ARCH" '.manifests[] | select(.platform.architecture == $a) | .digest' \
    "$(mblob "$MDIGEST")")
  other=$(jq -er --arg a "$OTHER" '.manifests[] | select(.platform.architecture == $a) | .digest' \
    "$(mblob "$MDIGEST")")
  MCONFIG=$(jq -er .config.digest "$(mblob "$MCHILD")")
  mapfile -t MLAYERS < <(jq -r '.layers[].digest' "$(mblob "$MCHILD")")
  mapfile -t OTHER_LAYERS < <(jq -r '.config.digest, .layers[].digest' "$(mblob "$other")")
  [ "${#LAYERS[@]}" = 2 ] && [ "${#MLAYERS[@]}" = 1 ]
}
rc=0; gen_images >"$TESTDIR/gen.log" 2>&1 || rc=$?
ok $rc "generate a linux/$ARCH OCI image and a $ARCH+$OTHER Docker manifest list"
[ $rc -eq 0 ] || bail_out "cannot generate the test images: $(cat "$TESTDIR/gen.log")"

seed_upstream() {
  registry_start_plain up
  registry_push_dir up "$TESTDIR/img" "$REPO:latest"
  registry_push_dir up "$TESTDIR/img-multi" "$REPO:multi"
  [ "$(registry_manifest_head up "$REPO" latest | cut -d' ' -f1)" = "$DIGEST" ] &&
    [ "$(registry_manifest_head up "$REPO" multi | cut -d' ' -f1)" = "$MDIGEST" ]
}
rc=0; seed_upstream >"$TESTDIR/seed.log" 2>&1 || rc=$?
ok $rc "upstream registry holds $REPO:latest and :multi with the generated digests"
[ $rc -eq 0 ] || { dump_logs; bail_out "cannot seed the upstream: $(tail -n 5 "$TESTDIR/seed.log")"; }

# The trap: an HTTP proxy that logs the request line of every connection and
# answers 403.  Clients get it as HTTP_PROXY/HTTPS_PROXY.
TRAP_PORT=$(free_port)
spawn trap python3 -u -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
print("trap ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        line = c.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
        print("trapped:", line, flush=True)
        c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except OSError as e:
        print("trapped: (error %s)" % e, flush=True)
    c.close()
' "$TRAP_PORT"
wait_for "trap proxy ready" 10 grep -q '^trap ready' "$trap_LOG"
PROXY_ENV=(HTTP_PROXY="http://127.0.0.1:$TRAP_PORT" HTTPS_PROXY="http://127.0.0.1:$TRAP_PORT"
  http_proxy="http://127.0.0.1:$TRAP_PORT" https_proxy="http://127.0.0.1:$TRAP_PORT"
  NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost")

rc=0
regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$TESTDIR/rcdata\",
  \"upstreams\": [{\"name\": \"hub\", \"url\": \"$up_URL\",
                   \"aliases\": [\"docker.io\", \"index.docker.io\"],
                   \"library_prefix\": true}]
}" >"$TESTDIR/rcstart.log" 2>&1 || rc=$?
ok $rc "regcache starts as a docker.io mirror of the upstream"
[ $rc -eq 0 ] || { dump_logs; bail_out "regcache did not start"; }

# --- helpers -------------------------------------------------------------------
# example FILE: contrib/client-config/FILE for this regcache's address.
example() {
  sed "s/127\.0\.0\.1:5000/$rc_ADDR/g" "$SRCDIR/contrib/client-config/$1"
}

# mark: remember where regcache's log ends; since_mark: its access lines since.
_mark=0
mark() { _mark=$(wc -l <"$rc_LOG"); }
since_mark() { tail -n +$((_mark + 1)) "$rc_LOG" | grep -E "$AL_LINE" || true; }
# trap_mark / nothing_escaped: the trap proxy saw no request since trap_mark.
_trap_mark=0
trap_mark() { _trap_mark=$(wc -l <"$trap_LOG"); }
nothing_escaped() {
  local t
  t=$(tail -n +$((_trap_mark + 1)) "$trap_LOG" | grep '^trapped:' || true)
  [ -z "$t" ] || { echo "requests that would have left 127.0.0.1:"; printf '%s\n' "$t"; return 1; }
}

# served QUERY MANIFEST-REF... -- BLOB...: since the mark, regcache answered
# 200 to a GET or HEAD of each manifest (by tag or digest; "a|b" = either)
# and to a GET of each blob, every request with the query string QUERY
# exactly ("" or "?ns=docker.io").
served() {
  local q=$1 lines r errs=0
  shift
  lines=$(since_mark)
  printf '%s\n' "$lines"
  while [ "$1" != -- ]; do
    grep -qE "\"(GET|HEAD) /v2/$REPO/manifests/($1)${q//\?/\\?} HTTP/1\\.[01]\" 200 " <<<"$lines" ||
      { echo "no request for manifest $1${q:+ with $q} answered 200"; errs=1; }
    shift
  done
  shift
  for r; do
    grep -qE "\"GET /v2/$REPO/blobs/$r${q//\?/\\?} HTTP/1\\.[01]\" 200 " <<<"$lines" ||
      { echo "no GET of blob $r${q:+ with $q} answered 200"; errs=1; }
  done
  [ "$errs" -eq 0 ]
}
# served_single / served_multi [QUERY]: the whole image went through regcache;
# for the list, its $ARCH manifest by digest and none of the other platform's blobs.
served_single() { served "${1:-}" "latest|$DIGEST" -- "$CONFIG" "${LAYERS[@]}"; }
# shellcheck disable=SC2120
served_multi() {
  local r
  served "${1:-}" "multi|$MDIGEST" "$MCHILD" -- "$MCONFIG" "${MLAYERS[@]}" || return 1
  for r in "${OTHER_LAYERS[@]}"; do
    if since_mark | grep -qF "/blobs/$r"; then echo "fetched $r of linux/$OTHER"; return 1; fi
  done
}

# pulled NAME RC LOG: report a pull's exit status; on failure show its log.
pulled() {
  ok "$2" "$1"
  [ "$2" -eq 0 ] || { diag "exit status $2:" "$(grep -v 'level=debug' "$3" | tail -n 30)"; dump_logs rc; }
}

isolate_init

# host_state: the host's default places of the clients (compared at the end).
# Left out: /var/lib/containers/cache (skopeo, used by the harness, writes
# there) and /dev/shm but podman's lock file.
HOST_PATHS=(/var/lib/containerd /var/lib/docker /var/lib/containers /opt/containerd
  /run/containerd /run/docker /run/docker.sock /run/containers /run/libpod /run/podman
  /etc/containerd /etc/docker /etc/containers /etc/cni /dev/shm/libpod_lock)
host_state() {
  local p
  for p in "${HOST_PATHS[@]}"; do
    if [ -e "$p" ] || [ -L "$p" ]; then
      find "$p" -maxdepth 4 -path /var/lib/containers/cache -prune \
        -o -printf '%p %y %s %T@\n' 2>/dev/null | sort
    else
      echo "$p absent"
    fi
  done
}
host_state >"$TESTDIR/host-before.txt"

# ==============================================================================
# 1. containerd + ctr
# ==============================================================================
CTR_TESTS=("containerd: daemon starts with its own root, state and socket"
  "containerd: ctr pulls $REF through the hosts.toml mirror"
  "containerd: ctr images ls shows the generated digest"
  "containerd: regcache served manifest, config and layers, every request with ?ns=docker.io"
  "containerd: ctr pulls the manifest list $MREF: list digest, only linux/$ARCH fetched, via ns=docker.io"
  "containerd: with only the _default/hosts.toml example, ctr pulls $REF via regcache, ns=docker.io"
  "containerd: nothing tried to reach a registry other than the mirror")
run_containerd() {
  local d=$TESTDIR/containerd rc
  if ! containerd_start "$d" "${PROXY_ENV[@]}"; then
    skip_n "$CONTAINERD_SKIP" "${CTR_TESTS[@]}"
    return 0
  fi
  mkdir -p "$d/hosts/docker.io" "$d/hosts-default/_default"
  example containerd/docker.io/hosts.toml >"$d/hosts/docker.io/hosts.toml"
  example containerd/_default/hosts.toml >"$d/hosts-default/_default/hosts.toml"
  pass "${CTR_TESTS[0]}"
  trap_mark

  # ctr resolves and fetches itself (then containerd unpacks); --http-dump
  # logs every request it sends.
  mark
  rc=0
  env "${PROXY_ENV[@]}" "${CTR[@]}" --timeout 90s images pull --hosts-dir "$d/hosts" \
    --snapshotter native --http-dump "$REF" >"$d/pull.log" 2>&1 || rc=$?
  pulled "${CTR_TESTS[1]}" $rc "$d/pull.log"
  check "${CTR_TESTS[2]}" ctr_digest "$REF" "$DIGEST"
  check "${CTR_TESTS[3]}" ctr_all_ns served_single

  mark
  ctr_multi() {
    env "${PROXY_ENV[@]}" "${CTR[@]}" --timeout 90s images pull --hosts-dir "$d/hosts" \
      --snapshotter native --http-dump "$MREF" >"$d/pull-multi.log" 2>&1 ||
      { tail -n 30 "$d/pull-multi.log"; return 1; }
    ctr_digest "$MREF" "$MDIGEST" && ctr_all_ns served_multi
  }
  check "${CTR_TESTS[4]}" ctr_multi

  # Again from scratch (--sync: content garbage-collected), through _default.
  ctr_default() {
    "${CTR[@]}" images rm --sync "$REF" || return 1
    mark
    env "${PROXY_ENV[@]}" "${CTR[@]}" --timeout 90s images pull \
      --hosts-dir "$d/hosts-default" --snapshotter native --http-dump "$REF" \
      >"$d/pull-default.log" 2>&1 || { tail -n 30 "$d/pull-default.log"; return 1; }
    ctr_digest "$REF" "$DIGEST" && ctr_all_ns served_single
  }
  check "${CTR_TESTS[5]}" ctr_default
  check "${CTR_TESTS[6]}" ctr_nothing_escaped

  "${CTR[@]}" images rm "$REF" "$MREF" >/dev/null 2>&1 || true
  stop_group containerd
}
# ctr_digest REF DIGEST: `ctr images ls` lists REF with DIGEST.
ctr_digest() {
  local got
  got=$("${CTR[@]}" images ls | awk -v r="$1" '$1 == r { print $3 }')
  [ "$got" = "$2" ] || { echo "ctr images ls has '$got' for $1, generated $2"; return 1; }
}
# ctr_all_ns SERVED_FN: SERVED_FN with ?ns=docker.io, and every access line
# since the mark (but /v2/ pings) carries ns=docker.io.
ctr_all_ns() {
  local bad errs=0
  "$1" "?ns=docker.io" || errs=1
  bad=$(since_mark | grep '"[A-Z]* /v2/[^"]' | grep -vE '\?ns=docker\.io HTTP/1\.[01]"' || true)
  [ -z "$bad" ] || { echo "requests without ns=docker.io:"; printf '%s\n' "$bad"; errs=1; }
  [ "$errs" -eq 0 ]
}
ctr_nothing_escaped() {
  local errs=0
  nothing_escaped || errs=1
  if grep -iE 'registry-1\.docker\.io|index\.docker\.io' "$TESTDIR"/containerd/pull*.log; then
    echo "ctr contacted the real Docker Hub"; errs=1
  fi
  [ "$errs" -eq 0 ]
}
run_containerd

# ==============================================================================
# 2. podman
# ==============================================================================
PODMAN_TESTS=("podman: pulls $REF through the registries.conf mirror"
  "podman: the image has the generated manifest digest and config ID"
  "podman: regcache served the manifest, config and layers"
  "podman: pulls the manifest list $MREF: list digest, linux/$ARCH config ID, only linux/$ARCH fetched"
  "podman: nothing tried to reach a registry other than the mirror")
run_podman() {
  local d=$TESTDIR/podman rc
  if ! command -v podman >/dev/null; then
    skip_n "podman not installed" "${PODMAN_TESTS[@]}"; return 0
  fi
  [ -z "$NO_ISOLATE" ] || { skip_n "$NO_ISOLATE" "${PODMAN_TESTS[@]}"; return 0; }
  mkdir -p "$d/root" "$d/runroot" "$d/tmp" "$d/home" "$d/run" "$d/net"
  chmod 700 "$d/run"
  { echo 'unqualified-search-registries = []'; example registries.conf; } >"$d/registries.conf"
  cat >"$d/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$d/root"
runroot = "$d/runroot"
EOF
  # No systemd, no journald, no SHM locks in /dev/shm, nothing in /run/libpod.
  cat >"$d/containers.conf" <<EOF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
lock_type = "file"
tmp_dir = "$d/tmp"
static_dir = "$d/root/libpod"
volume_path = "$d/root/volumes"
[network]
network_backend = "cni"
network_config_dir = "$d/net"
EOF
  echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$d/policy.json"
  echo '{}' >"$d/run/auth.json"
  PODMAN=(env "${PROXY_ENV[@]}" HOME="$d/home" XDG_RUNTIME_DIR="$d/run"
    XDG_CONFIG_HOME="$d/home/.config" XDG_DATA_HOME="$d/home/.local/share"
    TMPDIR="$d/tmp" REGISTRY_AUTH_FILE="$d/run/auth.json"
    CONTAINERS_REGISTRIES_CONF="$d/registries.conf" CONTAINERS_CONF="$d/containers.conf"
    CONTAINERS_STORAGE_CONF="$d/storage.conf"
    timeout -k 5 90 "${ISOLATE[@]}" podman --root "$d/root" --runroot "$d/runroot"
    --storage-driver vfs --tmpdir "$d/tmp" --cgroup-manager cgroupfs
    --events-backend none --network-config-dir "$d/net")
  trap_mark

  # --log-level debug: the log names every URL podman requests.
  mark
  rc=0
  "${PODMAN[@]}" --log-level debug pull --signature-policy "$d/policy.json" "$REF" \
    >"$d/pull.log" 2>&1 || rc=$?
  pulled "${PODMAN_TESTS[0]}" $rc "$d/pull.log"
  check "${PODMAN_TESTS[1]}" podman_image "$REF" "$DIGEST" "$CONFIG"
  check "${PODMAN_TESTS[2]}" served_single

  mark
  podman_multi() {
    "${PODMAN[@]}" --log-level debug pull --signature-policy "$d/policy.json" "$MREF" \
      >"$d/pull-multi.log" 2>&1 || { grep -v level=debug "$d/pull-multi.log" | tail; return 1; }
    podman_image "$MREF" "$MDIGEST" "$MCONFIG" && served_multi ""
  }
  check "${PODMAN_TESTS[3]}" podman_multi
  check "${PODMAN_TESTS[4]}" podman_nothing_escaped
  "${PODMAN[@]}" rmi -a >/dev/null 2>&1 || true
}
# podman_image REF DIGEST CONFIG: podman has REF with manifest (or list)
# digest DIGEST and image ID = CONFIG.
podman_image() {
  local j
  j=$("${PODMAN[@]}" image inspect "$1")
  printf '%s\n' "$j"
  jq -e --arg d "$2" --arg c "${3#sha256:}" '.[0].Digest == $d and .[0].Id == $c' <<<"$j"
}
podman_nothing_escaped() {
  local errs=0
  nothing_escaped || errs=1
  if grep -E 'registry-1\.docker\.io|index\.docker\.io|Trying to access \\"docker\.io/' \
      "$TESTDIR"/podman/pull*.log; then
    echo "podman went to the real Docker Hub"; errs=1
  fi
  [ "$errs" -eq 0 ]
}
run_podman

# ==============================================================================
# 3. dockerd
# ==============================================================================
DOCKER_TESTS=("docker: dockerd starts with its own data-root, exec-root and socket"
  "docker: docker pull regcache-test:latest goes through the registry-mirrors of daemon.json"
  "docker: the image has RepoDigest regcache-test@<generated digest> and the config ID"
  "docker: regcache served the manifest, config and layers"
  "docker: pulls the manifest list regcache-test:multi: list digest, linux/$ARCH config ID, only linux/$ARCH fetched"
  "docker: nothing tried to reach a registry other than the mirror")
run_docker() {
  local d=$TESTDIR/docker rc key
  if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    skip_n "dockerd or docker not installed" "${DOCKER_TESTS[@]}"; return 0
  fi
  [ -z "$NO_ISOLATE" ] || { skip_n "$NO_ISOLATE" "${DOCKER_TESTS[@]}"; return 0; }
  mkdir -p "$d/data" "$d/exec" "$d/home/.docker"
  # The example's registry-mirrors; and dockerd before 23.0 writes
  # /etc/docker/key.json unless told otherwise, which only daemon.json can do.
  key={}
  case $(dockerd --version 2>/dev/null) in
    *"version "1[0-9].* | *"version "2[0-2].*) key="{\"deprecated-key-path\": \"$d/key.json\"}" ;;
  esac
  example daemon.json | jq --argjson k "$key" '. + $k' >"$d/daemon.json"
  DOCKER=(env HOME="$d/home" DOCKER_CONFIG="$d/home/.docker" timeout -k 5 90
    docker -H "unix://$d/docker.sock")
  # dockerd starts its own containerd (under --exec-root and --data-root), in
  # dockerd's process group.  The mirror (plain HTTP) is in daemon.json.
  spawn dockerd env "${PROXY_ENV[@]}" DOCKER_TMPDIR="$d/data/tmp" setsid "${ISOLATE[@]}" \
    dockerd --config-file "$d/daemon.json" --data-root "$d/data" --exec-root "$d/exec" \
    --pidfile "$d/docker.pid" -H "unix://$d/docker.sock" --storage-driver vfs \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --bridge=none --userland-proxy=false --exec-opt native.cgroupdriver=cgroupfs
  wait_for "dockerd socket" 60 up_or_dead "$dockerd_PID" "${DOCKER[@]}" version || true
  if ! "${DOCKER[@]}" version >"$d/version.log" 2>&1; then
    skip_n "dockerd cannot start here: $(reason_from "$dockerd_LOG")" "${DOCKER_TESTS[@]}"
    stop_group dockerd
    return 0
  fi
  pass "${DOCKER_TESTS[0]}"
  trap_mark

  # No registry host in the name: docker.io, so the mirror.
  mark
  rc=0
  "${DOCKER[@]}" pull regcache-test:latest >"$d/pull.log" 2>&1 || rc=$?
  pulled "${DOCKER_TESTS[1]}" $rc "$d/pull.log"
  check "${DOCKER_TESTS[2]}" docker_image regcache-test:latest "$DIGEST" "$CONFIG"
  check "${DOCKER_TESTS[3]}" served_single

  mark
  docker_multi() {
    "${DOCKER[@]}" pull regcache-test:multi >"$d/pull-multi.log" 2>&1 ||
      { cat "$d/pull-multi.log"; return 1; }
    docker_image regcache-test:multi "$MDIGEST" "$MCONFIG" && served_multi ""
  }
  check "${DOCKER_TESTS[4]}" docker_multi
  check "${DOCKER_TESTS[5]}" docker_nothing_escaped

  "${DOCKER[@]}" rmi regcache-test:latest regcache-test:multi >/dev/null 2>&1 || true
  stop_group dockerd
}
# docker_image NAME DIGEST CONFIG: RepoDigests has regcache-test@DIGEST and
# the image ID is CONFIG.
docker_image() {
  local j
  j=$("${DOCKER[@]}" image inspect "$1")
  printf '%s\n' "$j"
  jq -e --arg d "regcache-test@$2" --arg c "$3" \
    '(.[0].RepoDigests | index($d)) != null and .[0].Id == $c' <<<"$j"
}
docker_nothing_escaped() {
  local errs=0
  nothing_escaped || errs=1
  # dockerd logs a fallback from the mirror to the next endpoint.
  if grep -iE 'registry-1\.docker\.io|index\.docker\.io|falling back|Attempting next endpoint' \
      "$dockerd_LOG"; then
    echo "dockerd tried another endpoint than the mirror"; errs=1
  fi
  [ "$errs" -eq 0 ]
}
run_docker

# ==============================================================================
# Nothing left behind.
# ==============================================================================
# No process still runs with $TESTDIR in its command line but the ones
# spawn keeps (registry, trap, regcache); no mount under $TESTDIR.
leftovers() {
  local p bad=0
  if mount | grep -F "$TESTDIR"; then echo "mounts left under $TESTDIR"; bad=1; fi
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" != $$ ] || continue
    case " ${_spawn_pids[*]} " in *" ${p#/proc/} "*) continue ;; esac
    if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$TESTDIR/"; then
      echo "process left: ${p#/proc/} $(tr '\0' ' ' <"$p/cmdline")"; bad=1
    fi
  done
  [ "$bad" -eq 0 ]
}
untouched() {
  host_state >"$TESTDIR/host-after.txt"
  diff "$TESTDIR/host-before.txt" "$TESTDIR/host-after.txt"
}
check "no client process or mount is left under the test directory" leftovers
check "the clients changed nothing in the host's default state and config places" untouched
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

#!/bin/bash
# bench/run.sh -- regcache's benchmark suite (not part of `make check`).
#
# In one run on this machine, on 127.0.0.1 only, it starts:
#   up      Debian's docker-registry (distribution 2.8), the upstream
#   proxy   a second docker-registry in pull-through cache mode
#           (proxy: remoteurl: up), with its own storage: the reference mirror
#   nginx   serving the same blob and manifest files statically (sendfile):
#           the physical reference
#   rc      regcache, upstream "up"
# and measures, for each where it means something:
#   1. warm 512 MB blob GET throughput (curl, best of N after one warming GET)
#   2. manifest GETs by tag and by digest, 64 connections, 10 s (wrk):
#      requests/s and p99 latency
#   3. cold pull of a ~60 MB 5-layer image with skopeo (fresh mirror data
#      dirs each run), time vs pulling it directly from the upstream
#   4. 20 concurrent cold pulls of one fresh image through each mirror:
#      upstream GETs per blob (from the upstream's log), copies verified,
#      the mirror's peak RSS (VmHWM)
# then prints the figures, the ratios and which targets are met.  It
# measures; it never fails because a target is missed (exit 0), only when it
# cannot run (missing tools: exit 2; setup failure: non-zero).
#
# Usage (from the top of the tree, regcache built):
#   bench/deps.sh        # once, as root: apt-get install the tools
#   bench/run.sh         # ~4-6 minutes on 2 cores
# Environment knobs (defaults are the issue's figures):
#   REGCACHE=./src/regcache  BENCH_BLOB_MB=512  BENCH_RUNS=3  BENCH_PULL_RUNS=5
#   BENCH_WRK_SECONDS=10  BENCH_WRK_CONNECTIONS=64  BENCH_CLIENTS=20
#   BENCH_LAYERS=5  BENCH_LAYER_SIZE=12000000
#   BENCH_OUT=FILE       also write the summary (Markdown tables) to FILE
#   BENCH_TMPDIR=DIR     parent of the work directory (/var/tmp/regcache-bench)
#   BENCH_PULLDIR=DIR    where skopeo writes its copies (default: a fresh dir
#                        in /dev/shm, so disk writeback adds no noise to the
#                        pull times; the work dir when /dev/shm is missing)
#   BENCH_REGCACHE_REV=TEXT  what the binary was built from, for the summary
#                        (e.g. "git 1a2b3c4, clean"), when not the work tree
#   KEEP=1               keep the work directory (logs, configs)
# Progress goes to stderr, the summary to stdout.
# Variables like up_URL and rc_PID are set indirectly (printf -v).
# shellcheck disable=SC2154
# shellcheck source-path=SCRIPTDIR
set -eu

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$BENCH_DIR/.." && pwd)

# --- tools ----------------------------------------------------------------------
# command -> Debian package; checked before anything starts.
PATH=$PATH:/usr/sbin:/sbin
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need docker-registry docker-registry
need skopeo skopeo
need nginx nginx-light
need wrk wrk
need python3 python3
need curl curl
need jq jq
need sha256sum coreutils
need timeout coreutils
need gzip gzip
need awk mawk
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: missing tools; install them with:  apt-get install ${missing[*]}" >&2
  echo "bench: (or run bench/deps.sh as root: it installs everything the benchmark uses)" >&2
  exit 2
fi
HAVE_HYPERFINE=0
command -v hyperfine >/dev/null 2>&1 && HAVE_HYPERFINE=1

if [ -z "${REGCACHE:-}" ]; then
  if [ -x ./src/regcache ]; then REGCACHE=$PWD/src/regcache; else REGCACHE=$TOP/src/regcache; fi
fi
case $REGCACHE in /*) ;; *) REGCACHE=$PWD/$REGCACHE ;; esac
if [ ! -x "$REGCACHE" ]; then
  echo "bench: regcache not built ($REGCACHE); build it or set REGCACHE" >&2
  exit 2
fi

BLOB_MB=${BENCH_BLOB_MB:-512}
RUNS=${BENCH_RUNS:-3}
PULL_RUNS=${BENCH_PULL_RUNS:-5}
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}
WRK_CONNS=${BENCH_WRK_CONNECTIONS:-64}
CLIENTS=${BENCH_CLIENTS:-20}
LAYERS=${BENCH_LAYERS:-5}
LAYER_SIZE=${BENCH_LAYER_SIZE:-12000000}
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json

# --- the harness: work dir, spawn/stop, cleanup of everything started ------------
export TOP_SRCDIR=$TOP
# The work dir (~2 GB at the default sizes) goes under a parent of its own,
# not straight into /tmp, where other sessions' test clean-ups sweep
# regcache-test.* directories.
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp/regcache-bench}
mkdir -p "$BENCH_TMPDIR"
export TMPDIR=$BENCH_TMPDIR
# shellcheck source=../tests/lib/common.sh
. "$TOP/tests/lib/common.sh"
# shellcheck source=../tests/lib/registry.sh
. "$TOP/tests/lib/registry.sh"
# shellcheck source=../tests/lib/regcache.sh
. "$TOP/tests/lib/regcache.sh"
# shellcheck source=../tests/lib/verify.sh
. "$TOP/tests/lib/verify.sh"

# Others rebuild src/regcache while we run: measure one fixed copy.
cp "$REGCACHE" "$TESTDIR/regcache"
REGCACHE_SRC=$REGCACHE
REGCACHE=$TESTDIR/regcache

# skopeo's copies (up to CLIENTS x the image at once) go to tmpfs: the
# pull times then measure the network path, not this disk's writeback.
if [ -n "${BENCH_PULLDIR:-}" ]; then PULLDIR=$(mktemp -d "$BENCH_PULLDIR/regcache-bench-pulls.XXXXXX")
elif [ -d /dev/shm ] && [ -w /dev/shm ]; then PULLDIR=$(mktemp -d /dev/shm/regcache-bench-pulls.XXXXXX)
else PULLDIR=$TESTDIR/pulls; mkdir -p "$PULLDIR"; fi
# common.sh's _cleanup stops everything and removes TESTDIR; remove
# PULLDIR too, keeping the exit status _cleanup sees.
_bench_exit() { local rc=$?; [ "${KEEP:-0}" = 1 ] || rm -rf "$PULLDIR"; (exit "$rc"); _cleanup; }
trap _bench_exit EXIT

T0=$SECONDS
log() { printf '[bench %3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
now() { date +%s.%N; }
# fmt VALUE DECIMALS: print a number, or VALUE unchanged when not numeric.
fmt() { if [[ $1 =~ ^[0-9.]+$ ]]; then printf "%.${2}f" "$1"; else printf '%s' "$1"; fi; }
isnum() { [[ $1 =~ ^[0-9]*\.?[0-9]+$ ]]; }
# ratio A B: A/B with 2 decimals, or "n/a".
ratio() { if isnum "$1" && isnum "$2" && awk -v b="$2" 'BEGIN { exit !(b > 0) }'; then
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; else printf 'n/a'; fi; }
# ge A B / le A B / lt A B: numeric comparisons (false when not numeric).
ge() { isnum "$1" && isnum "$2" && awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
le() { isnum "$1" && isnum "$2" && awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
lt() { isnum "$1" && isnum "$2" && awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
# field "A B C" N: the Nth (from 0) word, or n/a.
field() { local a; read -ra a <<<"$1"; printf '%s' "${a[$2]:-n/a}"; }
median() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g |
  awk '{ v[NR] = $1 } END { if (NR == 0) print "err"; else if (NR % 2) print v[(NR + 1) / 2];
                            else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# --- machine and versions ---------------------------------------------------------
MACHINE_CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MACHINE_MEM=$(awk '$1 == "MemTotal:" { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
MACHINE_DEBIAN=$(cat /etc/debian_version 2>/dev/null || echo "?")
GIT_HEAD=$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo "?")
GIT_DIRTY=$(git -C "$TOP" status --porcelain --untracked-files=no 2>/dev/null | grep -c . || true)
V_RC=$("$REGCACHE" version 2>&1 | head -n1)
V_REG=$(docker-registry --version 2>&1 | head -n1)
V_NGINX=$(nginx -v 2>&1 | head -n1)
V_SKOPEO=$(skopeo --version 2>&1 | head -n1)
V_WRK=$(wrk -v 2>&1 | head -n1 | awk '{ print $1, $2 }')
V_CURL=$(curl --version | head -n1 | awk '{ print $1, $2 }')
ASAN=no
built_with_sanitizers && ASAN=yes

# --- upstream, test data ----------------------------------------------------------
log "work dir $TESTDIR; regcache $REGCACHE_SRC ($V_RC), git $GIT_HEAD"
registry_start_plain up
UP=$up_HOST

SIZE=$((BLOB_MB * 1024 * 1024))
BIG_REPO=bench/big
log "generating a $BLOB_MB MiB random blob"
head -c "$SIZE" /dev/urandom >"$TESTDIR/big.blob"
BIG_DIGEST=sha256:$(sha256sum <"$TESTDIR/big.blob" | cut -d' ' -f1)

# upload_blob REPO FILE DIGEST: monolithic upload to the upstream.
upload_blob() {
  local repo=$1 file=$2 digest=$3 loc
  loc=$(tcurl -f -X POST -D - -o /dev/null "$up_URL/v2/$repo/blobs/uploads/" | tr -d '\r' |
        awk -F': ' 'tolower($1) == "location" { print $2 }')
  [ -n "$loc" ] || { echo "no Location from the upload POST" >&2; return 1; }
  case $loc in /*) loc=$up_URL$loc ;; esac
  case $loc in *\?*) loc="$loc&digest=$digest" ;; *) loc="$loc?digest=$digest" ;; esac
  curl -q -sS -f --max-time 300 -X PUT -H 'Content-Type: application/octet-stream' \
    -T "$file" -o /dev/null "$loc"
}
log "uploading it to the upstream"
upload_blob "$BIG_REPO" "$TESTDIR/big.blob" "$BIG_DIGEST"

# Two images of LAYERS x LAYER_SIZE: one for the cold pulls (fig. 3) and
# the manifest load (fig. 2), a fresh one for the concurrent pulls (fig. 4).
log "generating and pushing two ${LAYERS}-layer images of $((LAYERS * LAYER_SIZE / 1000000)) MB"
PULL_REPO=bench/pull CONC_REPO=bench/conc
PULL_DIGEST=$(mkimage "$TESTDIR/img-pull" --seed bench-pull --layers "$LAYERS" --layer-size "$LAYER_SIZE")
CONC_DIGEST=$(mkimage "$TESTDIR/img-conc" --seed bench-conc --layers "$LAYERS" --layer-size "$LAYER_SIZE")
registry_push_dir up "$TESTDIR/img-pull" "$PULL_REPO:latest"
registry_push_dir up "$TESTDIR/img-conc" "$CONC_REPO:latest"
# image_blobs LAYOUT DIGEST: the config and layer digests of that manifest.
image_blobs() { jq -r '.config.digest, .layers[].digest' "$1/blobs/sha256/${2#sha256:}"; }
IMG_BYTES=$(jq '[.config.size, .layers[].size] | add' "$TESTDIR/img-pull/blobs/sha256/${PULL_DIGEST#sha256:}")

# --- nginx: the same files, static ---------------------------------------------------
NGX=$TESTDIR/nginx
mkdir -p "$NGX/www/v2/$BIG_REPO/blobs" "$NGX/www/v2/$PULL_REPO/manifests" "$NGX/tmp"
ln "$TESTDIR/big.blob" "$NGX/www/v2/$BIG_REPO/blobs/$BIG_DIGEST" 2>/dev/null ||
  cp "$TESTDIR/big.blob" "$NGX/www/v2/$BIG_REPO/blobs/$BIG_DIGEST"
cp "$TESTDIR/img-pull/blobs/sha256/${PULL_DIGEST#sha256:}" "$NGX/www/v2/$PULL_REPO/manifests/latest"
cp "$TESTDIR/img-pull/blobs/sha256/${PULL_DIGEST#sha256:}" "$NGX/www/v2/$PULL_REPO/manifests/$PULL_DIGEST"
NGX_PORT=$(free_port)
cat >"$NGX/nginx.conf" <<EOF
# The work dir is private to root: workers run as root to read it.
user root;
daemon off;
worker_processes auto;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  client_body_temp_path $NGX/tmp/body;
  proxy_temp_path $NGX/tmp/proxy;
  fastcgi_temp_path $NGX/tmp/fastcgi;
  uwsgi_temp_path $NGX/tmp/uwsgi;
  scgi_temp_path $NGX/tmp/scgi;
  types { }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGX_PORT;
    root $NGX/www;
    location ~ /manifests/ { default_type $OCI_MANIFEST; }
  }
}
EOF
spawn nginx nginx -p "$NGX" -e "$NGX/error.log" -c "$NGX/nginx.conf"
wait_http "http://127.0.0.1:$NGX_PORT/"
NGX_HOST=127.0.0.1:$NGX_PORT

# --- the mirrors: started anew with empty data whenever a run must be cold -----------
proxy_fresh() {
  stop proxy
  rm -rf "$TESTDIR/proxy"
  _registry_start proxy plain http "" "proxy:
  remoteurl: $up_URL"
  PROXY_HOST=$proxy_HOST
}

# regcache's configuration: the one of the issue, less the keys this build
# does not know yet (tag_ttl and cache are being added): probe with
# check-config and note what had to go.
RC_NOTE=
rc_config() { # TAG_TTL(0|1) CACHE(0|1)
  local up="{\"name\": \"up\", \"url\": \"$up_URL\"" top=""
  [ "$1" = 0 ] || up="$up, \"tag_ttl\": 300"
  [ "$2" = 0 ] || top=", \"cache\": {\"max_bytes\": \"10GiB\"}"
  printf '{"listen": ["127.0.0.1:@PORT@"], "data_dir": "%s", "upstreams": [%s}]%s}' \
    "$TESTDIR/rcdata" "$up" "$top"
}
RC_CONFIG=
for combo in "1 1" "1 0" "0 1" "0 0"; do
  # shellcheck disable=SC2086
  cfg=$(rc_config $combo)
  printf '%s\n' "${cfg//@PORT@/5000}" >"$TESTDIR/probe.json"
  if "$REGCACHE" check-config -c "$TESTDIR/probe.json" >"$TESTDIR/probe.out" 2>&1; then
    RC_CONFIG=$cfg
    case $combo in
      "1 1") ;;
      "1 0") RC_NOTE="\`cache\` rejected by this build (dropped)" ;;
      "0 1") RC_NOTE="\`tag_ttl\` rejected by this build (dropped)" ;;
      "0 0") RC_NOTE="\`tag_ttl\` and \`cache\` rejected by this build (dropped)" ;;
    esac
    break
  fi
  cat "$TESTDIR/probe.out" >>"$TESTDIR/probe.log"
done
if [ -z "$RC_CONFIG" ]; then
  log "regcache rejects even the minimal configuration:"; cat "$TESTDIR/probe.log" >&2; exit 1
fi
[ -z "$RC_NOTE" ] || log "note: $RC_NOTE; check-config said: $(sort -u "$TESTDIR/probe.log" | tr '\n' ' ')"

RC_UP=0
rc_fresh() {
  stop rc
  rm -rf "$TESTDIR/rcdata"
  mkdir -p "$TESTDIR/rcdata"
  RC_UP=0
  if regcache_start rc "$RC_CONFIG"; then RC_UP=1; RC_HOST=$rc_ADDR
  else log "regcache did not start (see rc.log)"; RC_HOST=127.0.0.1:1; fi
}

# host_of NAME: address of a server by its short name.
host_of() {
  case $1 in
    up) echo "$UP" ;; proxy) echo "$PROXY_HOST" ;; nginx) echo "$NGX_HOST" ;; rc) echo "$RC_HOST" ;;
  esac
}
pid_of() { case $1 in proxy) echo "$proxy_PID" ;; rc) echo "$rc_PID" ;; esac; }
# rss_kb PID FIELD: VmHWM or VmRSS in kB.
rss_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true; }

# --- upstream log: which GETs reached the upstream ------------------------------------
up_lines() { wc -l <"$up_LOG"; }
# up_settle: wait until the upstream's log has not grown for 1.5 s (bounded
# 15 s): distribution logs a GET once it has written the body, and the
# reference proxy may still be fetching in the background.
up_settle() {
  local prev=-1 cur stable=0 i
  for ((i = 0; i < 75; i++)); do
    cur=$(up_lines)
    if [ "$cur" = "$prev" ]; then stable=$((stable + 1)); [ "$stable" -lt 8 ] || return 0
    else stable=0; fi
    prev=$cur
    sleep 0.2
  done
}
# up_get_uris FROM_LINE [METHOD_ERE]: the URIs of the upstream's requests
# (GETs unless told) logged after that line.
up_get_uris() {
  tail -n +$(($1 + 1)) "$up_LOG" | grep -F 'msg="response completed"' |
    grep -E "http\\.request\\.method=(${2:-GET}) " | grep -oE 'http\.request\.uri=("[^"]*"|[^ ]*)' |
    sed 's/^http\.request\.uri=//; s/^"//; s/"$//' || true
}
# blob_gets FROM_LINE REPO DIGEST...: "min max total" upstream GETs per blob.
blob_gets() {
  local from=$1 repo=$2 uris d c min=-1 max=0 total=0
  shift 2
  uris=$(up_get_uris "$from")
  for d in "$@"; do
    c=$(grep -cE "^/v2/$repo/blobs/$d(\\?|\$)" <<<"$uris" || true)
    total=$((total + c))
    [ "$c" -le "$max" ] || max=$c
    [ "$min" -ge 0 ] && [ "$c" -ge "$min" ] || min=$c
  done
  echo "$min $max $total"
}
manifest_gets() { up_get_uris "$1" | grep -cE "^/v2/$2/manifests/" || true; }

# --- skopeo as a command (so `timeout` and spawn can run it) ---------------------------
SKOPEO=(env HOME="$TESTDIR/home" XDG_RUNTIME_DIR="$TESTDIR/run"
  XDG_CONFIG_HOME="$TESTDIR/home/.config" DOCKER_CONFIG="$TESTDIR/home/.docker"
  REGISTRY_AUTH_FILE="$TESTDIR/run/containers/auth.json"
  CONTAINERS_REGISTRIES_CONF="$TESTDIR/registries.conf" TMPDIR="$TESTDIR/tmp"
  skopeo --policy "$TESTDIR/policy.json" --registries.d "$TESTDIR/registries.d"
  --registries-conf "$TESTDIR/registries.conf")
# pull HOST REPO DIR: skopeo copy docker://HOST/REPO:latest dir:DIR (bounded).
pull() {
  rm -rf "$3"
  timeout -k 5 180 "${SKOPEO[@]}" copy --quiet --src-tls-verify=false --src-no-creds \
    "docker://$1/$2:latest" "dir:$3"
}
# timed_pull HOST REPO DIR DIGEST: seconds, or "err" (pull or verify failed).
timed_pull() {
  local t1 t2
  t1=$(now)
  if ! pull "$1" "$2" "$3" >>"$TESTDIR/pulls.log" 2>&1; then echo err; return 0; fi
  t2=$(now)
  if ! verify_dir_digests "$3" "$4" 2>>"$TESTDIR/pulls.log"; then echo err; return 0; fi
  awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.3f", b - a }'
}

# ===================================================================================
# Figure 3: cold pull of the image, vs direct from the upstream.
log "fig. 3: cold pull of $PULL_REPO ($IMG_BYTES bytes, $LAYERS layers), $PULL_RUNS runs each"
pull "$UP" "$PULL_REPO" "$PULLDIR/pull-warmup" >/dev/null 2>&1 || true   # page cache, binaries
rm -rf "$PULLDIR/pull-warmup"
T_DIRECT=() T_PROXY=() T_RC=()
G3_PROXY="n/a" G3_RC="n/a"
PULL_BLOBS=$(image_blobs "$TESTDIR/img-pull" "$PULL_DIGEST")
for ((r = 1; r <= PULL_RUNS; r++)); do
  T_DIRECT+=("$(timed_pull "$UP" "$PULL_REPO" "$PULLDIR/p-direct" "$PULL_DIGEST")")
  rm -rf "$PULLDIR/p-direct"
  proxy_fresh
  up_settle; n0=$(up_lines)
  T_PROXY+=("$(timed_pull "$PROXY_HOST" "$PULL_REPO" "$PULLDIR/p-proxy" "$PULL_DIGEST")")
  up_settle
  # shellcheck disable=SC2086
  G3_PROXY=$(blob_gets "$n0" "$PULL_REPO" $PULL_BLOBS)
  rm -rf "$PULLDIR/p-proxy"
  rc_fresh
  n0=$(up_lines)
  if [ "$RC_UP" = 1 ]; then
    T_RC+=("$(timed_pull "$RC_HOST" "$PULL_REPO" "$PULLDIR/p-rc" "$PULL_DIGEST")")
  else T_RC+=(err); fi
  up_settle
  # shellcheck disable=SC2086
  G3_RC=$(blob_gets "$n0" "$PULL_REPO" $PULL_BLOBS)
  rm -rf "$PULLDIR/p-rc"
  log "  run $r: direct ${T_DIRECT[-1]} s, proxy ${T_PROXY[-1]} s, regcache ${T_RC[-1]} s"
done
P3_DIRECT=$(median "${T_DIRECT[@]}")
P3_PROXY=$(median "${T_PROXY[@]}")
P3_RC=$(median "${T_RC[@]}")
printf '%s\n' "${T_DIRECT[@]}" "${T_PROXY[@]}" "${T_RC[@]}" | grep -qx err && P3_ERR=1 || P3_ERR=0
[ "$P3_ERR" = 0 ] || log "  some pulls failed or did not verify: see $TESTDIR/pulls.log"
HF_DIRECT=
if [ "$HAVE_HYPERFINE" = 1 ]; then
  # A cross-check of the noise of one pull: hyperfine on the direct pull.
  hf_cmd=$(printf '%q ' timeout 180 "${SKOPEO[@]}" copy --quiet --src-tls-verify=false \
    --src-no-creds "docker://$UP/$PULL_REPO:latest" "dir:$PULLDIR/p-hf")
  if timeout 120 hyperfine --style none --warmup 1 --runs 5 \
      --prepare "rm -rf $(printf '%q' "$PULLDIR/p-hf")" \
      --export-json "$TESTDIR/hyperfine.json" "$hf_cmd" >"$TESTDIR/hyperfine.log" 2>&1; then
    HF_DIRECT=$(jq -r '.results[0] | "\(.mean * 1000 | round / 1000) s ± \(.stddev * 1000 | round / 1000) s"' \
      "$TESTDIR/hyperfine.json")
  fi
  rm -rf "$PULLDIR/p-hf"
fi

# ===================================================================================
# Figure 2: manifest GETs by tag and by digest (the mirrors are warm from fig. 3).
# wrk_run HOST PATH -> "rps p99_ms errors requests" (errors: non-2xx + socket
# errors; requests: how many wrk completed), or "err err err err"
wrk_run() {
  local out
  if ! out=$(timeout $((WRK_SECONDS + 30)) wrk -t2 -c"$WRK_CONNS" -d"${WRK_SECONDS}s" --latency \
      -H "Accept: $OCI_MANIFEST" "http://$1$2" 2>&1); then
    echo "err err err err"; return 0
  fi
  printf '%s\n' "=== $1$2" "$out" >>"$TESTDIR/wrk.log"
  awk '
    /^Requests\/sec:/ { rps = $2 }
    / requests in / { n = $1 }
    $1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
                  p99 = (u == "us") ? v / 1000 : (u == "ms") ? v : (u == "s") ? v * 1000 : (u == "m") ? v * 60000 : "" }
    /Non-2xx or 3xx responses:/ { err += $NF }
    /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    END { printf "%s %s %d %s\n", (rps == "" ? "err" : rps), (p99 == "" ? "err" : sprintf("%.2f", p99)), err, (n == "" ? "err" : n) }
  ' <<<"$out"
}
# warm_manifest HOST REF: one GET; succeeds when the body's digest is the image's.
warm_manifest() {
  local d
  d=$(tcurl -f -H "Accept: $OCI_MANIFEST" "http://$1/v2/$PULL_REPO/manifests/$2" | sha256sum | cut -d' ' -f1)
  [ "sha256:$d" = "$PULL_DIGEST" ]
}
log "fig. 2: manifest GETs, $WRK_CONNS connections, ${WRK_SECONDS}s per run"
declare -A M_TAG M_DIG U_TAG U_DIG
# wrk_mirror SERVER PATH: wrk_run, and for the mirrors how many requests
# reached the upstream per request served (sets WRK_OUT and WRK_UP).
wrk_mirror() {
  local n0 n total
  n0=$(up_lines)
  WRK_OUT=$(wrk_run "$(host_of "$1")" "$2")
  WRK_UP=n/a
  case $1 in proxy | rc) ;; *) return 0 ;; esac
  up_settle
  n=$(up_get_uris "$n0" '[A-Z]+' | grep -cE "^/v2/$PULL_REPO/manifests/" || true)
  total=$(field "$WRK_OUT" 3)
  WRK_UP=$(ratio "$n" "$total")
}
for s in up proxy nginx rc; do
  h=$(host_of "$s")
  M_TAG[$s]="err err err err" M_DIG[$s]="err err err err" U_TAG[$s]=n/a U_DIG[$s]=n/a
  if [ "$s" = rc ] && [ "$RC_UP" != 1 ]; then continue; fi
  up_settle
  if warm_manifest "$h" latest; then
    wrk_mirror "$s" "/v2/$PULL_REPO/manifests/latest"; M_TAG[$s]=$WRK_OUT U_TAG[$s]=$WRK_UP
  fi
  if warm_manifest "$h" "$PULL_DIGEST"; then
    wrk_mirror "$s" "/v2/$PULL_REPO/manifests/$PULL_DIGEST"; M_DIG[$s]=$WRK_OUT U_DIG[$s]=$WRK_UP
  fi
  log "  $s: by tag ${M_TAG[$s]}, by digest ${M_DIG[$s]} (req/s p99-ms errors requests); upstream requests per GET ${U_TAG[$s]} / ${U_DIG[$s]}"
done
rc_alive() { [ "$RC_UP" = 1 ] && regcache_alive rc; }
rc_alive || { [ "$RC_UP" != 1 ] || log "  regcache is no longer running"; RC_UP=0; }

# ===================================================================================
# Figure 1: warm blob GET throughput.
# blob_speed HOST: best MB/s of RUNS GETs after one warming GET (whose
# content is checked), or "err".
blob_speed() {
  local h=$1 url best=0 i out code bytes speed d
  url="http://$h/v2/$BIG_REPO/blobs/$BIG_DIGEST"
  d=$(curl -q -sS -f --max-time 300 "$url" | sha256sum | cut -d' ' -f1) || true
  if [ "sha256:$d" != "$BIG_DIGEST" ]; then echo err; return 0; fi
  for ((i = 0; i < RUNS; i++)); do
    out=$(curl -q -s --max-time 300 -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' "$url") || true
    read -r code bytes speed <<<"$out"
    if [ "$code" != 200 ] || [ "$bytes" != "$SIZE" ]; then echo err; return 0; fi
    speed=$(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1e6 }')
    ge "$best" "$speed" || best=$speed
  done
  echo "$best"
}
log "fig. 1: warm $BLOB_MB MiB blob GET, best of $RUNS after one warming GET"
declare -A BLOB RSS12
for s in up proxy nginx rc; do
  if [ "$s" = rc ] && [ "$RC_UP" != 1 ]; then BLOB[$s]=err; continue; fi
  BLOB[$s]=$(blob_speed "$(host_of "$s")")
  log "  $s: ${BLOB[$s]} MB/s"
done
for s in proxy rc; do RSS12[$s]=$(rss_kb "$(pid_of "$s")" VmHWM); done
rc_alive || { [ "$RC_UP" != 1 ] || log "  regcache is no longer running"; RC_UP=0; }

# ===================================================================================
# Figure 4: CLIENTS concurrent cold pulls of a fresh image through each mirror.
CONC_BLOBS=$(image_blobs "$TESTDIR/img-conc" "$CONC_DIGEST")
declare -A C_GETS C_MGETS C_OK C_RSS C_TIME
conc_run() {
  local s=$1 h pid n0 i t1 deadline ok=0 maxrss=0 v pids=() names=()
  h=$(host_of "$s"); pid=$(pid_of "$s")
  up_settle; n0=$(up_lines)
  t1=$(now)
  for ((i = 1; i <= CLIENTS; i++)); do
    rm -rf "$PULLDIR/c-$s-$i"
    spawn "c_${s}_$i" timeout -k 5 240 "${SKOPEO[@]}" copy --quiet --src-tls-verify=false \
      --src-no-creds "docker://$h/$CONC_REPO:latest" "dir:$PULLDIR/c-$s-$i"
    v="c_${s}_${i}_PID"; pids+=("${!v}"); names+=("c_${s}_$i")
  done
  deadline=$((SECONDS + 250))
  while [ "$SECONDS" -lt "$deadline" ]; do
    v=$(rss_kb "$pid" VmRSS); [ -z "$v" ] || [ "$v" -le "$maxrss" ] || maxrss=$v
    local running=0
    for i in "${pids[@]}"; do pid_alive "$i" && running=$((running + 1)); done
    [ "$running" -gt 0 ] || break
    sleep 0.1
  done
  C_TIME[$s]=$(awk -v a="$t1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
  v=$(rss_kb "$pid" VmHWM); [ -z "$v" ] || [ "$v" -le "$maxrss" ] || maxrss=$v
  C_RSS[$s]=$maxrss
  for i in "${!pids[@]}"; do
    local rc=0
    wait "${pids[$i]}" || rc=$?
    stop "${names[$i]}"
    if [ "$rc" -eq 0 ] && verify_dir_digests "$PULLDIR/c-$s-$((i + 1))" "$CONC_DIGEST" 2>>"$TESTDIR/conc-verify.log"
    then ok=$((ok + 1)); fi
    rm -rf "$PULLDIR/c-$s-$((i + 1))"
  done
  C_OK[$s]=$ok
  up_settle
  # shellcheck disable=SC2086
  C_GETS[$s]=$(blob_gets "$n0" "$CONC_REPO" $CONC_BLOBS)
  C_MGETS[$s]=$(manifest_gets "$n0" "$CONC_REPO")
}
log "fig. 4: $CLIENTS concurrent cold pulls of $CONC_REPO through each mirror"
proxy_fresh
conc_run proxy
log "  proxy: ${C_OK[proxy]}/$CLIENTS verified in ${C_TIME[proxy]} s, upstream blob GETs min/max/total ${C_GETS[proxy]}, peak RSS ${C_RSS[proxy]} kB"
stop proxy
rc_fresh
if [ "$RC_UP" = 1 ]; then
  conc_run rc
  log "  regcache: ${C_OK[rc]}/$CLIENTS verified in ${C_TIME[rc]} s, upstream blob GETs min/max/total ${C_GETS[rc]}, peak RSS ${C_RSS[rc]} kB"
  rc_alive || log "  regcache is no longer running after the concurrent pulls"
else
  C_OK[rc]=0 C_GETS[rc]="err err err" C_MGETS[rc]=err C_RSS[rc]=err C_TIME[rc]=err
fi
RC_EXIT=n/a
if [ "$RC_UP" = 1 ]; then
  if regcache_stop rc >/dev/null 2>&1; then RC_EXIT="exit 0 on SIGTERM"; else RC_EXIT="did not exit cleanly"; fi
fi

# ===================================================================================
# The summary.
mib() { if isnum "$1"; then awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; else printf '%s' "${1:-n/a}"; fi; }
# errsum "RPS P99 ERRS" "RPS P99 ERRS": the two error counts added, or err.
errsum() { local a b; a=$(field "$1" 2) b=$(field "$2" 2)
  if isnum "$a" && isnum "$b"; then echo $((a + b)); else echo err; fi; }
yesno() { if "$@"; then printf 'yes'; else printf '**no**'; fi; }
rc_tag_rps=$(field "${M_TAG[rc]}" 0) rc_tag_p99=$(field "${M_TAG[rc]}" 1) rc_tag_err=$(field "${M_TAG[rc]}" 2)
px_tag_rps=$(field "${M_TAG[proxy]}" 0)
rc_dig_rps=$(field "${M_DIG[rc]}" 0)
px_dig_rps=$(field "${M_DIG[proxy]}" 0)
read -r rc_gmin rc_gmax _ <<<"${C_GETS[rc]}"

R_BLOB=$(ratio "${BLOB[rc]}" "${BLOB[nginx]}")
R_TAG=$(ratio "$rc_tag_rps" "$px_tag_rps")
R_DIG=$(ratio "$rc_dig_rps" "$px_dig_rps")
R_PULL=$(ratio "$P3_RC" "$P3_DIRECT")
RC_RSS_MIB=$(mib "${C_RSS[rc]}")

# shellcheck disable=SC2016 # yesno eval '...' expands later, on purpose
summary() {
  local s
  echo "## regcache benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); runtime $((SECONDS - T0)) s"
  echo "- machine: $(nproc) CPUs, $MACHINE_CPU, $MACHINE_MEM RAM, kernel $(uname -r), Debian $MACHINE_DEBIAN"
  case $REGCACHE_SRC in
    "$TOP"/*) echo "- regcache: $V_RC, built in the work tree at git $GIT_HEAD$([ "$GIT_DIRTY" = 0 ] || echo " (+$GIT_DIRTY locally modified files)"), sanitizers: $ASAN" ;;
    *) echo "- regcache: $V_RC, sanitizers: $ASAN; binary from outside the work tree (which is at git $GIT_HEAD)" ;;
  esac
  [ -z "${BENCH_REGCACHE_REV:-}" ] || echo "- regcache built from: $BENCH_REGCACHE_REV"
  echo "- regcache binary: $REGCACHE_SRC (copied for the run; built $(date -u -r "$REGCACHE_SRC" '+%Y-%m-%d %H:%M UTC'))"
  echo "- regcache config: $(jq -c . <<<"${RC_CONFIG//@PORT@/PORT}" | sed "s|$TESTDIR|TMP|g; s|$up_URL|http://127.0.0.1:RPORT|")"
  [ -z "$RC_NOTE" ] || echo "- note: $RC_NOTE"
  echo "- others: $V_REG; $V_NGINX; $V_SKOPEO; $V_WRK; $V_CURL"
  echo "- sizes: blob $BLOB_MB MiB, best of $RUNS GETs; image $LAYERS layers, $IMG_BYTES bytes, median of $PULL_RUNS cold pulls (copies on $(df --output=fstype "$PULLDIR" | tail -n1)); wrk -t2 -c$WRK_CONNS -d${WRK_SECONDS}s; $CLIENTS concurrent clients"
  echo
  echo "| figure | upstream (direct) | docker-registry proxy | nginx | regcache |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  echo "| 1. warm $BLOB_MB MiB blob GET, MB/s (best of $RUNS) | ${BLOB[up]} | ${BLOB[proxy]} | ${BLOB[nginx]} | ${BLOB[rc]} |"
  printf '| 2. manifest by tag, req/s | %s | %s | %s | %s |\n' \
    "$(field "${M_TAG[up]}" 0)" "$px_tag_rps" "$(field "${M_TAG[nginx]}" 0)" "$rc_tag_rps"
  printf '| 2. manifest by tag, p99 ms | %s | %s | %s | %s |\n' \
    "$(field "${M_TAG[up]}" 1)" "$(field "${M_TAG[proxy]}" 1)" "$(field "${M_TAG[nginx]}" 1)" "$rc_tag_p99"
  printf '| 2. manifest by digest, req/s | %s | %s | %s | %s |\n' \
    "$(field "${M_DIG[up]}" 0)" "$px_dig_rps" "$(field "${M_DIG[nginx]}" 0)" "$rc_dig_rps"
  printf '| 2. manifest by digest, p99 ms | %s | %s | %s | %s |\n' \
    "$(field "${M_DIG[up]}" 1)" "$(field "${M_DIG[proxy]}" 1)" "$(field "${M_DIG[nginx]}" 1)" "$(field "${M_DIG[rc]}" 1)"
  printf '| 2. error responses (tag + digest) | %s | %s | %s | %s |\n' \
    "$(errsum "${M_TAG[up]}" "${M_DIG[up]}")" "$(errsum "${M_TAG[proxy]}" "${M_DIG[proxy]}")" \
    "$(errsum "${M_TAG[nginx]}" "${M_DIG[nginx]}")" "$(errsum "${M_TAG[rc]}" "${M_DIG[rc]}")"
  printf '| 2. upstream requests per manifest GET, tag / digest | – | %s / %s | – | %s / %s |\n' \
    "${U_TAG[proxy]}" "${U_DIG[proxy]}" "${U_TAG[rc]}" "${U_DIG[rc]}"
  printf '| 3. cold pull, s (median of %s) | %s | %s | – | %s |\n' "$PULL_RUNS" "$(fmt "$P3_DIRECT" 2)" "$(fmt "$P3_PROXY" 2)" "$(fmt "$P3_RC" 2)"
  printf '| 3. cold pull, × direct | 1.00 | %s | – | %s |\n' "$(ratio "$P3_PROXY" "$P3_DIRECT")" "$R_PULL"
  printf '| 3. upstream GETs per blob, min–max (last run) | – | %s | – | %s |\n' \
    "$(field "$G3_PROXY" 0)–$(field "$G3_PROXY" 1)" "$(field "$G3_RC" 0)–$(field "$G3_RC" 1)"
  printf '| 4. %s cold pulls: copies verified | – | %s/%s | – | %s/%s |\n' "$CLIENTS" "${C_OK[proxy]}" "$CLIENTS" "${C_OK[rc]}" "$CLIENTS"
  printf '| 4. upstream GETs per blob, min–max (total) | – | %s | – | %s |\n' \
    "$(field "${C_GETS[proxy]}" 0)–$(field "${C_GETS[proxy]}" 1) ($(field "${C_GETS[proxy]}" 2))" \
    "$(field "${C_GETS[rc]}" 0)–$(field "${C_GETS[rc]}" 1) ($(field "${C_GETS[rc]}" 2))"
  printf '| 4. upstream manifest GETs | – | %s | – | %s |\n' "${C_MGETS[proxy]}" "${C_MGETS[rc]}"
  printf '| 4. wall time for all %s, s | – | %s | – | %s |\n' "$CLIENTS" "${C_TIME[proxy]}" "${C_TIME[rc]}"
  printf '| 4. peak RSS, MiB | – | %s | – | %s |\n' "$(mib "${C_RSS[proxy]}")" "$RC_RSS_MIB"
  printf '| peak RSS during figs. 2 and 1, MiB | – | %s | – | %s |\n' "$(mib "${RSS12[proxy]}")" "$(mib "${RSS12[rc]}")"
  echo
  [ -z "$HF_DIRECT" ] || { echo "hyperfine, direct cold pull (5 runs): $HF_DIRECT"; echo; }
  echo "Reference ratios (the issue measured: proxy ≈ nginx on warm blobs, ≈ 400 req/s by tag, 1.5× direct on a cold pull, up to 22 GETs of one blob, ≈ 80 MB RSS):"
  echo "proxy/nginx warm blob $(ratio "${BLOB[proxy]}" "${BLOB[nginx]}"); proxy cold pull $(ratio "$P3_PROXY" "$P3_DIRECT")× direct."
  echo
  echo "| target | measured | met |"
  echo "| --- | ---: | :---: |"
  echo "| warm blob GET: regcache ≥ 0.9× nginx | ${R_BLOB}× | $(yesno ge "$R_BLOB" 0.9) |"
  echo "| manifest by tag: regcache ≥ 10× proxy req/s | ${R_TAG}× | $(yesno ge "$R_TAG" 10) |"
  echo "| manifest by tag: regcache p99 < 5 ms, no errors | $rc_tag_p99 ms, $rc_tag_err errors | $(yesno eval 'lt "$rc_tag_p99" 5 && [ "$rc_tag_err" = 0 ]') |"
  echo "| manifest by digest: regcache ≥ 2× proxy req/s | ${R_DIG}× | $(yesno ge "$R_DIG" 2) |"
  echo "| cold pull: regcache ≤ 1.2× direct | ${R_PULL}× | $(yesno le "$R_PULL" 1.2) |"
  echo "| $CLIENTS concurrent cold pulls: exactly one upstream GET per blob | ${rc_gmin}–${rc_gmax} | $(yesno eval '[ "$rc_gmin" = 1 ] && [ "$rc_gmax" = 1 ]') |"
  echo "| $CLIENTS concurrent cold pulls: all $CLIENTS correct | ${C_OK[rc]}/$CLIENTS | $(yesno eval '[ "${C_OK[rc]}" = "$CLIENTS" ]') |"
  echo "| $CLIENTS concurrent cold pulls: regcache peak RSS < 40 MiB | $RC_RSS_MIB MiB | $(yesno eval 'isnum "${C_RSS[rc]}" && [ "${C_RSS[rc]}" -lt 40960 ]') |"
  echo
  [ "$ASAN" = no ] || echo "Warning: regcache is a sanitizer build: its memory and speed figures are meaningless."
  echo "regcache at the end: $RC_EXIT."
  [ "$P3_ERR" = 0 ] || echo "Warning: some fig. 3 pulls failed or did not verify (err in the list): direct ${T_DIRECT[*]}; proxy ${T_PROXY[*]}; regcache ${T_RC[*]}."
}
summary | tee "${BENCH_OUT:-/dev/null}"
log "done"

#!/bin/bash
# The files operators deploy with, and the manuals: every JSON, YAML and
# TOML file under contrib/ and etc/ parses, and so do the files the
# Kubernetes ConfigMaps carry; the regcache configurations among them pass
# `regcache check-config`; the DaemonSet's node-setup script writes what it
# should on a scratch tree; `systemd-analyze verify` accepts the unit;
# logrotate accepts the snippet and would rotate the access log; the
# Dockerfile is multi-stage Debian, runs as a user other than root, has a
# HEALTHCHECK and installs every library the binary links; the Kubernetes
# pods are probed on /healthz and /readyz and scraped on /metrics; the
# Grafana dashboard queries exactly the agreed metric names (and, once the
# admin listener exists, names the daemon exports); the README links every
# file under contrib/; regcache(8) and regcache.json(5) render without a
# warning, regcache(8) documents every command and option `regcache -h`
# and `regcache CMD -h` print and nothing else, every environment variable
# the sources read, and regcache.json(5) every key of docs/CONFIGURATION.md;
# skopeo pulls ghcr.io and quay.io images through the prefix mirrors of
# contrib/client-config/registries.conf.

# Variables like rc_URL are set indirectly (printf -v); the sh -c scripts
# take their arguments as $1, $2, ... on purpose.
# shellcheck disable=SC2154,SC2016
set -eu
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
# shellcheck source=../lib/regcache.sh
. "$SRCDIR/tests/lib/regcache.sh"

require_cmd jq python3 groff man sed awk find
require_regcache
cd "$SRCDIR"

lint() { python3 "$TOOLSDIR/contriblint.py" "$@"; }
# words TEXT: the lines of TEXT on one line.
words() { tr '\n' ' ' <<<"$1"; }

HAVE_YAML=0; HAVE_TOML=0
if python3 -c 'import yaml' 2>/dev/null; then HAVE_YAML=1; fi
if python3 -c 'import tomllib' 2>/dev/null; then HAVE_TOML=1; fi

# --- every file parses --------------------------------------------------------
while IFS= read -r f; do
  check "$f parses (jq)" jq empty "$f"
done < <(find contrib etc -name '*.json' | sort)

if [ "$HAVE_YAML" = 1 ]; then
  while IFS= read -r f; do
    check "$f parses (PyYAML, every document)" lint yaml "$f"
  done < <(find contrib -name '*.yaml' -o -name '*.yml' | sort)
else
  skip "the YAML files under contrib/ parse" "PyYAML not installed (python3-yaml)"
fi
if [ "$HAVE_TOML" = 1 ]; then
  while IFS= read -r f; do
    check "$f parses (tomllib)" lint toml "$f"
  done < <(find contrib -name '*.toml' -o -name registries.conf | sort)
else
  skip "the TOML files under contrib/ parse" "Python older than 3.11 (no tomllib)"
fi

# --- the files the ConfigMaps carry ---------------------------------------------
CM=$TESTDIR/configmaps
if [ "$HAVE_YAML" = 1 ]; then
  for f in contrib/kubernetes/*.yaml; do lint configmap-files "$f" "$CM" >/dev/null; done
  while IFS= read -r f; do
    n=${f#"$CM"/}
    case $f in
    *.json) check "ConfigMap $n parses (jq)" jq empty "$f" ;;
    *.toml) if [ "$HAVE_TOML" = 1 ]; then check "ConfigMap $n parses (tomllib)" lint toml "$f"
            else skip "ConfigMap $n parses" "no tomllib"; fi ;;
    *.sh) check "ConfigMap $n: sh -n finds no syntax error" sh -n "$f" ;;
    esac
  done < <(find "$CM" -type f | sort)
  # The node-local configuration gets the node's address at start-up.
  sed 's/@ADMIN_LISTEN@/127.0.0.1:5001/' "$CM/regcache/regcache.json" >"$TESTDIR/node.json"
  # toml_body FILE: without comments and blank lines.
  toml_body() { grep -v -e '^#' -e '^$' "$1"; }
  for reg in _default docker.io; do
    check "the DaemonSet's $reg/hosts.toml says what contrib/client-config's does" \
      cmp <(toml_body "$CM/regcache/hosts-$reg.toml") \
          <(toml_body "contrib/client-config/containerd/$reg/hosts.toml")
  done
fi

# --- regcache accepts the configurations ----------------------------------------
CONFIGS=(etc/regcache.json contrib/docker/regcache.json)
[ "$HAVE_YAML" = 0 ] || CONFIGS+=("$TESTDIR/node.json" "$CM/ci-runner-regcache/regcache.json")
for f in "${CONFIGS[@]}"; do
  check "regcache check-config accepts ${f#"$TESTDIR"/}" \
    "$REGCACHE" check-config -c "$f"
done

# --- the DaemonSet's node-setup script, on a scratch tree -------------------------
# Its absolute paths (the pod's mounts) are moved under NS; it must run as
# root, as in the pod, for the chown of the cache directory.
node_setup() {
  local ns=$1 ip=$2
  sed -e "s#/run/regcache#$ns/run#g; s#/var/lib/regcache#$ns/cache#g" \
      -e "s#/certs\.d#$ns/certs.d#g; s#/config/#$ns/config/#g" \
      "$CM/regcache/node-setup.sh" >"$ns/node-setup.sh"
  HOST_IP=$ip sh "$ns/node-setup.sh"
}
if [ "$HAVE_YAML" = 0 ]; then
  skip "node-setup.sh on a scratch tree" "PyYAML not installed"
elif [ "$(id -u)" -ne 0 ]; then
  skip "node-setup.sh on a scratch tree" "needs root (it chowns the cache directory)"
else
  NS=$TESTDIR/node
  mkdir -p "$NS/run" "$NS/cache" "$NS/certs.d"
  cp -r "$CM/regcache" "$NS/config"
  check "node-setup.sh runs (IPv4 node)" node_setup "$NS" 10.1.2.3
  check "it renders the admin listener at the node's address, 10.1.2.3:5001" \
    test "$(jq -r .admin.listen "$NS/run/regcache.json")" = 10.1.2.3:5001
  check "it gives the cache directory to uid 10001" test "$(stat -c %u "$NS/cache")" = 10001
  check "it writes containerd's _default and docker.io hosts.toml from the ConfigMap" \
    sh -c 'cmp "$1/config/hosts-_default.toml" "$1/certs.d/_default/hosts.toml" &&
           cmp "$1/config/hosts-docker.io.toml" "$1/certs.d/docker.io/hosts.toml"' - "$NS"
  check "regcache check-config accepts the rendered configuration" \
    "$REGCACHE" check-config -c "$NS/run/regcache.json"
  # A second run (a pod restart) on an IPv6 node: its own files are
  # rewritten, a docker.io/hosts.toml someone else wrote is left alone.
  echo 'server = "https://mirror.example"' >"$NS/certs.d/docker.io/hosts.toml"
  check "node-setup.sh runs again (IPv6 node, a foreign docker.io/hosts.toml)" node_setup "$NS" fd00::7
  check "it brackets an IPv6 address: [fd00::7]:5001" \
    test "$(jq -r .admin.listen "$NS/run/regcache.json")" = '[fd00::7]:5001'
  check "it leaves the foreign hosts.toml alone" \
    grep -qx 'server = "https://mirror.example"' "$NS/certs.d/docker.io/hosts.toml"
fi

# --- systemd and logrotate ---------------------------------------------------------
UNIT=contrib/systemd/regcache.service
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify wants ExecStart's binary and the Documentation= pages to exist.
  mkdir -p "$TESTDIR/unit" "$TESTDIR/man/man8" "$TESTDIR/man/man5"
  sed "s#/usr/bin/regcache#$REGCACHE#g" "$UNIT" >"$TESTDIR/unit/regcache.service"
  cp doc/regcache.8 "$TESTDIR/man/man8/"
  cp doc/regcache.json.5 "$TESTDIR/man/man5/"
  verify_unit() {
    local out rc=0
    out=$(MANPATH=$TESTDIR/man systemd-analyze verify "$1" 2>&1) || rc=$?
    printf '%s\n' "$out"
    [ "$rc" -eq 0 ] && ! grep -q 'regcache' <<<"$out"
  }
  check "systemd-analyze verify accepts $UNIT (ExecStart on the built binary)" \
    verify_unit "$TESTDIR/unit/regcache.service"
else
  skip "systemd-analyze verify accepts $UNIT" "systemd-analyze not installed (package systemd)"
fi
# unit_value KEY: the last KEY= of the unit.
unit_value() { sed -n "s/^$1=//p" "$UNIT" | tail -n 1; }
check "the unit reloads with SIGHUP, stops with SIGTERM, and waits longer than the 30 s drain" \
  sh -c 'grep -qx "ExecReload=/bin/kill -HUP \$MAINPID" "$1" &&
         [ "$2" = SIGTERM ] && [ "$3" -gt 30 ]' - "$UNIT" "$(unit_value KillSignal)" "$(unit_value TimeoutStopSec)"
check "the unit has no capabilities and filters system calls" \
  sh -c '[ -z "$2" ] && [ "$3" = @system-service ] && grep -qx NoNewPrivileges=yes "$1" &&
         grep -qx ProtectSystem=strict "$1"' - "$UNIT" "$(unit_value CapabilityBoundingSet)" \
  "$(sed -n 's/^SystemCallFilter=//p' "$UNIT" | head -n 1)"

if command -v logrotate >/dev/null 2>&1; then
  # logrotate refuses a configuration that group or others can write.
  LR=$TESTDIR/logrotate
  mkdir -p "$LR/log"
  install -m 0644 contrib/systemd/regcache.logrotate "$LR/as-shipped.conf"
  sed "s#/var/log/regcache#$LR/log#" contrib/systemd/regcache.logrotate >"$LR/here.conf"
  chmod 0644 "$LR/here.conf"
  echo '127.0.0.1 - - [29/Nov/2026:19:05:29 +0000] "GET /v2/ HTTP/1.1" 200 2 "-" "curl"' >"$LR/log/access.log"
  logrotate_ok() {
    local out rc=0
    out=$(logrotate "$@" 2>&1) || rc=$?
    printf '%s\n' "$out"
    [ "$rc" -eq 0 ] && ! grep -qi 'error' <<<"$out"
  }
  check "logrotate -d accepts contrib/systemd/regcache.logrotate" \
    logrotate_ok -d -s "$LR/state" "$LR/as-shipped.conf"
  logrotate -d -f -s "$LR/state" "$LR/here.conf" >"$LR/forced.out" 2>&1 || true
  check "a forced rotation would rename access.log and run the postrotate script (SIGUSR1)" \
    sh -c 'grep -qF "renaming $1/access.log to $1/access.log.1" "$2" &&
           grep -q "running postrotate script" "$2" && grep -q "USR1" "$2"' - "$LR/log" "$LR/forced.out"
else
  skip "logrotate accepts contrib/systemd/regcache.logrotate" "logrotate not installed"
fi

# --- the Dockerfile ------------------------------------------------------------------
DF=contrib/docker/Dockerfile
check "$DF: multi-stage Debian bookworm, a USER other than root, a HEALTHCHECK, COPY sources present" \
  lint dockerfile "$DF" .
check "$DF: the image takes the volume, the two ports and a health check on /healthz" \
  sh -c 'grep -qx "VOLUME /var/lib/regcache" "$1" && grep -qx "EXPOSE 5000 5001" "$1" &&
         grep -A1 "^HEALTHCHECK" "$1" | grep -q "/healthz"' - "$DF"
# runtime_libs_covered: the package of every library the binary needs is
# installed by the runtime stage (libc6 and libcrypt1 come with Debian).
runtime_libs_covered() {
  local lib path p pkg missing=0 pkgs
  pkgs=$(lint dockerfile-runtime-packages "$DF")
  for lib in $(readelf -d "$REGCACHE" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    path=$(ldd "$REGCACHE" | awk -v l="$lib" '$1 == l { print $3 }')
    # dpkg knows a file by the path its package installed it under, which
    # merged /usr may have moved: try the variants.
    pkg=
    for p in "$path" "$(readlink -f "$path")" "/usr$path" "${path#/usr}"; do
      pkg=$(dpkg -S "$p" 2>/dev/null | head -n 1 | cut -d: -f1)
      [ -z "$pkg" ] || break
    done
    [ -n "$pkg" ] || { echo "$lib: no package owns $path"; missing=1; continue; }
    case $pkg in libc6|libcrypt1) continue ;; esac
    if ! grep -qx "$pkg" <<<"$pkgs"; then
      echo "$lib ($pkg) is not installed by the runtime stage"
      missing=1
    fi
  done
  return "$missing"
}
if ! command -v dpkg >/dev/null || ! command -v readelf >/dev/null; then
  skip "$DF installs the libraries the binary needs" "no dpkg or readelf"
elif built_with_sanitizers; then
  skip "$DF installs the libraries the binary needs" "sanitizer build"
else
  check "$DF: the runtime stage installs the package of every library regcache links" runtime_libs_covered
fi

# --- Kubernetes -------------------------------------------------------------------------
if [ "$HAVE_YAML" = 1 ]; then
  for f in contrib/kubernetes/*.yaml; do
    check "$f: probes on /healthz and /readyz, scrape annotations, not root, mounts match" lint k8s "$f"
  done
fi

# --- the README -------------------------------------------------------------------------
readme_links_all() {
  local f rc=0
  while IFS= read -r f; do
    grep -qF "($f)" README.md || { echo "README.md does not link $f"; rc=1; }
  done < <(find contrib -type f | sort; echo .dockerignore)
  return "$rc"
}
check "README.md links every file under contrib/ (and .dockerignore)" readme_links_all
check "README.md's relative links lead to files" lint mdlinks README.md
check "contrib/kubernetes/README.md's relative links lead to files" lint mdlinks contrib/kubernetes/README.md

# --- the manual pages ---------------------------------------------------------------------
MAN8=doc/regcache.8
MAN5=doc/regcache.json.5
# quiet CMD...: success only when CMD succeeds and prints nothing.
quiet() {
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  printf '%s\n' "$out"
  [ "$rc" -eq 0 ] && [ -z "$out" ]
}
man_renders() {
  local out
  out=$(MANWIDTH=80 man -l "$1" 2>"$TESTDIR/man.err") || return 1
  cat "$TESTDIR/man.err"
  grep -q '^NAME' <<<"$out" && [ ! -s "$TESTDIR/man.err" ]
}
for page in "$MAN8" "$MAN5"; do
  check "man -l renders $page, without a message" man_renders "$page"
  check "groff -man -ww finds nothing to warn about in $page" quiet groff -man -ww -z "$page"
  if command -v mandoc >/dev/null 2>&1; then
    check "mandoc -Tlint finds nothing in $page" quiet mandoc -Tlint "$page"
  else
    skip "mandoc -Tlint finds nothing in $page" "mandoc not installed"
  fi
done

# The commands `regcache -h` lists: "  NAME ..." under "commands:".
bin_commands() { "$REGCACHE" -h | awk '/^commands:/ { c = 1; next } c && /^  [a-z]/ { print $1 }' | sort -u; }
# Options in a help text: words starting with - or --, -h aside.
help_options() { grep -oE '(^|[][ ,(|])--?[a-zA-Z][a-zA-Z0-9-]*' | sed 's/^[^-]*//' | grep -vxE -- '-h|--help' | sort -u; }
# roff_words: the roff source's dashes as plain text.
roff_plain() { sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\ / /g' "$1"; }
# The commands of regcache(8): its .SS entries under COMMANDS, and its
# SYNOPSIS lines (.SY "regcache NAME").
man_commands() {
  roff_plain "$MAN8" | awk '/^\.SH/ { s = $2 } s == "COMMANDS" && /^\.SS/ { print $2 }' | sort -u
}
man_synopsis_commands() { roff_plain "$MAN8" | sed -n 's/^\.SY "regcache \([a-z-]*\)"/\1/p' | sort -u; }
# man_options CMD: the tags of the .TP list under .SS CMD that are options.
man_options() {
  roff_plain "$MAN8" | awk -v cmd="$1" '
    /^\.SH/ { s = $2; sub_ = ""; next }
    s == "COMMANDS" && /^\.SS/ { sub_ = $2; next }
    s == "COMMANDS" && sub_ == cmd && /^\.TP/ { tag = 1; next }
    tag { tag = 0; for (i = 1; i <= NF; i++) if ($i ~ /^--?[a-z]/) print $i }' |
    sed 's/[^a-zA-Z0-9-].*//' | sort -u
}
# man_synopsis_options CMD: the options in the SYNOPSIS entry of CMD.
man_synopsis_options() {
  roff_plain "$MAN8" | awk -v cmd="$1" '
    /^\.SY/ { on = ($0 == ".SY \"regcache " cmd "\"") ; next }
    /^\.YS/ { on = 0 }
    on { for (i = 1; i <= NF; i++) if ($i ~ /^--?[a-z]/) print $i }' |
    sed 's/[^a-zA-Z0-9-].*//' | sort -u
}
BIN_CMDS=$(bin_commands)
MAN_CMDS=$(man_commands)
# Planned commands: in regcache(8) already, in the binary once they land.

diag "commands of regcache -h: $(words "$BIN_CMDS")" "commands of regcache(8): $(words "$MAN_CMDS")"
all_bin_in_man() {
  local c rc=0
  for c in $BIN_CMDS; do
    grep -qx "$c" <<<"$MAN_CMDS" || { echo "$c: no .SS $c under COMMANDS"; rc=1; }
    grep -qx "$c" <<<"$(man_synopsis_commands)" || { echo "$c: no SYNOPSIS line"; rc=1; }
  done
  return "$rc"
}
all_man_in_bin() {
  local c rc=0
  for c in $MAN_CMDS $(man_synopsis_commands); do
    grep -qx "$c" <<<"$BIN_CMDS" || { echo "$c: documented, but not in regcache -h"; rc=1; }
  done
  return "$rc"
}
check "regcache(8) documents every command of regcache -h, in SYNOPSIS and COMMANDS" all_bin_in_man
check "every command regcache(8) documents is in regcache -h" all_man_in_bin

# same_options CMD: the options of `regcache CMD -h`, of the COMMANDS
# entry and of the SYNOPSIS entry are the same set.
same_options() {
  local bin man syn
  bin=$("$REGCACHE" "$1" -h 2>&1 | help_options) || true
  "$REGCACHE" "$1" -h >/dev/null 2>&1 || { echo "regcache $1 -h fails"; return 1; }
  man=$(man_options "$1")
  syn=$(man_synopsis_options "$1")
  if [ "$bin" != "$man" ] || [ "$bin" != "$syn" ]; then
    echo "regcache $1 -h: $(words "$bin")"
    echo "regcache(8) COMMANDS $1: $(words "$man")"
    echo "regcache(8) SYNOPSIS $1: $(words "$syn")"
    return 1
  fi
}
for c in $(printf '%s\n' "$BIN_CMDS" "$MAN_CMDS" | sort -u); do
  check "$c: regcache $c -h and regcache(8) list the same options" same_options "$c"
done

# Every REGCACHE_* and AWS_* variable the sources read is under
# ENVIRONMENT, and every REGCACHE_* variable there is read.
env_documented() {
  local v rc=0 envsec
  envsec=$(roff_plain "$MAN8" | awk '/^\.SH/ { s = $2 } s == "ENVIRONMENT"')
  for v in $(grep -ohE '"(REGCACHE|AWS)_[A-Z0-9_]+"' src/*.c | tr -d '"' | sort -u); do
    grep -qw -- "$v" <<<"$envsec" || { echo "$v: read by src/, not under ENVIRONMENT"; rc=1; }
  done
  while IFS= read -r v; do
    grep -q "\"$v\"" src/*.c || { echo "$v: under ENVIRONMENT, read nowhere in src/"; rc=1; }
  done < <(grep -oE 'REGCACHE_[A-Z0-9_]+' <<<"$envsec" | sort -u)
  return "$rc"
}
check "regcache(8) ENVIRONMENT: every REGCACHE_* and AWS_* variable of src/, nothing more of REGCACHE_*" env_documented

# Every key of the tables in docs/CONFIGURATION.md ("| key | ..."), and the
# keys of this issue, is a tagged entry of regcache.json(5).
config_keys() {
  awk '/^\| key \|/ { t = 1; next }
       /^\|/ && t { if (match($0, /^\| `[^`]+`/)) print substr($0, 4, RLENGTH - 4); next }
       { t = 0 }' docs/CONFIGURATION.md
  printf '%s\n' admin listen drain access format file
}
keys_documented() {
  local k rc=0 text
  text=$(groff -man -Tutf8 -P-cbou -rLL=200n "$MAN5" 2>/dev/null)
  for k in $(config_keys | sort -u); do
    grep -qE "^ +$k( |\$)" <<<"$text" || { echo "$k: no entry in regcache.json(5)"; rc=1; }
  done
  return "$rc"
}
check "regcache.json(5) has an entry for every key of docs/CONFIGURATION.md and the admin, drain and access-log keys" \
  keys_documented

# --- registries.conf: the prefix mirrors for ghcr.io and quay.io --------------------
# skopeo reads contrib/client-config/registries.conf and asks for
# ghcr.io/... and quay.io/....  The mirror address is replaced by regcache's,
# and each registry's own location by a closed loopback port, so that a
# mirror that does not work makes the pull fail instead of reaching out:
# the pulls succeed only through regcache's prefixes "ghcr" and "quay", as
# etc/regcache.json names them, each an upstream registry of the suite.
if command -v docker-registry >/dev/null 2>&1 && command -v skopeo >/dev/null 2>&1; then
  # shellcheck source=../lib/registry.sh
  . "$SRCDIR/tests/lib/registry.sh"
  DIGEST=$(mkimage "$TESTDIR/img" --seed contrib --layers 1 --layer-size 4096)
  registry_start_plain ghcr
  registry_start_plain quay
  registry_push_dir ghcr "$TESTDIR/img" owner/app:1.0 >/dev/null
  registry_push_dir quay "$TESTDIR/img" owner/app:1.0 >/dev/null
  regcache_start rcm "{\"listen\": [\"127.0.0.1:@PORT@\"], \"data_dir\": \"$TESTDIR/mirror-data\",
    \"upstreams\": [
      {\"name\": \"ghcr.io\", \"url\": \"$ghcr_URL\", \"aliases\": [\"ghcr.io\"], \"prefix\": \"ghcr\"},
      {\"name\": \"quay.io\", \"url\": \"$quay_URL\", \"aliases\": [\"quay.io\"], \"prefix\": \"quay\"}]}"
  { echo 'unqualified-search-registries = []'
    sed -e "s/127\.0\.0\.1:5000/$rcm_ADDR/g" \
        -e 's/^location = "\([a-z.]*\)"$/location = "127.0.0.1:1\/\1"/' \
        contrib/client-config/registries.conf; } >"$TESTDIR/registries.conf"
  # mirrored_digest REF: the sha256 of the manifest skopeo gets for REF.
  mirrored() {
    local got
    got=sha256:$(skopeo_run inspect --raw "docker://$1" | sha256sum | cut -c1-64)
    echo "got $got, want $DIGEST"
    [ "$got" = "$DIGEST" ]
  }
  check "registries.conf: skopeo gets ghcr.io/owner/app:1.0 through the mirror 127.0.0.1:PORT/ghcr" \
    mirrored ghcr.io/owner/app:1.0
  check "registries.conf: skopeo gets quay.io/owner/app:1.0 through the mirror 127.0.0.1:PORT/quay" \
    mirrored quay.io/owner/app:1.0
  check "regcache exits 0 on SIGTERM" regcache_stop rcm
else
  skip "registries.conf: the ghcr.io and quay.io mirrors work" "docker-registry or skopeo not installed"
fi

# --- the Grafana dashboard ------------------------------------------------------------------
DASH=contrib/grafana/regcache-dashboard.json
# The metric names the dashboard and the daemon agreed on.
AGREED=(regcache_requests_total regcache_request_duration_seconds
  regcache_time_to_first_byte_seconds regcache_cache_hits_total
  regcache_cache_misses_total regcache_cache_stale_served_total
  regcache_cache_revalidations_total regcache_cache_coalesced_total
  regcache_bytes_served_total regcache_fills_in_flight
  regcache_fill_readers_joined_total regcache_upstream_requests_total
  regcache_upstream_errors_total regcache_upstream_ratelimit_limit
  regcache_upstream_ratelimit_remaining regcache_upstream_429_total
  regcache_credential_refreshes_total regcache_credential_refresh_failures_total
  regcache_cache_evictions_total regcache_cache_bytes regcache_cache_entries
  regcache_cache_budget_bytes regcache_connections_open regcache_connections_total
  regcache_uptime_seconds regcache_build_info)
check "$DASH: schemaVersion, the DS_PROMETHEUS variable, every query on it" lint dashboard "$DASH"
# The metric families the dashboard queries (histograms by their base name).
lint dashboard "$DASH" 2>/dev/null | sed -E 's/_(bucket|sum|count)$//' | sort -u >"$TESTDIR/dash.metrics" || true
check "$DASH queries every agreed metric and no other" \
  cmp "$TESTDIR/dash.metrics" <(printf '%s\n' "${AGREED[@]}" | sort -u)

# The daemon exports them (a family may show only TYPE and HELP lines).
APORT=$(free_port)
regcache_start rc "{\"listen\": [\"127.0.0.1:@PORT@\"], \"data_dir\": \"$TESTDIR/data\",
  \"admin\": {\"listen\": \"127.0.0.1:$APORT\"},
  \"upstreams\": [{\"name\": \"up\", \"url\": \"http://127.0.0.1:9\"}]}"
wait_http "http://127.0.0.1:$APORT/healthz"
tcurl -o /dev/null "$rc_URL/v2/" || true
tcurl -o "$TESTDIR/metrics" "http://127.0.0.1:$APORT/metrics" || true
exported() {
  local m rc=0
  while IFS= read -r m; do
    grep -qE "^(# TYPE $m |$m(_bucket)?[{ ])" "$TESTDIR/metrics" ||
      { echo "$m: not in /metrics"; rc=1; }
  done <"$TESTDIR/dash.metrics"
  return "$rc"
}
check "every metric the dashboard queries is in the daemon's /metrics" exported
check "regcache exits 0 on SIGTERM" regcache_stop rc

done_testing

# Helpers to run the regcache under test.  Source after common.sh.
# shellcheck shell=bash

# regcache_start NAME CONFIG_JSON [extra serve args...]: write the config
# (the string may use the placeholder @PORT@ for the listen port it picks),
# start `regcache serve`, and wait until /v2/ answers.  Sets ${NAME}_PORT,
# ${NAME}_URL (http://127.0.0.1:PORT), ${NAME}_ADDR (127.0.0.1:PORT),
# ${NAME}_PID and ${NAME}_LOG.  A config without an "admin" key gets an
# admin listener on a free port of its own (tests run side by side, and
# the default 127.0.0.1:5001 would clash): ${NAME}_ADMIN_PORT and
# ${NAME}_ADMIN_URL; with "admin" in the config they are left empty.
regcache_start() {
  local name=$1 json=$2 port aport= rest sep=,
  shift 2
  port=$(free_port)
  if [[ $json != *'"admin"'* ]]; then
    aport=$(free_port)
    while [ "$aport" = "$port" ]; do aport=$(free_port); done
    rest=${json#*\{}
    [[ ! $rest =~ ^[[:space:]]*\} ]] || sep=
    json="{\"admin\": {\"listen\": \"127.0.0.1:$aport\"}$sep$rest"
  fi
  printf -v "${name}_ADMIN_PORT" '%s' "$aport"
  printf -v "${name}_ADMIN_URL" '%s' "${aport:+http://127.0.0.1:$aport}"
  printf '%s\n' "${json//@PORT@/$port}" >"$TESTDIR/$name.json"
  spawn "$name" "$REGCACHE" serve -c "$TESTDIR/$name.json" "$@"
  _kept_logs+=("$name")
  printf -v "${name}_PORT" '%s' "$port"
  printf -v "${name}_ADDR" '%s' "127.0.0.1:$port"
  printf -v "${name}_URL" '%s' "http://127.0.0.1:$port"
  wait_http "http://127.0.0.1:$port/v2/"
}

# regcache_alive NAME: the daemon is still running (no crash).
regcache_alive() {
  local v="${1}_PID"
  pid_alive "${!v}"
}

# count_lines FILE PATTERN: how many lines of FILE match the ERE PATTERN.
count_lines() { grep -cE -- "$2" "$1" 2>/dev/null || true; }

# Access-log lines (combined format, on stderr unless log.access.file):
#   PEER - USER [TIME] "METHOD URI PROTOCOL" STATUS BYTES "REFERER" "AGENT"
#   rt=SECONDS ttfb=SECONDS|- up=UPSTREAM|- cache=VERDICT|- [why="..."]
# AL_LINE: an ERE that picks them out among the other log lines.
# AL_REST: an ERE for what comes between the status and " up=".
AL_LINE='^[^ ]+ - [^ ]+ \[[^]]+\] "'
AL_REST='[0-9]+ "[^"]*" "[^"]*" rt=[0-9]+\.[0-9]{3} ttfb=([0-9]+\.[0-9]{3}|-)'

# regcache_stop NAME: SIGTERM, wait (bounded) and succeed only if the daemon
# exited 0 with no sanitizer report in its log (a leak found at exit makes
# LeakSanitizer fail the exit status too).
regcache_stop() {
  local name=$1 v pid i rc
  v="${name}_PID"; pid=${!v}
  kill -TERM "$pid" 2>/dev/null || return 1
  for ((i = 0; i < 100; i++)); do pid_alive "$pid" || break; sleep 0.1; done
  if pid_alive "$pid"; then
    diag "$name did not exit within 10 s of SIGTERM"
    return 1
  fi
  rc=0
  wait "$pid" || rc=$?
  for i in "${!_spawn_names[@]}"; do
    [ "${_spawn_names[$i]}" != "$name" ] || _spawn_pids[i]=
  done
  if grep -qE 'Sanitizer|runtime error:' "$TESTDIR/$name.log"; then
    diag "$(grep -A20 -E 'Sanitizer|runtime error:' "$TESTDIR/$name.log" | head -40)"
    return 1
  fi
  [ "$rc" -eq 0 ] || diag "$name exited with status $rc"
  [ "$rc" -eq 0 ]
}

# built_with_sanitizers: the regcache under test is an ASan build (its
# memory numbers are then meaningless).
built_with_sanitizers() { ldd "$REGCACHE" 2>/dev/null | grep -q libasan; }

# rc_get PATH [CURL ARGS...]: a request to the regcache started as "rc";
# its status line and headers go to $RC_H, its body to $RC_B.
RC_H=$TESTDIR/rc.headers
RC_B=$TESTDIR/rc.body
rc_get() {
  local path=$1
  shift
  : >"$RC_H"; : >"$RC_B"
  # shellcheck disable=SC2154
  tcurl -o "$RC_B" -D "$RC_H" "$@" "$rc_URL$path" || true
}
rc_status() { tr -d '\r' <"$RC_H" | awk 'NR == 1 { print $2 }'; }
rc_header() { tr -d '\r' <"$RC_H" | awk -F': ' -v n="$1" 'tolower($1) == tolower(n) { v = $2 } END { print v }'; }
rc_body_is() { [ "sha256:$(sha256sum <"$RC_B" | cut -c1-64)" = "$1" ]; }
rc_code_is() { [ "$(jq -r '.errors[0].code' "$RC_B" 2>/dev/null)" = "$1" ]; }

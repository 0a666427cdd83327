# Helpers to run the regcache under test.  Source after common.sh.
# shellcheck shell=bash

# regcache_start NAME CONFIG_JSON [extra serve args...]: write the config
# (the string may use the placeholder @PORT@ for the listen port it picks),
# start `regcache serve`, and wait until /v2/ answers.  Sets ${NAME}_PORT,
# ${NAME}_URL (http://127.0.0.1:PORT), ${NAME}_ADDR (127.0.0.1:PORT),
# ${NAME}_PID and ${NAME}_LOG.
regcache_start() {
  local name=$1 json=$2 port
  shift 2
  port=$(free_port)
  printf '%s\n' "${json//@PORT@/$port}" >"$TESTDIR/$name.json"
  spawn "$name" "$REGCACHE" serve -c "$TESTDIR/$name.json" "$@"
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

#!/bin/bash
# regcache's own credentials for an upstream, from each static source
# (a password file, environment variables, a docker config.json, inline),
# against the HTTPS Basic-auth registry; the warnings about secret files
# others can read; and credentials never following a redirect to another
# host (a fake upstream that keeps its blobs "on S3").
# shellcheck disable=SC2154
set -eu
. "$(dirname "$0")/../lib/common.sh"
. "$SRCDIR/tests/lib/registry.sh"
. "$SRCDIR/tests/lib/verify.sh"
. "$SRCDIR/tests/lib/regcache.sh"

require_cmd docker-registry skopeo htpasswd openssl python3 curl jq
require_regcache
plan 19

IMG=$(mkimage "$TESTDIR/img" --seed creds --layers 2 --layer-size 150000)
registry_start_basic basic
registry_push_dir basic "$TESTDIR/img" "cred/app:latest" >/dev/null

# rc_with NAME AUTH_JSON [URL] [CA_JSON]: a regcache with one upstream "up".
rc_with() {
  local name=$1 auth=$2 url=${3:-$basic_URL} ca=${4:-\"$TLS_CA\"}
  regcache_start "$name" "{
    \"listen\": [\"127.0.0.1:@PORT@\"],
    \"data_dir\": \"$TESTDIR/data-$name\",
    \"upstreams\": [{\"name\": \"up\", \"url\": \"$url\", \"ca_file\": $ca,
                     \"auth\": $auth}]
  }" -v
}
# pull_ok NAME REF: skopeo pulls REF through that regcache; digests verify.
pull_ok() {
  local addr="${1}_ADDR"
  rm -rf "$TESTDIR/out-$1"
  skopeo_run copy --src-tls-verify=false "docker://${!addr}/$2" "dir:$TESTDIR/out-$1" &&
    verify_dir_digests "$TESTDIR/out-$1" "$IMG"
}
warned() { grep -q "$2 is readable by other users" "$1"; }

# --- a password file, readable by others: it works, with a warning ---------------
printf '%s\n' "$TEST_PASSWORD" >"$TESTDIR/pw"
chmod 644 "$TESTDIR/pw"
rc_with rcf "{\"username\": \"$TEST_USER\", \"password_file\": \"$TESTDIR/pw\"}"
check "password_file: skopeo pulls through the Basic-auth upstream, digests verify" pull_ok rcf cred/app:latest
check "a password file others can read is warned about at start-up" warned "$rcf_LOG" "$TESTDIR/pw"
check "regcache stops cleanly" regcache_stop rcf

# --- environment variables ---------------------------------------------------------
export T_REG_USER=$TEST_USER T_REG_PASS=$TEST_PASSWORD
rc_with rce '{"username_env": "T_REG_USER", "password_env": "T_REG_PASS"}'
check "username_env and password_env: the pull verifies" pull_ok rce cred/app:latest
check "regcache stops cleanly" regcache_stop rce
unset T_REG_PASS
printf '%s\n' '{"upstreams": [{"name": "up", "url": "https://127.0.0.1:9",
  "auth": {"username": "u", "password_env": "T_REG_PASS"}}]}' >"$TESTDIR/unset.json"
rc=0
"$REGCACHE" check-config -c "$TESTDIR/unset.json" >"$TESTDIR/unset.out" 2>&1 || rc=$?
diag "$(cat "$TESTDIR/unset.out")"
ok "$([ "$rc" -ne 0 ] && grep -q 'T_REG_PASS is not set' "$TESTDIR/unset.out"; echo $?)" \
  "check-config: an unset password variable is an error that names it"

# --- a docker config.json, private: no warning -------------------------------------
mkdir -p "$TESTDIR/docker"
printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$basic_HOST" \
  "$(printf '%s:%s' "$TEST_USER" "$TEST_PASSWORD" | base64 -w0)" >"$TESTDIR/docker/config.json"
chmod 600 "$TESTDIR/docker/config.json"
rc_with rcd "{\"docker_config\": \"$TESTDIR/docker/config.json\"}"
check "docker_config: the auths entry of the upstream's host is used, the pull verifies" \
  pull_ok rcd cred/app:latest
ok "$(warned "$rcd_LOG" "$TESTDIR/docker/config.json"; [ $? -ne 0 ]; echo $?)" \
  "a docker config only its owner reads: no warning"
check "regcache stops cleanly" regcache_stop rcd

# --- a wrong password: refused, no upstream challenge, no crash ----------------------
printf 'not-the-password\n' >"$TESTDIR/badpw"
chmod 600 "$TESTDIR/badpw"
rc_with rcb "{\"username\": \"$TEST_USER\", \"password_file\": \"$TESTDIR/badpw\"}"
tcurl -o "$TESTDIR/b.body" -D "$TESTDIR/b.head" "$rcb_URL/v2/cred/app/manifests/latest" || true
st=$(tr -d '\r' <"$TESTDIR/b.head" | awk 'NR == 1 { print $2 }')
ok "$([ "$st" = 401 ] || [ "$st" = 502 ]; echo $?)" "a refused password: the client gets an error ($st)"
ok "$(grep -qi 'regcache-test-basic' "$TESTDIR/b.head"; [ $? -ne 0 ]; echo $?)" \
  "the upstream's challenge does not reach the client"
check "regcache is still running" regcache_alive rcb
check "regcache stops cleanly" regcache_stop rcb

# --- inline, in a configuration file others can read --------------------------------
rc_with rci "{\"username\": \"$TEST_USER\", \"password\": \"$TEST_PASSWORD\"}"
chmod 644 "$TESTDIR/rci.json"
rc=0
"$REGCACHE" check-config -c "$TESTDIR/rci.json" >"$TESTDIR/rci.out" 2>&1 || rc=$?
ok "$([ "$rc" -eq 0 ] && warned "$TESTDIR/rci.out" "$TESTDIR/rci.json"; echo $?)" \
  "an inline password in a configuration file others can read is warned about"
check "regcache stops cleanly" regcache_stop rci

# --- a redirect to another host never carries the credentials ------------------------
registry_start_plain back
registry_push_dir back "$TESTDIR/img" "cred/app:latest" >/dev/null
fport=$(free_port)
spawn s3 python3 -u "$TOOLSDIR/fakeupstream.py" proxy-faulty "$fport" --target "$back_URL" \
  --fault none --require-basic "$TEST_USER:$TEST_PASSWORD" --redirect-blobs
wait_http "http://127.0.0.1:$fport/v2/"
rc_with rcr "{\"username\": \"$TEST_USER\", \"password\": \"$TEST_PASSWORD\"}" \
  "http://127.0.0.1:$fport" null
check "a registry that redirects blobs to another host: the pull verifies" pull_ok rcr cred/app:latest
n=$(count_lines "$s3_LOG" '^redirected GET .* auth=')
y=$(count_lines "$s3_LOG" '^redirected .* auth=yes')
ok "$([ "$n" -ge 3 ] && [ "$y" -eq 0 ]; echo $?)" \
  "every blob came from the redirect target, none with Authorization ($n GETs, $y with)"
ok "$(grep -q 'X-Amz-Signature' "$rcr_LOG"; [ $? -ne 0 ]; echo $?)" \
  "the presigned query of the redirect is not logged"
check "regcache stops cleanly" regcache_stop rcr

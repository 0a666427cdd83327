#!/bin/bash
# SIGHUP and SIGTERM with a 512 MiB download under way.
#
# SIGHUP with a broken configuration changes nothing.  SIGHUP with one that
# adds an upstream and swaps the TLS listener's certificate: the download
# (over TLS, rate-limited by the client so it outlasts the reload)
# completes intact, the new upstream serves, a new TLS connection sees the
# new certificate.  SIGTERM during a download: no new connections, the
# download completes, regcache exits 0, and a restart finds the blob in the
# cache.  A second SIGTERM exits at once.
# shellcheck disable=SC2154
set -eu
. "$(dirname "$0")/../lib/common.sh"
. "$SRCDIR/tests/lib/registry.sh"
. "$SRCDIR/tests/lib/verify.sh"
. "$SRCDIR/tests/lib/regcache.sh"

require_cmd docker-registry skopeo openssl python3 curl jq sha256sum
require_regcache
plan 18

SIZE=$((512 * 1024 * 1024))
RATE=30M          # the slow client: about 17 s for the blob
head -c "$SIZE" /dev/urandom >"$TESTDIR/big.blob"
DIGEST=sha256:$(sha256sum <"$TESTDIR/big.blob" | cut -d' ' -f1)
registry_start_plain up
check "the upstream holds a 512 MiB blob" \
  registry_upload_blob up test/big "$TESTDIR/big.blob" "$DIGEST"
IMG=$(mkimage "$TESTDIR/img" --seed reload --layers 1 --layer-size 100000)
registry_start_plain extra
registry_push_dir extra "$TESTDIR/img" "x/app:latest" >/dev/null

# A second certificate for 127.0.0.1 from the same CA, told apart by its
# fingerprint.
tls_init
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1 reloaded" \
  -keyout "$TESTDIR/pki/new.key" -out "$TESTDIR/pki/new.csr" 2>/dev/null
openssl x509 -req -in "$TESTDIR/pki/new.csr" -CA "$TLS_CA" -CAkey "$TESTDIR/pki/ca.key" \
  -CAserial "$TESTDIR/pki/ca.srl" -days 2 -extfile "$TESTDIR/pki/server.ext" \
  -out "$TESTDIR/pki/new.crt" 2>/dev/null
fp() { openssl x509 -noout -fingerprint -sha256 -in "$1" | cut -d= -f2; }
OLD_FP=$(fp "$TLS_CERT")
NEW_FP=$(fp "$TESTDIR/pki/new.crt")

TLS_PORT=$(free_port)
config() { # config CERT KEY [EXTRA_UPSTREAM_JSON]
  printf '%s' "{
  \"listen\": [\"127.0.0.1:@PORT@\",
    {\"address\": \"127.0.0.1:$TLS_PORT\", \"tls\": {\"certificate\": \"$1\", \"key\": \"$2\"}}],
  \"data_dir\": \"$TESTDIR/data\",
  \"upstreams\": [ {\"name\": \"up\", \"url\": \"$up_URL\"}${3:+, $3} ]
}"
}
regcache_start rc "$(config "$TLS_CERT" "$TLS_KEY")" -v
RC_JSON=$TESTDIR/rc.json
BLOB=/v2/test/big/blobs/$DIGEST

# served_cert: the fingerprint a new TLS connection is shown.
served_cert() {
  openssl s_client -connect "127.0.0.1:$TLS_PORT" -servername 127.0.0.1 </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 | cut -d= -f2
}
ok "$([ "$(served_cert)" = "$OLD_FP" ]; echo $?)" "TLS listener: the first certificate"

# size_over FILE BYTES
size_over() { [ -f "$1" ] && [ "$(stat -c %s "$1")" -gt "$2" ]; }
# download_ok NAME FILE: the spawned curl NAME exited 0 and FILE is the blob.
download_ok() {
  local v="${1}_PID" rc=0
  wait_for "$1 to end" 120 eval "! pid_alive ${!v}"
  wait "${!v}" || rc=$?
  [ "$rc" -eq 0 ] || { echo "curl exited $rc"; return 1; }
  [ "sha256:$(sha256sum <"$2" | cut -d' ' -f1)" = "$DIGEST" ]
}

# --- SIGHUP during a download ------------------------------------------------------
spawn dl1 curl -q -sS -f --max-time 300 --limit-rate "$RATE" --cacert "$TLS_CA" \
  -o "$TESTDIR/dl1.blob" "https://127.0.0.1:$TLS_PORT$BLOB"
wait_for "the first 20 MB of the download" 60 size_over "$TESTDIR/dl1.blob" $((20 << 20))

cp "$RC_JSON" "$TESTDIR/good.json"
printf '{"listen": ["127.0.0.1:%s"], "upstreams": [{"name": "up"' "$rc_PORT" >"$RC_JSON"
kill -HUP "$rc_PID"
wait_for "the refused reload" 20 grep -q 'reload refused' "$rc_LOG"
diag "$(grep 'reload refused' "$rc_LOG" | tail -n 1)"
ok "$(grep -q 'reload refused: .*rc.json.*the running configuration stays' "$rc_LOG"; echo $?)" \
  "a broken configuration on SIGHUP is refused, with the reason in the log"
st=$(tcurl -o /dev/null -w '%{http_code}' "$rc_URL/v2/extra/x/app/manifests/latest" || true)
ok "$([ "$st" = 404 ] && [ "$(served_cert)" = "$OLD_FP" ]; echo $?)" \
  "nothing changed: no new upstream ($st), the same certificate"

# The running configuration (with the admin listener the harness added),
# a certificate and an upstream more.
jq --arg crt "$TESTDIR/pki/new.crt" --arg key "$TESTDIR/pki/new.key" --arg url "$extra_URL" \
  '.listen[1].tls = {certificate: $crt, key: $key} |
   .upstreams += [{name: "extra", url: $url, prefix: "extra"}]' "$TESTDIR/good.json" >"$RC_JSON"
kill -HUP "$rc_PID"
wait_for "the reload" 20 grep -q 'configuration reloaded: 2 upstreams' "$rc_LOG"
pass "SIGHUP with a configuration adding an upstream and a new certificate: reloaded"
ok "$([ "$(served_cert)" = "$NEW_FP" ]; echo $?)" "a new TLS connection sees the new certificate"
pull_extra() {
  skopeo_run copy --src-tls-verify=false "docker://$rc_ADDR/extra/x/app:latest" "dir:$TESTDIR/out" &&
    verify_dir_digests "$TESTDIR/out" "$IMG"
}
check "the new upstream serves: skopeo pulls extra/x/app, every file matches its digest" pull_extra
ok "$(pid_alive "$dl1_PID"; echo $?)" "the download is still under way"
check "the download begun before the reload completes, every byte right" download_ok dl1 "$TESTDIR/dl1.blob"
check "regcache is still running" regcache_alive rc

# --- SIGTERM during a download ----------------------------------------------------
spawn dl2 curl -q -sS -f --max-time 300 --limit-rate "$RATE" -o "$TESTDIR/dl2.blob" "$rc_URL$BLOB"
wait_for "the first 20 MB of the second download" 60 size_over "$TESTDIR/dl2.blob" $((20 << 20))
kill -TERM "$rc_PID"
wait_for "the drain to begin" 20 grep -q 'draining' "$rc_LOG"
st=$(curl -q -s -o /dev/null -w '%{http_code}' --max-time 2 "$rc_URL/v2/" || true)
ok "$([ "$st" != 200 ]; echo $?)" "while draining, a new connection is not served ($st)"
st=$(tcurl -o /dev/null -w '%{http_code}' "$rc_ADMIN_URL/readyz" || true)
ok "$([ "$st" = 503 ]; echo $?)" "while draining, /readyz says not ready ($st)"
ok "$(pid_alive "$rc_PID"; echo $?)" "regcache waits for the download"
check "the download completes, every byte right" download_ok dl2 "$TESTDIR/dl2.blob"
exit_status() {
  local rc=0
  wait_for "regcache to exit" 20 eval "! pid_alive $rc_PID"
  wait "$rc_PID" || rc=$?
  echo "exit status $rc"
  [ "$rc" -eq 0 ]
}
check "then regcache exits 0" exit_status
ok "$(grep -q 'drained: every request answered' "$rc_LOG"; echo $?)" "the log says the drain finished"

# --- a restart finds the cache intact; a second signal exits at once ------------------
regcache_start rc2 "$(config "$TESTDIR/pki/new.crt" "$TESTDIR/pki/new.key")"
tcurl -o "$TESTDIR/dl3.blob" -D "$TESTDIR/dl3.head" "$rc2_URL$BLOB" || true
ok "$(grep -qi '^X-Cache: HIT' "$TESTDIR/dl3.head" &&
  [ "sha256:$(sha256sum <"$TESTDIR/dl3.blob" | cut -d' ' -f1)" = "$DIGEST" ]; echo $?)" \
  "after the restart the blob is served from the cache, intact"
spawn dl4 curl -q -sS --max-time 300 --limit-rate 5M -o "$TESTDIR/dl4.blob" "$rc2_URL$BLOB"
wait_for "the first MB of a slow download" 60 size_over "$TESTDIR/dl4.blob" $((1 << 20))
kill -TERM "$rc2_PID"
wait_for "the drain to begin" 20 grep -q 'draining' "$rc2_LOG"
t0=$(date +%s%N)
kill -TERM "$rc2_PID"
wait_for "regcache to exit" 10 eval "! pid_alive $rc2_PID"
ms=$((($(date +%s%N) - t0) / 1000000))
ok "$([ "$ms" -lt 5000 ] && grep -q 'again: exiting now' "$rc2_LOG"; echo $?)" \
  "a second SIGTERM exits at once (${ms} ms), the download cut short"
wait "$rc2_PID" || true

#!/bin/bash
# Local clients log in to regcache (the "auth" section): htpasswd users,
# regcache's own token service (GET with Basic, POST with the OAuth2
# password grant) and access rules.  The upstream is a plain
# docker-registry holding team/app and other/lib.  alice may pull team/*;
# bob is a user no rule mentions; nobody may pull anonymously.
#
# skopeo and containerd's ctr pull as alice and every digest is checked;
# a wrong password, bob, an anonymous client, a tampered token and a token
# for another repository are each refused with the right status, code
# and challenge; the realm follows Host and X-Forwarded-Proto/Host; a slow
# bcrypt check does not hold up other requests; tokens survive a restart.
#
# With SECRETS_FILE set, every password and token used is appended to it,
# one per line, for a scan of logs for secrets.
# shellcheck disable=SC2154
set -eu
. "$(dirname "$0")/../lib/common.sh"
. "$SRCDIR/tests/lib/registry.sh"
. "$SRCDIR/tests/lib/verify.sh"
. "$SRCDIR/tests/lib/regcache.sh"
. "$SRCDIR/tests/lib/clients.sh"

require_cmd docker-registry skopeo htpasswd python3 curl jq
require_regcache
plan 33

ALICE_PW=alice-test-password
BOB_PW=bob-test-password
CAROL_PW=carol-test-password
WRONG_PW=not-alices-password
# secret VALUE...: note values a log must never show.
secret() { [ -z "${SECRETS_FILE:-}" ] || printf '%s\n' "$@" >>"$SECRETS_FILE"; }
secret "$ALICE_PW" "$BOB_PW" "$CAROL_PW" "$WRONG_PW"

case $(uname -m) in
  x86_64) ARCH=amd64 ;; aarch64 | arm64) ARCH=arm64 ;; ppc64le) ARCH=ppc64le ;;
  s390x) ARCH=s390x ;; *) ARCH=amd64 ;;
esac
APP=$(mkimage "$TESTDIR/img-app" --seed localauth-app --layers 2 --layer-size 100000 \
  --platforms "linux/$ARCH")
mkimage "$TESTDIR/img-lib" --seed localauth-lib --layers 1 --layer-size 50000 >/dev/null
registry_start_plain up
registry_push_dir up "$TESTDIR/img-app" team/app:latest >/dev/null
registry_push_dir up "$TESTDIR/img-lib" other/lib:latest >/dev/null

# Apache's htpasswd makes bcrypt entries; carol's costs 2^15 rounds
# (over a second) so that her check is still running while we look.
HTPASSWD=$TESTDIR/htpasswd
htpasswd -cbB "$HTPASSWD" alice "$ALICE_PW" 2>/dev/null
htpasswd -bB "$HTPASSWD" bob "$BOB_PW" 2>/dev/null
htpasswd -bB -C 15 "$HTPASSWD" carol "$CAROL_PW" 2>/dev/null
chmod 600 "$HTPASSWD"

RC_JSON="{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$TESTDIR/data\",
  \"upstreams\": [{\"name\": \"hub\", \"url\": \"$up_URL\", \"aliases\": [\"docker.io\"]}],
  \"auth\": {
    \"htpasswd\": \"$HTPASSWD\",
    \"token_ttl\": \"5m\",
    \"groups\": {\"devs\": [\"alice\", \"carol\"]},
    \"rules\": [{\"groups\": [\"devs\"], \"upstreams\": [\"hub\"],
                \"repositories\": [\"team/*\"], \"allow\": true}]
  }
}"
regcache_start rc "$RC_JSON" -v

OCI_M=application/vnd.oci.image.manifest.v1+json
BODY=$TESTDIR/body
HDRS=$TESTDIR/headers

# token USER:PASS SCOPE...: print a token from the GET endpoint.
token() {
  local creds=$1 args=() s
  shift
  for s; do args+=(--data-urlencode "scope=$s"); done
  tcurl -f -G -u "$creds" --data-urlencode service=regcache "${args[@]}" \
    "$rc_URL/auth/token" | jq -er .token
}
# status URL [CURL ARGS...]: print the HTTP status; body in $BODY, headers in $HDRS.
status() {
  local url=$1
  shift
  tcurl -o "$BODY" -D "$HDRS" -w '%{http_code}' "$@" "$url" || true
}
# challenge: the WWW-Authenticate value of the last status call.
challenge() { tr -d '\r' <"$HDRS" | sed -n 's/^[Ww][Ww][Ww]-[Aa]uthenticate: //p'; }
code_is() { jq -e --arg c "$1" '.errors[0].code == $c' "$BODY" >/dev/null; }

# --- real clients --------------------------------------------------------------
skopeo_pull() {
  skopeo_run copy --src-tls-verify=false --src-creds "alice:$ALICE_PW" \
    "docker://$rc_ADDR/team/app:latest" "dir:$TESTDIR/out-app" &&
    verify_dir_digests "$TESTDIR/out-app" "$APP"
}
check "skopeo --src-creds alice pulls team/app; every file matches its digest" skopeo_pull

skopeo_wrong() {
  ! skopeo_run copy --src-tls-verify=false --src-creds "alice:$WRONG_PW" \
    "docker://$rc_ADDR/team/app:latest" "dir:$TESTDIR/out-wrong" &&
    [ ! -e "$TESTDIR/out-wrong/manifest.json" ]
}
check "skopeo with a wrong password fails and gets nothing" skopeo_wrong

# --- the token service -----------------------------------------------------------
wrong_password() {
  [ "$(status "$rc_URL/auth/token?service=regcache&scope=repository:team/app:pull" \
      -u "alice:$WRONG_PW")" = 401 ] && code_is UNAUTHORIZED &&
    [ "$(challenge)" = 'Basic realm="regcache"' ]
}
check "token endpoint, wrong password: 401 UNAUTHORIZED with a Basic challenge" wrong_password

no_anonymous() {
  [ "$(status "$rc_URL/auth/token?service=regcache&scope=repository:team/app:pull")" = 401 ] &&
    code_is UNAUTHORIZED
}
check "token endpoint without credentials: 401 (no rule allows anonymous pulls)" no_anonymous

ALICE_TOKEN=$(token "alice:$ALICE_PW" repository:team/app:pull repository:other/lib:pull)
BOB_TOKEN=$(token "bob:$BOB_PW" repository:team/app:pull)
secret "$ALICE_TOKEN" "$BOB_TOKEN"

token_claims() {
  # The payload is base64url JSON; the grant lists pull only, never push.
  local t
  t=$(token "alice:$ALICE_PW" "repository:team/app:pull,push" registry:catalog:*) || return 1
  secret "$t"
  t=$(cut -d. -f2 <<<"$t" | tr '_-' '/+')
  while [ $((${#t} % 4)) -ne 0 ]; do t+='='; done
  base64 -d <<<"$t" | tee "$TESTDIR/claims" | jq -e '.iss == "regcache" and .aud == "regcache"
    and .sub == "alice" and .exp - .iat == 300
    and .access == [{"type": "repository", "name": "team/app", "actions": ["pull"]}]'
}
check "token claims: iss, aud, sub, 5 min, only pull of the repositories asked for" token_claims

post_form() {
  local json t
  json=$(tcurl -f -X POST --data-urlencode grant_type=password --data-urlencode username=alice \
    --data-urlencode "password=$ALICE_PW" --data-urlencode service=regcache \
    --data-urlencode "scope=repository:team/app:pull repository:other/lib:pull" \
    --data-urlencode client_id=regcache-test "$rc_URL/auth/token") || return 1
  t=$(jq -er .access_token <<<"$json") || return 1
  secret "$t"
  jq -e '.token == .access_token and .expires_in == 300 and
    (.issued_at | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"))' <<<"$json" &&
    [ "$(status "$rc_URL/v2/team/app/manifests/latest" -H "Accept: $OCI_M" \
        -H "Authorization: Bearer $t")" = 200 ] &&
    [ "sha256:$(sha256sum <"$BODY" | cut -d' ' -f1)" = "$APP" ]
}
check "POST form (password grant) gives a token that pulls the manifest" post_form

post_wrong() {
  [ "$(status "$rc_URL/auth/token" -X POST --data-urlencode grant_type=password \
      --data-urlencode username=alice --data-urlencode "password=$WRONG_PW" \
      --data-urlencode service=regcache)" = 401 ] && code_is UNAUTHORIZED
}
check "POST form with a wrong password: 401" post_wrong

# --- the checks on /v2/ ----------------------------------------------------------
anon_manifest() {
  [ "$(status "$rc_URL/v2/team/app/manifests/latest")" = 401 ] && code_is UNAUTHORIZED &&
    [ "$(challenge)" = "Bearer realm=\"http://127.0.0.1:$rc_PORT/auth/token\",service=\"regcache\",scope=\"repository:team/app:pull\"" ]
}
check "anonymous manifest GET: 401 with realm http://127.0.0.1:$rc_PORT/auth/token and the scope" anon_manifest

root() {
  [ "$(status "$rc_URL/v2/")" = 401 ] &&
    [ "$(challenge)" = "Bearer realm=\"http://127.0.0.1:$rc_PORT/auth/token\",service=\"regcache\"" ] &&
    [ "$(status "$rc_URL/v2/" -H "Authorization: Bearer $ALICE_TOKEN")" = 200 ]
}
check "GET /v2/: 401 with a challenge without scope; 200 with a token" root

forwarded() {
  status "$rc_URL/v2/team/app/manifests/latest" -H 'X-Forwarded-Proto: https' \
    -H 'X-Forwarded-Host: mirror.example:8443, proxy.internal' >/dev/null
  challenge | grep -qF 'Bearer realm="https://mirror.example:8443/auth/token",' || return 1
  status "$rc_URL/v2/" -H 'Host: cache.example:5000' >/dev/null
  challenge | grep -qF 'Bearer realm="http://cache.example:5000/auth/token",' || return 1
  # A forged header that would break out of the quotes is ignored.
  status "$rc_URL/v2/" -H 'X-Forwarded-Host: evil.example",x="y' -H 'X-Forwarded-Proto: gopher' \
    >/dev/null
  challenge | grep -qF "Bearer realm=\"http://127.0.0.1:$rc_PORT/auth/token\","
}
check "the realm follows X-Forwarded-Proto/Host and Host; bad values are ignored" forwarded

bob_denied() {
  [ "$(status "$rc_URL/v2/team/app/manifests/latest" -H "Authorization: Bearer $BOB_TOKEN")" = 403 ] &&
    code_is DENIED
}
check "bob's token: 403 DENIED (no rule lets him pull)" bob_denied

alice_other() {
  [ "$(status "$rc_URL/v2/other/lib/manifests/latest" -H "Authorization: Bearer $ALICE_TOKEN")" = 403 ] &&
    code_is DENIED
}
check "alice's token for other/lib: 403 DENIED (her rule covers team/*)" alice_other

insufficient() {
  [ "$(status "$rc_URL/v2/team/web/manifests/latest" -H "Authorization: Bearer $ALICE_TOKEN")" = 401 ] &&
    code_is UNAUTHORIZED && challenge | grep -qF 'scope="repository:team/web:pull",error="insufficient_scope"'
}
check "a token that does not name the repository: 401 insufficient_scope" insufficient

tampered() {
  local t=$ALICE_TOKEN payload
  # The same signature on a payload that says bob: refused.
  payload=$(printf '{"iss":"regcache","sub":"bob","aud":"regcache","exp":%d,"access":[]}' \
    $(($(date +%s) + 300)) | base64 -w0 | tr '+/' '-_' | tr -d '=')
  t="${t%%.*}.$payload.${t##*.}"
  secret "$t"
  [ "$(status "$rc_URL/v2/team/app/manifests/latest" -H "Authorization: Bearer $t")" = 401 ] &&
    code_is UNAUTHORIZED && challenge | grep -qF 'error="invalid_token"' || return 1
  # One character of the signature changed.
  t=$ALICE_TOKEN
  if [ "${t:${#t}-5:1}" = A ]; then t="${t:0:${#t}-5}B${t:${#t}-4}"; else t="${t:0:${#t}-5}A${t:${#t}-4}"; fi
  [ "$(status "$rc_URL/v2/team/app/manifests/latest" -H "Authorization: Bearer $t")" = 401 ]
}
check "a tampered token: 401 invalid_token" tampered

alice_blob() {
  local layer
  layer=$(jq -r '.layers[0].digest' "$TESTDIR/out-app/manifest.json")
  [ "$(status "$rc_URL/v2/team/app/blobs/$layer" -H "Authorization: Bearer $ALICE_TOKEN")" = 200 ] &&
    [ "sha256:$(sha256sum <"$BODY" | cut -d' ' -f1)" = "$layer" ]
}
check "alice's token pulls a blob of team/app" alice_blob

# --- bcrypt runs beside the event loop -------------------------------------------
# carol's check costs over a second of CPU.  For as long as her token
# request runs, GET /v2/ is asked again and again: every answer must come
# at once (a check on the event loop would hold one of them up for the
# whole check), and her token comes afterwards.
not_blocking() {
  local pid n=0 t max=0 t0 t1
  t0=$(date +%s%N)
  tcurl -G -u "carol:$CAROL_PW" --data-urlencode service=regcache \
    --data-urlencode scope=repository:team/app:pull -o "$TESTDIR/carol.json" \
    -w '%{http_code}' "$rc_URL/auth/token" >"$TESTDIR/carol.status" &
  pid=$!
  while pid_alive "$pid"; do
    t=$(tcurl -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $ALICE_TOKEN" \
      "$rc_URL/v2/") || t=99
    n=$((n + 1))
    max=$(awk -v a="$max" -v b="$t" 'BEGIN { print (b > a) ? b : a }')
  done
  wait "$pid" || true
  t1=$(date +%s%N)
  diag "carol's token took $(((t1 - t0) / 1000000)) ms; meanwhile $n GET /v2/, the slowest ${max}s"
  secret "$(jq -r .token "$TESTDIR/carol.json" 2>/dev/null || true)"
  [ "$n" -ge 3 ] && awk -v t="$max" 'BEGIN { exit !(t < 0.5) }' &&
    [ "$(cat "$TESTDIR/carol.status")" = 200 ] && jq -e .token "$TESTDIR/carol.json" >/dev/null
}
check "a slow bcrypt check does not hold up other requests; carol gets her token" not_blocking

cached() {
  local before t0 t1
  before=$(count_lines "$rc_LOG" 'token request [0-9]+: checking a password')
  t0=$(date +%s%N)
  token "carol:$CAROL_PW" repository:team/app:pull >"$TESTDIR/carol2" || return 1
  t1=$(date +%s%N)
  secret "$(cat "$TESTDIR/carol2")"
  diag "second token for carol took $(((t1 - t0) / 1000000)) ms"
  [ "$(count_lines "$rc_LOG" 'token request [0-9]+: checking a password')" = "$before" ]
}
check "a password that just checked out is not checked again" cached

# --- the logs --------------------------------------------------------------------
access_user() {
  grep -qE '^127\.0\.0\.1 - alice \[[^]]+\] "GET /v2/team/app/blobs/sha256:[0-9a-f]{64} HTTP/1\.[01]" 200 ' "$rc_LOG" &&
    grep -qE '^127\.0\.0\.1 - bob \[[^]]+\] "GET /v2/team/app/manifests/latest HTTP/1\.[01]" 403 ' "$rc_LOG" &&
    grep -qE '^127\.0\.0\.1 - - \[[^]]+\] "GET /v2/team/app/manifests/latest HTTP/1\.[01]" 401 ' "$rc_LOG" &&
    grep -qE '^127\.0\.0\.1 - alice \[[^]]+\] "POST /auth/token HTTP/1\.[01]" 200 ' "$rc_LOG"
}
check "the access log names the user (- for none)" access_user
no_secret_logged() {
  ! grep -qF -e "$ALICE_PW" -e "$WRONG_PW" -e "$BOB_PW" -e "$CAROL_PW" \
      -e "${ALICE_TOKEN##*.}" -e "${BOB_TOKEN##*.}" "$rc_LOG"
}
check "no password or token signature in regcache's debug log" no_secret_logged

# --- containerd ------------------------------------------------------------------
# As in clients.sh: containerd as root with its own root, state and socket
# under $TESTDIR, in a private mount namespace; ctr reaches regcache
# through a hosts.toml mirror for docker.io (so with ?ns=docker.io) and
# logs in with --user, which makes containerd use the POST form.
CTR_TESTS=("containerd: ctr pull --user alice through the hosts.toml mirror: the generated digest"
  "containerd: its token came from a POST, every request went through regcache as alice")
run_containerd() {
  local d=$TESTDIR/containerd rc dead_port before
  # Anything that would leave loopback (a fallback to Docker Hub) goes to
  # a port where nothing listens and fails at once.
  dead_port=$(free_port)
  local proxy=(HTTP_PROXY="http://127.0.0.1:$dead_port" HTTPS_PROXY="http://127.0.0.1:$dead_port"
    NO_PROXY=127.0.0.1 no_proxy=127.0.0.1)
  isolate_init
  if ! containerd_start "$d" "${proxy[@]}"; then
    skip_n "$CONTAINERD_SKIP" "${CTR_TESTS[@]}"
    return 0
  fi
  mkdir -p "$d/hosts/docker.io"
  cat >"$d/hosts/docker.io/hosts.toml" <<EOF
server = "https://registry-1.docker.io"

[host."http://$rc_ADDR"]
  capabilities = ["pull", "resolve"]
EOF
  before=$(wc -l <"$rc_LOG")
  rc=0
  env "${proxy[@]}" "${CTR[@]}" --timeout 90s images pull --hosts-dir "$d/hosts" \
    --snapshotter native --user "alice:$ALICE_PW" "docker.io/team/app:latest" \
    >"$d/pull.log" 2>&1 || rc=$?
  local got
  got=$("${CTR[@]}" images ls | awk '$1 == "docker.io/team/app:latest" { print $3 }')
  ok "$([ "$rc" = 0 ] && [ "$got" = "$APP" ]; echo $?)" "${CTR_TESTS[0]}"
  [ "$rc" = 0 ] || diag "ctr exit status $rc:" "$(tail -n 20 "$d/pull.log")"
  ctr_via_regcache() {
    local lines
    lines=$(tail -n +$((before + 1)) "$rc_LOG" | grep -E "$AL_LINE")
    printf '%s\n' "$lines"
    grep -qE ' alice \[[^]]+\] "POST /auth/token HTTP/1\.[01]" 200 ' <<<"$lines" &&
      grep -qE " alice \\[[^]]+\\] \"(GET|HEAD) /v2/team/app/manifests/latest\\?ns=docker\\.io HTTP/1\\.[01]\" 200 " <<<"$lines" &&
      grep -qE " alice \\[[^]]+\\] \"GET /v2/team/app/blobs/sha256:[0-9a-f]{64}\\?ns=docker\\.io HTTP/1\\.[01]\" 200 " <<<"$lines"
  }
  check "${CTR_TESTS[1]}" ctr_via_regcache
  "${CTR[@]}" images rm "docker.io/team/app:latest" >/dev/null 2>&1 || true
  stop_group containerd
}
run_containerd

# --- restarts ----------------------------------------------------------------------
key_file() {
  [ "$(stat -c %a "$TESTDIR/data/token.key")" = 600 ] &&
    [ "$(stat -c %s "$TESTDIR/data/token.key")" = 32 ]
}
check "the token key is DATA/token.key, 32 bytes, mode 600" key_file
check "regcache is still running" regcache_alive rc
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

KEY_BEFORE=$(sha256sum <"$TESTDIR/data/token.key")
regcache_start rc2 "$RC_JSON"
after_restart() {
  [ "$(sha256sum <"$TESTDIR/data/token.key")" = "$KEY_BEFORE" ] &&
    [ "$(status "$rc2_URL/v2/team/app/manifests/latest" -H "Accept: $OCI_M" \
        -H "Authorization: Bearer $ALICE_TOKEN")" = 200 ] &&
    [ "sha256:$(sha256sum <"$BODY" | cut -d' ' -f1)" = "$APP" ]
}
check "after a restart the same key is used and alice's token still pulls" after_restart
# A third daemon, with a rule for anonymous clients in front and the
# htpasswd file made readable by everyone.
ANON_JSON=${RC_JSON//\/data\"/\/data3\"}
ANON_RULE='{"anonymous": true, "repositories": ["team/app"], "allow": true},'
ANON_JSON=${ANON_JSON/\"rules\": \[/\"rules\": [$ANON_RULE}
chmod 644 "$HTPASSWD"
regcache_start rc3 "$ANON_JSON"
check "a world-readable htpasswd file is warned about at start-up" \
  grep -q "auth: $HTPASSWD is readable by others" "$rc3_LOG"
anonymous() {
  local t
  t=$(tcurl -f -G --data-urlencode service=regcache --data-urlencode scope=repository:team/app:pull \
    --data-urlencode scope=repository:other/lib:pull "$rc3_URL/auth/token" | jq -er .token) || return 1
  secret "$t"
  [ "$(status "$rc3_URL/v2/team/app/manifests/latest" -H "Accept: $OCI_M" \
      -H "Authorization: Bearer $t")" = 200 ] &&
    [ "sha256:$(sha256sum <"$BODY" | cut -d' ' -f1)" = "$APP" ] &&
    [ "$(status "$rc3_URL/v2/other/lib/manifests/latest" -H "Authorization: Bearer $t")" = 403 ] &&
    code_is DENIED &&
    grep -qE '^127\.0\.0\.1 - - \[[^]]+\] "GET /v2/team/app/manifests/latest HTTP/1\.[01]" 200 ' "$rc3_LOG"
}
check "with an anonymous rule: a token without credentials pulls team/app, not other/lib" anonymous
check "regcache exits 0 on SIGTERM after the restart" regcache_stop rc2
check "the daemon with the anonymous rule exits 0 too" regcache_stop rc3

# A reload that turns the users off while carol's slow check is under
# way: her check no longer counts (401), nothing crashes, pulls are open.
regcache_start rc4 "${RC_JSON//\/data\"/\/data4\"}" -v
spawn carol4 curl -q -s -o /dev/null -w '%{http_code}' --max-time 30 -u "carol:$CAROL_PW" \
  "$rc4_URL/auth/token?service=regcache&scope=repository:team/app:pull"
wait_for "carol's check to start" 20 grep -q 'checking a password' "$rc4_LOG"
jq 'del(.auth)' "$TESTDIR/rc4.json" >"$TESTDIR/rc4.new" && mv "$TESTDIR/rc4.new" "$TESTDIR/rc4.json"
kill -HUP "$rc4_PID"
wait_for "the reload" 20 grep -q 'configuration reloaded' "$rc4_LOG"
carol_refused() {
  wait_for "carol's answer" 30 eval "! pid_alive $carol4_PID"
  wait "$carol4_PID" || true
  echo "carol got $(cat "$carol4_LOG")"
  [ "$(cat "$carol4_LOG")" = 401 ]
}
check "a check begun before a reload that drops the users: 401, no token" carol_refused
check "regcache survived it" regcache_alive rc4
check "after the reload pulls are open: a manifest without a token, 200" \
  eval '[ "$(status "$rc4_URL/v2/team/app/manifests/latest" -H "Accept: $OCI_M")" = 200 ]'
check "regcache exits 0 on SIGTERM after the reload" regcache_stop rc4

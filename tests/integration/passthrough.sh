#!/bin/bash
# Pass-through auth against the Bearer-token upstream (the Docker Hub
# shape): regcache has no credentials of its own; clients log in with
# theirs through regcache's relay (/auth/passthrough/NAME), and what is
# cached is served to a client only once the upstream said yes to it.
# shellcheck disable=SC2154
set -eu
. "$(dirname "$0")/../lib/common.sh"
. "$SRCDIR/tests/lib/registry.sh"
. "$SRCDIR/tests/lib/verify.sh"
. "$SRCDIR/tests/lib/regcache.sh"

require_cmd docker-registry skopeo python3 curl jq
require_regcache
plan 24

PRIV=$(mkimage "$TESTDIR/img-priv" --seed pt-private --layers 2 --layer-size 200000)
PUB=$(mkimage "$TESTDIR/img-pub" --seed pt-public --layers 1 --layer-size 100000)
registry_start_token tok --public 'pub/*'
registry_push_dir tok "$TESTDIR/img-priv" "private/app:latest" >/dev/null
registry_push_dir tok "$TESTDIR/img-pub" "pub/app:latest" >/dev/null

regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\"],
  \"data_dir\": \"$TESTDIR/data\",
  \"upstreams\": [
    {\"name\": \"tok\", \"url\": \"$tok_URL\", \"auth\": {\"passthrough\": true}}
  ]
}" -v
REALM="http://$rc_ADDR/auth/passthrough/tok"
TOKLOG=$TESTDIR/tok_tokensrv.log


# 1. The version check tells clients to log in at regcache.
rc_get /v2/
ok "$([ "$(rc_status)" = 401 ] && rc_code_is UNAUTHORIZED; echo $?)" "/v2/ without credentials: 401 UNAUTHORIZED"
ch=$(rc_header WWW-Authenticate)
diag "challenge: $ch"
ok "$(case $ch in "Bearer realm=\"$REALM\",service=\"$tok_SERVICE\""*) echo 0 ;; *) echo 1 ;; esac)" \
  "the challenge's realm is regcache's relay, the upstream's service kept"
ok "$(case $ch in *"$tok_REALM"*) echo 1 ;; *) echo 0 ;; esac)" \
  "the upstream's realm does not reach the client"

# 2. A client with upstream credentials pulls the private repository.
pull_priv() {
  skopeo_run copy --src-tls-verify=false --src-creds "$TEST_USER:$TEST_PASSWORD" \
    "docker://$rc_ADDR/private/app:latest" "dir:$TESTDIR/out1" &&
    verify_dir_digests "$TESTDIR/out1" "$PRIV"
}
n0=$(count_lines "$TOKLOG" 'user=testuser')
check "with upstream credentials: skopeo pulls private/app, every file matches its digest" pull_priv
n=$(( $(count_lines "$TOKLOG" 'user=testuser') - n0 ))
ok "$([ "$n" -ge 1 ]; echo $?)" "the upstream's token service saw that user's token requests, relayed ($n)"
n=$(count_lines "$rc_LOG" '"(GET|POST) /auth/passthrough/tok HTTP/1\.[01]" 200 .* up=tok ')
ok "$([ "$n" -ge 1 ]; echo $?)" "regcache relayed them ($n in its access log)"

# 3. Everything of private/app is in the cache now; a client without
# credentials still gets nothing of it.
LAYER=$(jq -r '.layers[0].digest' "$TESTDIR/out1/manifest.json")
rc_get "/v2/private/app/blobs/$LAYER"
ok "$([ "$(rc_status)" = 401 ] && rc_code_is UNAUTHORIZED; echo $?)" \
  "a cached private layer without credentials: 401, not the bytes"
ok "$(case $(rc_header WWW-Authenticate) in "Bearer realm=\"$REALM\""*'scope="repository:private/app:pull"'*) echo 0 ;; *) echo 1 ;; esac)" \
  "with the rewritten challenge for that repository"
rc_get "/v2/private/app/manifests/latest"
ok "$([ "$(rc_status)" = 401 ]; echo $?)" "the cached private manifest without credentials: 401"
no_creds() {
  ! skopeo_run copy --src-tls-verify=false "docker://$rc_ADDR/private/app:latest" \
    "dir:$TESTDIR/out2"
}
check "without credentials: skopeo cannot pull private/app" no_creds
# An anonymous token (the relay hands one out for public scopes) does not
# open the private repository either.
anon_tok=$(tcurl "$REALM?service=$tok_SERVICE&scope=repository:private/app:pull" | jq -r .token)
record_secret "$anon_tok"
rc_get "/v2/private/app/blobs/$LAYER" -H "Authorization: Bearer $anon_tok"
ok "$([ "$(rc_status)" = 401 ] || [ "$(rc_status)" = 403 ]; echo $?)" \
  "an anonymous token without pull on private/app: refused ($(rc_status))"
bad=$(tcurl -o /dev/null -w '%{http_code}' -u "$TEST_USER:wrong-password" \
  "$REALM?service=$tok_SERVICE&scope=repository:private/app:pull")
ok "$([ "$bad" = 401 ]; echo $?)" "a wrong password at the relay: 401 from the upstream's token service"

# 4. A user's token opens it, from the cache, after one HEAD upstream.
tok=$(tcurl -u "$TEST_USER:$TEST_PASSWORD" \
  "$REALM?service=$tok_SERVICE&scope=repository:private/app:pull" | jq -r .token)
record_secret "$tok"
heads_before=$(count_lines "$tok_LOG" "\"HEAD /v2/private/app/blobs/$LAYER ")
gets_before=$(count_lines "$tok_LOG" "\"GET /v2/private/app/blobs/$LAYER ")
rc_get "/v2/private/app/blobs/$LAYER" -H "Authorization: Bearer $tok"
ok "$([ "$(rc_status)" = 200 ] && rc_body_is "$LAYER"; echo $?)" \
  "with a user's token: 200 and the right bytes"
ok "$([ "$(rc_header X-Cache)" = HIT ]; echo $?)" "from the cache (X-Cache: $(rc_header X-Cache))"
heads=$(( $(count_lines "$tok_LOG" "\"HEAD /v2/private/app/blobs/$LAYER ") - heads_before ))
gets=$(( $(count_lines "$tok_LOG" "\"GET /v2/private/app/blobs/$LAYER ") - gets_before ))
ok "$([ "$heads" -eq 1 ] && [ "$gets" -eq 0 ]; echo $?)" \
  "after one HEAD with that token upstream, no GET ($heads HEAD, $gets GET)"
rc_get "/v2/private/app/blobs/$LAYER" -H "Authorization: Bearer $tok"
heads=$(( $(count_lines "$tok_LOG" "\"HEAD /v2/private/app/blobs/$LAYER ") - heads_before ))
ok "$([ "$(rc_status)" = 200 ] && [ "$heads" -eq 1 ]; echo $?)" \
  "the same token again: 200, the upstream's yes is remembered ($heads HEAD in all)"

# 5. Access to one repository opens only what is in it: a cached private
# layer asked for under the public repository is confirmed upstream (with
# the client's token) and refused.
pub_tok=$(tcurl "$REALM?service=$tok_SERVICE&scope=repository:pub/app:pull" | jq -r .token)
record_secret "$pub_tok"
rc_get "/v2/pub/app/manifests/latest" -H "Authorization: Bearer $pub_tok" \
  -H 'Accept: application/vnd.oci.image.manifest.v1+json'
ok "$([ "$(rc_status)" = 200 ]; echo $?)" "an anonymous token for pub/app: its manifest, 200"
rc_get "/v2/pub/app/blobs/$LAYER" -H "Authorization: Bearer $pub_tok"
ok "$([ "$(rc_status)" = 404 ] && rc_code_is BLOB_UNKNOWN; echo $?)" \
  "the cached private layer asked for under pub/app: 404 BLOB_UNKNOWN, not the bytes"

# 6. Tag lists go upstream with the client's credentials.
rc_get "/v2/private/app/tags/list" -H "Authorization: Bearer $tok"
ok "$([ "$(rc_status)" = 200 ] && [ "$(jq -r '.tags[0]' "$RC_B")" = latest ]; echo $?)" \
  "tags/list with a user's token: 200 and the tags"
rc_get "/v2/private/app/tags/list"
ok "$([ "$(rc_status)" = 401 ] && case $(rc_header WWW-Authenticate) in "Bearer realm=\"$REALM\""*) true ;; *) false ;; esac; echo $?)" \
  "tags/list without credentials: 401 with the rewritten challenge"

# 7. Public content: anonymous clients pull it through the relay too.
pull_pub() {
  skopeo_run copy --src-tls-verify=false "docker://$rc_ADDR/pub/app:latest" \
    "dir:$TESTDIR/out3" && verify_dir_digests "$TESTDIR/out3" "$PUB"
}
check "anonymous: skopeo pulls the public pub/app through the relay" pull_pub

# 8. regcache never used credentials of its own, and never logged theirs.
ok "$(grep -q 'Authorization' "$rc_LOG"; [ $? -eq 1 ]; echo $?)" "no Authorization header in regcache's log"
check "regcache is still running" regcache_alive rc
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

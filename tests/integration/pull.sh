#!/bin/bash
# skopeo pulls through regcache from the three upstream shapes: anonymous
# HTTP, HTTPS with Basic auth (the ECR shape) and Bearer tokens (the Docker
# Hub shape), for a single-platform image, an OCI index and a Docker
# manifest list; every pulled file is checked against its digest.  Also:
# TLS termination, HEAD answers, and a token that expires during a pull.
# shellcheck disable=SC2154
set -eu
. "$(dirname "$0")/../lib/common.sh"
. "$SRCDIR/tests/lib/registry.sh"
. "$SRCDIR/tests/lib/verify.sh"
. "$SRCDIR/tests/lib/regcache.sh"

require_cmd docker-registry skopeo htpasswd openssl python3 curl jq
require_regcache
plan 18

declare -A DIGEST
DIGEST[single]=$(mkimage "$TESTDIR/img-single" --seed single --layers 3 --layer-size 300000)
DIGEST[index]=$(mkimage "$TESTDIR/img-index" --seed index --layers 2 --layer-size 200000 \
  --platforms linux/amd64,linux/arm64)
DIGEST[docker]=$(mkimage "$TESTDIR/img-docker" --seed docker --layers 2 --layer-size 200000 \
  --platforms linux/amd64,linux/arm64 --docker)

DIGEST[big]=$(mkimage "$TESTDIR/img-big" --seed big --layers 1 --layer-size 8000000)

registry_start_plain plain
registry_start_basic basic
registry_start_token token --expires-in 2
for r in plain basic token; do
  for i in single index docker; do
    registry_push_dir "$r" "$TESTDIR/img-$i" "test/$i:latest" >/dev/null
  done
done
registry_push_dir token "$TESTDIR/img-big" "test/big:latest" >/dev/null

tls_init
TLS_PORT=$(free_port)
regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\",
    {\"address\": \"127.0.0.1:$TLS_PORT\",
     \"tls\": {\"certificate\": \"$TLS_CERT\", \"key\": \"$TLS_KEY\"}}],
  \"data_dir\": \"$TESTDIR/data\",
  \"upstreams\": [
    {\"name\": \"plain\", \"url\": \"$plain_URL\", \"prefix\": \"plain\"},
    {\"name\": \"basic\", \"url\": \"$basic_URL\", \"prefix\": \"basic\",
     \"ca_file\": \"$TLS_CA\",
     \"auth\": {\"username\": \"$TEST_USER\", \"password\": \"$TEST_PASSWORD\"}},
    {\"name\": \"token\", \"url\": \"$token_URL\", \"prefix\": \"token\"}
  ]
}" -v

pull_and_verify() {
  local shape=$1 img=$2 out=$TESTDIR/out-$1-$2 all=()
  [ "$img" = single ] || all=(--all)
  skopeo_run copy "${all[@]}" --src-tls-verify=false \
    "docker://$rc_ADDR/$shape/test/$img:latest" "dir:$out" &&
    verify_dir_digests "$out" "${DIGEST[$img]}"
}
for shape in plain basic token; do
  for img in single index docker; do
    check "$shape upstream: skopeo copy $img image, every file matches its digest" \
      pull_and_verify "$shape" "$img"
  done
done

inspect_digest() {
  local d
  d=$(skopeo_run inspect --raw --tls-verify=false "docker://$rc_ADDR/token/test/index:latest" |
      sha256sum | cut -d' ' -f1)
  [ "sha256:$d" = "${DIGEST[index]}" ]
}
check "skopeo inspect --raw returns the exact index bytes" inspect_digest

tls_pull() {
  skopeo_run copy --src-cert-dir "$TLS_CERTDIR" \
    "docker://127.0.0.1:$TLS_PORT/basic/test/single:latest" "dir:$TESTDIR/out-tls" &&
    verify_dir_digests "$TESTDIR/out-tls" "${DIGEST[single]}"
}
check "TLS listener: skopeo pulls with certificate verification" tls_pull

head_manifest() {
  local h
  h=$(tcurl -I -H "Accept: application/vnd.oci.image.index.v1+json" \
      "$rc_URL/v2/plain/test/index/manifests/latest" -o /dev/null -D - | tr -d '\r')
  grep -q "^HTTP/1.1 200" <<<"$h" &&
    grep -qi "^Docker-Content-Digest: ${DIGEST[index]}$" <<<"$h" &&
    grep -qi "^Content-Length: [1-9]" <<<"$h" &&
    grep -qi "^Docker-Distribution-API-Version: registry/2.0$" <<<"$h" &&
    ! grep -qi "^Transfer-Encoding" <<<"$h"
}
check "HEAD manifest carries Docker-Content-Digest and Content-Length" head_manifest

no_challenge_leak() {
  # Upstream challenges never reach the client: regcache authenticates.
  ! tcurl -s -D - -o /dev/null "$rc_URL/v2/token/test/single/manifests/latest" \
      -H "Accept: application/vnd.oci.image.manifest.v1+json" | grep -qi '^WWW-Authenticate'
}
check "no upstream WWW-Authenticate reaches the client" no_challenge_leak

range_request() {
  local layer got want
  layer=$(jq -r '.layers[0].digest' "$TESTDIR/out-plain-single/manifest.json")
  want=$(head -c 1000 "$TESTDIR/out-plain-single/${layer#sha256:}" | tail -c 900 | sha256sum)
  got=$(tcurl -H "Range: bytes=100-999" "$rc_URL/v2/plain/test/single/blobs/$layer" | sha256sum)
  [ "$got" = "$want" ] &&
    tcurl -s -o /dev/null -w '%{http_code}' -H "Range: bytes=100-999" \
      "$rc_URL/v2/plain/test/single/blobs/$layer" | grep -q 206
}
check "Range on a blob returns 206 and the right bytes" range_request

# A token (2 s) that expires in the middle of a pull: the manifest, then an
# 8 MB layer read slowly (over 3 s), then the config blob.  The last request needs
# a new token; regcache fetches one and every byte is right.
token_refresh() {
  local m layer config before after
  before=$(count_lines "$token_TOKEN_LOG" 'scope=repository:test/big:pull')
  m=$(tcurl -H "Accept: application/vnd.oci.image.manifest.v1+json" \
      "$rc_URL/v2/token/test/big/manifests/latest") || return 1
  [ "sha256:$(printf '%s' "$m" | sha256sum | cut -d' ' -f1)" = "${DIGEST[big]}" ] || return 1
  layer=$(jq -r '.layers[0].digest' <<<"$m")
  config=$(jq -r '.config.digest' <<<"$m")
  # A slow reader: 256 KB, then a 0.1 s pause, so 8 MB take over 3 s
  # (curl's --limit-rate lets bursts through and cannot be relied on).
  timeout 60 python3 -c '
import sys, time, urllib.request
with urllib.request.urlopen(sys.argv[1]) as r, open(sys.argv[2], "wb") as f:
    while True:
        b = r.read(262144)
        if not b:
            break
        f.write(b)
        time.sleep(0.1)
' "$rc_URL/v2/token/test/big/blobs/$layer" "$TESTDIR/slow.blob" || return 1
  [ "sha256:$(sha256sum <"$TESTDIR/slow.blob" | cut -d' ' -f1)" = "$layer" ] || return 1
  [ "sha256:$(tcurl "$rc_URL/v2/token/test/big/blobs/$config" | sha256sum | cut -d' ' -f1)" = "$config" ] ||
    return 1
  # The token server may log a grant just after answering it: poll.
  token_count_at_least() { [ "$(count_lines "$token_TOKEN_LOG" 'scope=repository:test/big:pull')" -ge "$1" ]; }
  wait_for "a second token for test/big" 10 token_count_at_least $((before + 2)) || return 1
  diag "token requests for test/big: before $before, after $(count_lines "$token_TOKEN_LOG" 'scope=repository:test/big:pull')"
}
check "a token that expires during a slow pull is refreshed and the pull completes" token_refresh

# The token requests (shared by waiting requests) are counted per upstream.
tokens_counted() {
  local n
  n=$(tcurl "$rc_ADMIN_URL/stats" | jq '.upstreams.token.token_fetches')
  echo "token fetches: $n"
  [ "$n" -ge 1 ] && tcurl "$rc_ADMIN_URL/metrics" |
    grep -q "^regcache_upstream_token_fetches_total{upstream=\"token\"} $n\$"
}
check "/stats and /metrics count the token upstream's token fetches" tokens_counted
check "regcache is still running" regcache_alive rc
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

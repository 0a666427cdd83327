#!/bin/bash
# Routing: the same image through containerd's ?ns=<alias>, through a path
# prefix and through the default upstream; an ns that names no upstream is
# refused and nothing is dialled; tags/list paging with Link rewritten to
# regcache; referrers passed through.
# shellcheck disable=SC2154
set -eu
. "$(dirname "$0")/../lib/common.sh"
. "$SRCDIR/tests/lib/registry.sh"
. "$SRCDIR/tests/lib/verify.sh"
. "$SRCDIR/tests/lib/regcache.sh"

require_cmd docker-registry skopeo python3 curl jq
require_regcache
plan 21

DIGEST=$(mkimage "$TESTDIR/img" --seed route --layers 2 --layer-size 100000)
OTHER=$(mkimage "$TESTDIR/other" --seed other --layers 1 --layer-size 50000)
registry_start_plain hub
registry_start_plain second
registry_push_dir hub "$TESTDIR/img" library/alpine:latest >/dev/null
for t in 1.0 1.1 2.0; do registry_push_dir hub "$TESTDIR/img" "library/alpine:$t" >/dev/null; done
registry_push_dir second "$TESTDIR/other" team/app:latest >/dev/null
# Debian's distribution 2.8 ignores n= on tags/list: a fake upstream pages.
TAGS_PORT=$(free_port)
spawn tags python3 "$TOOLSDIR/fakeupstream.py" tags "$TAGS_PORT"
wait_for "fake tags upstream" 10 grep -q listening "$TESTDIR/tags.log"
CHUNKED_PORT=$(free_port)
spawn chunked python3 "$TOOLSDIR/fakeupstream.py" chunked "$CHUNKED_PORT"
wait_for "fake chunked upstream" 10 grep -q listening "$TESTDIR/chunked.log"
tls_init
TLS_PORT=$(free_port)

regcache_start rc "{
  \"listen\": [\"127.0.0.1:@PORT@\",
    {\"address\": \"127.0.0.1:$TLS_PORT\",
     \"tls\": {\"certificate\": \"$TLS_CERT\", \"key\": \"$TLS_KEY\"}}],
  \"data_dir\": \"$TESTDIR/data\",
  \"default_upstream\": \"hub\",
  \"upstreams\": [
    {\"name\": \"hub\", \"url\": \"$hub_URL\", \"aliases\": [\"docker.io\", \"index.docker.io\"],
     \"prefix\": \"hub\", \"library_prefix\": true},
    {\"name\": \"second\", \"url\": \"$second_URL\", \"aliases\": [\"second.example\"],
     \"prefix\": \"second\"},
    {\"name\": \"paged\", \"url\": \"http://127.0.0.1:$TAGS_PORT\", \"aliases\": [\"paged.example\"],
     \"prefix\": \"paged\"},
    {\"name\": \"chunked\", \"url\": \"http://127.0.0.1:$CHUNKED_PORT\", \"prefix\": \"chunked\"}
  ]
}"

OCI_M=application/vnd.oci.image.manifest.v1+json
served() { grep -c 'response completed' "$1"; }

# fetch_via QUERY PATHNAME DIGEST: manifest and every blob through regcache by
# plain HTTP, each checked against its digest (skopeo cannot add ?ns=).
fetch_via() {
  local q=$1 name=$2 want=$3 m d
  m=$(tcurl -H "Accept: $OCI_M" "$rc_URL/v2/$name/manifests/latest$q") || return 1
  [ "sha256:$(printf '%s' "$m" | sha256sum | cut -d' ' -f1)" = "$want" ] || return 1
  for d in $(jq -r '.config.digest, .layers[].digest' <<<"$m"); do
    [ "sha256:$(tcurl "$rc_URL/v2/$name/blobs/$d$q" | sha256sum | cut -d' ' -f1)" = "$d" ] || return 1
  done
}

check "ns=docker.io (an alias): alpine -> library/alpine on the hub" fetch_via "?ns=docker.io" alpine "$DIGEST"
check "ns=index.docker.io: the same" fetch_via "?ns=index.docker.io" library/alpine "$DIGEST"
check "ns=<the upstream's own host:port>" fetch_via "?ns=127.0.0.1:$hub_PORT" alpine "$DIGEST"
check "ns=second.example routes to the second upstream" fetch_via "?ns=second.example" team/app "$OTHER"

ns_header() {
  tcurl -I -H "Accept: $OCI_M" "$rc_URL/v2/alpine/manifests/latest?ns=docker.io" | tr -d '\r' |
    grep -qi '^OCI-Namespace: docker.io$'
}
check "an honoured ns is echoed in OCI-Namespace" ns_header

pull() {
  skopeo_run copy --src-tls-verify=false "docker://$rc_ADDR/$1:latest" "dir:$TESTDIR/out-$2" &&
    verify_dir_digests "$TESTDIR/out-$2" "$3"
}
check "path prefix: hub/alpine" pull hub/alpine prefix "$DIGEST"
check "path prefix: second/team/app" pull second/team/app prefix2 "$OTHER"
check "default upstream: alpine" pull alpine default "$DIGEST"
check "default upstream: library/alpine" pull library/alpine default2 "$DIGEST"

h1=$(served "$hub_LOG"); s1=$(served "$second_LOG")
unknown_ns() {
  local code
  code=$(tcurl -o "$TESTDIR/body" -w '%{http_code}' "$rc_URL/v2/alpine/manifests/latest?ns=quay.io")
  [ "$code" = 404 ] && jq -e '.errors[0].code == "NAME_UNKNOWN"' "$TESTDIR/body" >/dev/null
}
check "unknown ns=quay.io: 404 NAME_UNKNOWN" unknown_ns
blob_unknown_ns() {
  [ "$(tcurl -o /dev/null -w '%{http_code}' \
      "$rc_URL/v2/alpine/blobs/sha256:$(printf '%064d' 1)?ns=ghcr.io")" = 404 ]
}
check "unknown ns on a blob: 404" blob_unknown_ns
h2=$(served "$hub_LOG"); s2=$(served "$second_LOG")
ok "$([ "$h1" = "$h2" ] && [ "$s1" = "$s2" ]; echo $?)" \
  "nothing reached any upstream for the unknown ns (hub $h1=$h2, second $s1=$s2)"

# tags/list: n=2 gives a page and a Link back to regcache; following it
# gives the rest.
paging() {
  local link page2
  tcurl -D "$TESTDIR/th" -o "$TESTDIR/t1" "$rc_URL/v2/paged/team/app/tags/list?n=2" || return 1
  jq -e '.tags == ["1.0", "1.1"]' "$TESTDIR/t1" >/dev/null || return 1
  link=$(tr -d '\r' <"$TESTDIR/th" | sed -n 's/^[Ll]ink: <\([^>]*\)>; rel="next"$/\1/p')
  diag "Link: $link"
  case $link in /v2/paged/team/app/tags/list\?*) ;; *) return 1 ;; esac
  page2=$(tcurl "$rc_URL$link") || return 1
  jq -e '.tags == ["2.0", "latest"]' <<<"$page2" >/dev/null
}
check "tags/list with n: a page, and Link rewritten to point at regcache" paging

paging_ns() {
  local link
  tcurl -D "$TESTDIR/th2" -o /dev/null "$rc_URL/v2/team/app/tags/list?n=1&ns=paged.example" || return 1
  link=$(tr -d '\r' <"$TESTDIR/th2" | sed -n 's/^[Ll]ink: <\([^>]*\)>; rel="next"$/\1/p')
  diag "Link: $link"
  case $link in /v2/team/app/tags/list\?*ns=paged.example*) ;; *) return 1 ;; esac
  tcurl "$rc_URL$link" | jq -e '.tags == ["1.1"]' >/dev/null
}
check "tags/list through ns: the Link keeps ns" paging_ns

tags_last() { tcurl "$rc_URL/v2/paged/team/app/tags/list?last=1.1" | jq -e '.tags == ["2.0", "latest"]' >/dev/null; }
check "tags/list with last is passed on" tags_last
check "tags/list from the real registry" eval 'tcurl "$rc_URL/v2/alpine/tags/list" | jq -e ".tags | length == 4" >/dev/null'

referrers_404() {
  # distribution 2.8 has no referrers API: its 404 must stay a 404 so
  # clients fall back to the tag schema.
  local code
  code=$(tcurl -o /dev/null -w '%{http_code}' "$rc_URL/v2/alpine/referrers/$DIGEST")
  diag "referrers: $code"
  [ "$code" = 404 ]
}
check "referrers: the upstream's 404 passes through" referrers_404

# Bodies without a length go out chunked; over TLS the last chunk and the
# terminator must not be lost, and the connection must stay usable.
want_chunked=$(python3 -c 'import sys; sys.stdout.write("".join("%04d" % i * 1024 for i in range(50)))' |
  sha256sum | cut -d' ' -f1)
chunked_tls() {
  local out
  out=$(curl -q -sS --max-time 10 --cacert "$TLS_CA" \
    "https://127.0.0.1:$TLS_PORT/v2/chunked/a/tags/list" -o "$TESTDIR/c1" \
    "https://127.0.0.1:$TLS_PORT/v2/chunked/a/tags/list" -o "$TESTDIR/c2" \
    -w '%{num_connects} ') || return 1
  diag "connections opened per transfer: $out"
  [ "$(sha256sum <"$TESTDIR/c1" | cut -d' ' -f1)" = "$want_chunked" ] &&
    [ "$(sha256sum <"$TESTDIR/c2" | cut -d' ' -f1)" = "$want_chunked" ] &&
    [ "$out" = "1 0 " ]
}
check "TLS: two chunked replies on one kept-alive connection, both complete" chunked_tls
http10() {
  curl -q -sS --max-time 10 --http1.0 -H 'Connection: keep-alive' -D "$TESTDIR/h10" \
    -o "$TESTDIR/c3" "$rc_URL/v2/chunked/a/tags/list" || return 1
  ! grep -qi '^Content-Length: 0' "$TESTDIR/h10" &&
    [ "$(sha256sum <"$TESTDIR/c3" | cut -d' ' -f1)" = "$want_chunked" ]
}
check "HTTP/1.0 keep-alive client, body without a length: close-delimited and complete" http10

check "the daemon is still running" regcache_alive rc
check "regcache exits 0 on SIGTERM, with no sanitizer report" regcache_stop rc

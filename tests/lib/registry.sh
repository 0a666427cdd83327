# tests/lib/registry.sh -- start Debian's docker-registry (distribution 2.8)
# as an upstream in three shapes, and push/pull/inspect any of them the same
# way.  Source tests/lib/common.sh first.
#
#   registry_start_plain NAME          anonymous HTTP
#   registry_start_basic NAME          HTTPS (test CA) + htpasswd   ("ECR shape")
#   registry_start_token NAME [ARGS]   HTTP + token auth, ARGS go to
#                                      tokenserver.py   ("Docker Hub shape")
#
# Each sets ${NAME}_URL ${NAME}_HOST ${NAME}_PORT ${NAME}_LOG ${NAME}_PID
# ${NAME}_SHAPE (plain|basic|token) ${NAME}_STORAGE ${NAME}_CREDS (empty
# for plain); the basic shape also ${NAME}_HTPASSWD (the registry re-reads
# it when it changes, so a test may add users or change passwords); the
# token shape also ${NAME}_REALM ${NAME}_SERVICE and ${NAME}_TOKEN_LOG.  Each registry logs at info level to ${NAME}_LOG, both
# the app's "response completed" lines and the access log, so tests can
# grep which requests reached it.

TEST_USER=testuser
TEST_PASSWORD=testpassword
record_secret "$TEST_PASSWORD" "$(printf '%s:%s' "$TEST_USER" "$TEST_PASSWORD" | base64 -w0)"
TOKEN_SERVICE=regcache-test-registry
TOKEN_ISSUER=regcache-test-issuer
MANIFEST_ACCEPT='application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.docker.distribution.manifest.v2+json'

# tls_init: once per test, a CA and a server cert for 127.0.0.1/localhost.
# $TLS_CERTDIR holds only ca.crt because skopeo's cert dirs treat *.key as
# client keys; keys live in $TESTDIR/pki.  regcache may reuse TLS_CERT/KEY.
TLS_CERTDIR=$TESTDIR/ca
TLS_CA=$TLS_CERTDIR/ca.crt
TLS_CERT=$TESTDIR/pki/server.crt
TLS_KEY=$TESTDIR/pki/server.key
tls_init() {
  [ ! -f "$TLS_CA" ] || return 0
  local p=$TESTDIR/pki
  mkdir -p "$p" "$TLS_CERTDIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=regcache test CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$p/ca.key" -out "$TLS_CA" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
    -keyout "$TLS_KEY" -out "$p/server.csr" 2>/dev/null
  printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'basicConstraints=CA:FALSE' \
    'keyUsage=digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' >"$p/server.ext"
  openssl x509 -req -in "$p/server.csr" -CA "$TLS_CA" -CAkey "$p/ca.key" \
    -CAserial "$p/ca.srl" -CAcreateserial -days 2 -extfile "$p/server.ext" \
    -out "$TLS_CERT" 2>/dev/null
}

# token_keys_init: once per test, the RSA key + self-signed cert that every
# token server of this test signs with (so any of them is trusted by any
# token-shape registry: registry rootcertbundle = TOKEN_CERT).
TOKEN_KEY=$TESTDIR/pki/token-signer.key
TOKEN_CERT=$TESTDIR/pki/token-signer.crt
token_keys_init() {
  [ ! -f "$TOKEN_CERT" ] || return 0
  mkdir -p "$TESTDIR/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=regcache test token signer" \
    -keyout "$TOKEN_KEY" -out "$TOKEN_CERT" 2>/dev/null
}

# tokenserver_start NAME [tokenserver.py ARGS...]: sets ${NAME}_URL,
# ${NAME}_PORT, ${NAME}_REALM (= URL/token), ${NAME}_LOG, ${NAME}_PID.
tokenserver_start() {
  local name=$1 port
  shift
  token_keys_init
  port=$(free_port)
  spawn "$name" python3 -u "$TOOLSDIR/tokenserver.py" --port "$port" \
    --key "$TOKEN_KEY" --cert "$TOKEN_CERT" --issuer "$TOKEN_ISSUER" --service "$TOKEN_SERVICE" \
    --issued "$SECRETS_FILE" "$@"
  printf -v "${name}_PORT" '%s' "$port"
  printf -v "${name}_URL" '%s' "http://127.0.0.1:$port"
  printf -v "${name}_REALM" '%s' "http://127.0.0.1:$port/token"
  # Poll "/" (a 404) rather than /token so readiness adds no token log line.
  wait_http "http://127.0.0.1:$port/"
}

# _registry_start NAME SHAPE SCHEME HTTP_YAML TOP_YAML [CURL ARGS for readiness]
_registry_start() {
  local name=$1 shape=$2 scheme=$3 http_yaml=$4 top_yaml=$5 port dir
  shift 5
  port=$(free_port)
  dir=$TESTDIR/$name
  mkdir -p "$dir/storage"
  # Upload purging off: no background goroutine deleting things under a test.
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  fields:
    instance: $name
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: regcache-test-secret
$http_yaml
$top_yaml
EOF
  spawn "$name" docker-registry serve "$dir/config.yml"
  printf -v "${name}_SHAPE" '%s' "$shape"
  printf -v "${name}_PORT" '%s' "$port"
  printf -v "${name}_HOST" '%s' "127.0.0.1:$port"
  printf -v "${name}_URL" '%s' "$scheme://127.0.0.1:$port"
  printf -v "${name}_STORAGE" '%s' "$dir/storage"
  printf -v "${name}_CREDS" '%s' ""
  wait_http "$scheme://127.0.0.1:$port/v2/" "$@"
}

registry_start_plain() {
  _registry_start "$1" plain http "" ""
}

registry_start_basic() {
  local name=$1
  tls_init
  htpasswd -Bbn "$TEST_USER" "$TEST_PASSWORD" >"$TESTDIR/pki/$name.htpasswd"
  _registry_start "$name" basic https "  tls:
    certificate: $TLS_CERT
    key: $TLS_KEY" "auth:
  htpasswd:
    realm: regcache-test-basic
    path: $TESTDIR/pki/$name.htpasswd" --cacert "$TLS_CA"
  printf -v "${name}_CREDS" '%s' "$TEST_USER:$TEST_PASSWORD"
  printf -v "${name}_HTPASSWD" '%s' "$TESTDIR/pki/$name.htpasswd"
}

registry_start_token() {
  local name=$1 realm
  shift
  tokenserver_start "${name}_tokensrv" "$@"
  realm=${name}_tokensrv_REALM
  realm=${!realm}
  _registry_start "$name" token http "" "auth:
  token:
    realm: $realm
    service: $TOKEN_SERVICE
    issuer: $TOKEN_ISSUER
    rootcertbundle: $TOKEN_CERT"
  printf -v "${name}_REALM" '%s' "$realm"
  printf -v "${name}_SERVICE" '%s' "$TOKEN_SERVICE"
  printf -v "${name}_TOKEN_LOG" '%s' "$TESTDIR/${name}_tokensrv.log"
  printf -v "${name}_CREDS" '%s' "$TEST_USER:$TEST_PASSWORD"
}

# _rv NAME FIELD: value of ${NAME}_FIELD
_rv() { local v="${1}_$2"; printf '%s' "${!v}"; }

# registry_skopeo_args NAME src|dest [anon]: set the array REGISTRY_SKOPEO_ARGS
# to skopeo's TLS and credential flags for this registry.
registry_skopeo_args() {
  local name=$1 dir=$2 anon=${3:-} creds
  creds=$(_rv "$name" CREDS)
  case $(_rv "$name" SHAPE) in
    basic) REGISTRY_SKOPEO_ARGS=("--$dir-cert-dir" "$TLS_CERTDIR") ;;
    *)     REGISTRY_SKOPEO_ARGS=("--$dir-tls-verify=false") ;;
  esac
  if [ -n "$anon" ] || [ -z "$creds" ]; then REGISTRY_SKOPEO_ARGS+=("--$dir-no-creds")
  else REGISTRY_SKOPEO_ARGS+=("--$dir-creds" "$creds"); fi
}

# registry_push_dir NAME OCI_LAYOUT_DIR REPO:TAG [SKOPEO COPY ARGS...]
# --preserve-digests: the registry must hold exactly the generated
# manifests (skopeo would otherwise be free to convert media types).
registry_push_dir() {
  local name=$1 src=$2 ref=$3
  shift 3
  registry_skopeo_args "$name" dest
  skopeo_run copy --quiet --all --preserve-digests "${REGISTRY_SKOPEO_ARGS[@]}" "$@" \
    "oci:$src" "docker://$(_rv "$name" HOST)/$ref"
}

# registry_pull_dir NAME REPO:TAG DIR [SKOPEO COPY ARGS...]  (e.g. --all)
registry_pull_dir() {
  local name=$1 ref=$2 dest=$3
  shift 3
  registry_skopeo_args "$name" src
  skopeo_run copy --quiet "${REGISTRY_SKOPEO_ARGS[@]}" "$@" \
    "docker://$(_rv "$name" HOST)/$ref" "dir:$dest"
}

# registry_token NAME SCOPE [USER:PASS]: print a bearer token from the
# registry's token server (anonymous when USER:PASS is "").
registry_token() {
  local name=$1 scope=$2 creds=${3-$(_rv "$1" CREDS)} auth=()
  [ -z "$creds" ] || auth=(-u "$creds")
  tcurl -f -G "${auth[@]}" --data-urlencode "service=$(_rv "$name" SERVICE)" \
    --data-urlencode "scope=$scope" "$(_rv "$name" REALM)" | jq -er .token
}

# registry_curl_args NAME [SCOPE]: set the array REGISTRY_CURL_ARGS to what
# curl needs to talk to this registry directly (CA, basic or bearer auth).
registry_curl_args() {
  local name=$1 scope=${2:-}
  REGISTRY_CURL_ARGS=()
  case $(_rv "$name" SHAPE) in
    basic) REGISTRY_CURL_ARGS=(--cacert "$TLS_CA" -u "$(_rv "$name" CREDS)") ;;
    token) [ -z "$scope" ] ||
      REGISTRY_CURL_ARGS=(-H "Authorization: Bearer $(registry_token "$name" "$scope")") ;;
  esac
}

# registry_mark NAME: start counting what regcache asks the registry NAME
# from here (see registry_since).
registry_mark() { printf -v "MARK_$1" '%s' "$(wc -l <"$(_rv "$1" LOG)")"; }

# registry_since NAME: print "METHOD URI" for every request regcache made to
# the registry NAME since registry_mark.  A request of our own marks the
# end: once the registry logged it, it has logged everything regcache's
# finished requests made before.
registry_since() {
  local name=$1 log mark tok
  log=$(_rv "$name" LOG)
  mark=MARK_$name
  mark=${!mark}
  tok=settle-$RANDOM$RANDOM
  registry_curl_args "$name"
  tcurl -o /dev/null "${REGISTRY_CURL_ARGS[@]}" "$(_rv "$name" URL)/v2/?$tok" || true
  wait_for "$name to log $tok" 10 grep -q -- "$tok" "$log" >&2 || return 1
  tail -n +"$((mark + 1))" "$log" | grep -E 'msg="response completed' |
    grep -F 'http.request.useragent=regcache/' |
    sed -E 's/.* http\.request\.method=([A-Z]+) .*http\.request\.uri="?([^" ]*)"? .*/\1 \2/'
}

# registry_manifest_head NAME REPO REF: print "DIGEST MEDIA-TYPE" as the
# registry reports them (Docker-Content-Digest and Content-Type of a HEAD).
registry_manifest_head() {
  local name=$1 repo=$2 ref=$3 hdrs digest
  registry_curl_args "$name" "repository:$repo:pull"
  hdrs=$(tcurl -f -I "${REGISTRY_CURL_ARGS[@]}" -H "Accept: $MANIFEST_ACCEPT" \
    "$(_rv "$name" URL)/v2/$repo/manifests/$ref")
  hdrs=${hdrs//$'\r'/}
  digest=$(awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }' <<<"$hdrs")
  [ -n "$digest" ] || return 1
  printf '%s %s\n' "$digest" \
    "$(awk -F': ' 'tolower($1) == "content-type" { print $2 }' <<<"$hdrs")"
}

# registry_upload_blob NAME REPO FILE DIGEST: a monolithic upload of FILE
# (plain-http registries), then a HEAD that must show its size and digest.
registry_upload_blob() {
  local name=$1 repo=$2 file=$3 digest=$4 url loc h size
  url=$(_rv "$name" URL)
  size=$(stat -c %s "$file")
  loc=$(tcurl -f -X POST -D - -o /dev/null "$url/v2/$repo/blobs/uploads/" | tr -d '\r' |
        awk -F': ' 'tolower($1) == "location" { print $2 }')
  [ -n "$loc" ] || { echo "no Location from the upload POST"; return 1; }
  case $loc in /*) loc=$url$loc ;; esac
  case $loc in *\?*) loc="$loc&digest=$digest" ;; *) loc="$loc?digest=$digest" ;; esac
  curl -q -sS -f --max-time 180 -X PUT -H 'Content-Type: application/octet-stream' \
    -T "$file" -o /dev/null "$loc" || return 1
  h=$(tcurl -f -I "$url/v2/$repo/blobs/$digest" | tr -d '\r')
  echo "$h"
  grep -qi "^Content-Length: $size$" <<<"$h" && grep -qi "^Docker-Content-Digest: $digest$" <<<"$h"
}

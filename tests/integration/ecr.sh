#!/bin/bash
# The ECR credential provider: regcache asks ECR's GetAuthorizationToken
# (tests/tools/fakeaws.py, which verifies the SigV4 signature) for the
# password of an HTTPS + htpasswd registry, with AWS credentials from the
# environment, a shared credentials file and profile, web identity (STS),
# or IMDSv2.  Passwords live a few seconds here, so each credential source
# goes through three refreshes, with a pull of a tag regcache has not seen
# after each one.  Also: a failing refresh keeps the current password, a
# wrong secret key fails cleanly, and a password changed behind regcache's
# back is replaced after the registry's 401.  No secret reaches a log.
#
# fakeaws installs each password it issues for user AWS in the registry's
# htpasswd file and replaces it once expired, so only the newest,
# unexpired password works (ECR itself would accept older ones too).
# shellcheck disable=SC2154
set -eu
. "$(dirname "$0")/../lib/common.sh"
. "$SRCDIR/tests/lib/registry.sh"
. "$SRCDIR/tests/lib/verify.sh"
. "$SRCDIR/tests/lib/regcache.sh"

require_cmd docker-registry skopeo htpasswd openssl python3 curl jq
require_regcache

REGION=us-east-1
AKID=AKIDREGCACHETEST
SECRET=regcache-test-secret-key
WRONG_SECRET=regcache-test-wrong-secret
DEFAULT_SECRET=regcache-test-default-profile-secret
ROLE_ARN=arn:aws:iam::123456789012:role/regcache-test
PASSWORD_TTL=6  # with refresh_before 2: a new password every 4 s
TEMP_TTL=2      # STS and IMDS credentials expire before each refresh

# Only the variables a scenario sets reach the daemon: no AWS_* of the
# caller, and a HOME without ~/.aws.
aws_env_clear() {
  local v
  for v in $(compgen -e); do
    case $v in AWS_*) unset "$v" ;; esac
  done
}
aws_env_clear
export HOME=$TESTDIR/home

# The config of an ECR upstream; AWS_URL is the fake AWS in use.
rc_config() { # rc_config DATA_NAME REFRESH_BEFORE
  cat <<EOF
{"listen": ["127.0.0.1:@PORT@"], "data_dir": "$TESTDIR/data-$1",
 "upstreams": [
   {"name": "ecr", "url": "$up_URL", "prefix": "ecr", "ca_file": "$TLS_CA",
    "auth": {"ecr": {"region": "$REGION",
                     "endpoint": "$AWS_URL/",
                     "sts_endpoint": "$AWS_URL/",
                     "imds_endpoint": "$AWS_URL",
                     "refresh_before": $2}}}]}
EOF
}

# The ECR config must be accepted before anything starts.
tls_init
mkdir -p "$TESTDIR/data-probe"
up_URL=https://127.0.0.1:9 AWS_URL=http://127.0.0.1:9 rc_config probe 2 |
  sed 's/@PORT@/9/' >"$TESTDIR/probe.json"
if ! "$REGCACHE" check-config -c "$TESTDIR/probe.json" >"$TESTDIR/probe.out" 2>&1; then
  bail_out "check-config refuses the ECR config: $(head -n 3 "$TESTDIR/probe.out")"
fi

plan 65

# Every password (and its base64 form), temporary secret, session token,
# IMDS token, web identity token and secret key of this test.
collect_secrets() {
  {
    cat "$TESTDIR/issued" "$TESTDIR/issued-creds" "$TESTDIR/wit-history" 2>/dev/null || true
    printf '%s\n' "$SECRET" "$WRONG_SECRET" "$DEFAULT_SECRET" web-identity-token-env
  } | grep -v '^$' | sort -u >"$TESTDIR/secrets"
}
# For a scan outside this test ($SECRETS_FILE), even when it stops early:
# run before common.sh's cleanup, which gets the exit status unchanged.
secrets_out() {
  [ -n "${SECRETS_FILE:-}" ] || return 0
  collect_secrets
  cat "$TESTDIR/secrets" >>"$SECRETS_FILE"
}
trap '_ecr_rc=$?; secrets_out || true; (exit "$_ecr_rc"); _cleanup' EXIT

# --- the registry and five images ----------------------------------------
declare -A DIGEST
for i in 0 1 2 3 4; do
  DIGEST[r$i]=$(mkimage "$TESTDIR/img-r$i" --seed "ecr-$i" --layers 2 --layer-size 60000)
done
registry_start_basic up
for i in 0 1 2 3 4; do
  registry_push_dir up "$TESTDIR/img-r$i" "test/img:r$i" >/dev/null
done

# --- helpers ----------------------------------------------------------------
# aws_start NAME [fakeaws.py ARGS...]: a fake AWS for one scenario, sharing
# the registry's htpasswd and the files of issued secrets.  Sets AWS_URL
# and AWS_STATS.
aws_start() {
  local name=$1
  shift
  spawn "$name" python3 -u "$TOOLSDIR/fakeaws.py" --port 0 --port-file "$TESTDIR/$name.port" \
    --region "$REGION" --access-key "$AKID" --secret-key "$SECRET" --role-arn "$ROLE_ARN" \
    --htpasswd "$up_HTPASSWD" --issued "$TESTDIR/issued" \
    --issued-creds "$TESTDIR/issued-creds" --stats-file "$TESTDIR/$name.stats" \
    --password-ttl "$PASSWORD_TTL" --temp-ttl "$TEMP_TTL" "$@"
  wait_for "$name port file" 10 test -s "$TESTDIR/$name.port"
  AWS_URL=http://127.0.0.1:$(cat "$TESTDIR/$name.port")
  AWS_STATS=$TESTDIR/$name.stats
}

# rc_start NAME REFRESH_BEFORE [VAR=VALUE...]: regcache with only these
# AWS_* variables in its environment.  Sets RC_URL, RC_ADDR, RC_LOG.
rc_start() {
  local name=$1 refresh=$2 kv
  shift 2
  for kv in "$@"; do export "${kv?}"; done
  regcache_start "$name" "$(rc_config "$name" "$refresh")" -v
  aws_env_clear
  RC_URL=$(_rv "$name" URL)
  RC_ADDR=$(_rv "$name" ADDR)
  RC_LOG=$(_rv "$name" LOG)
}

st() { jq -r ".$1" "$AWS_STATS"; }

# pull TAG LABEL: skopeo pulls ecr/test/img:TAG through regcache, and every
# file matches its digest.
pull() {
  local out=$TESTDIR/out-$2
  rm -rf "$out"
  skopeo_run copy --quiet --src-tls-verify=false \
    "docker://$RC_ADDR/ecr/test/img:$1" "dir:$out" &&
    verify_dir_digests "$out" "${DIGEST[$1]}"
}

# A request that reaches the upstream whatever regcache has cached (a tag
# never asked before), so a refresh made on demand happens too.
POKES=0
poke() {
  POKES=$((POKES + 1))
  tcurl -o /dev/null -H "Accept: $MANIFEST_ACCEPT" \
    "$RC_URL/v2/ecr/test/img/manifests/poke-$POKES" 2>/dev/null || true
}
# stat_above KEY N: poke, then the counter KEY is above N.
stat_above() { poke; [ "$(st "$1")" -gt "$2" ]; }

# refresh_rounds LABEL [HOOK]: pull r0; then three times: wait for a new
# password, run HOOK ROUND, pull the next tag.
refresh_rounds() {
  local label=$1 hook=${2:-} slug=${1// /-} k before rc
  check "$label: pull r0, every file matches its digest" pull r0 "$slug-r0"
  for k in 1 2 3; do
    before=$(st ecr_ok)
    rc=0
    wait_for "refresh $k" 20 stat_above ecr_ok "$before" || rc=$?
    ok "$rc" "$label: refresh $k: a new password from ECR (calls $before -> $(st ecr_ok))"
    [ -z "$hook" ] || "$hook" "$k"
    check "$label: pull r$k after refresh $k, every file matches its digest" \
      pull "r$k" "$slug-r$k"
  done
}

# is A OP B: test(1)'s comparison, showing both sides when it fails.
is() {
  test "$1" "$2" "$3" || { diag "got $1, wanted $2 $3"; return 1; }
}

# finish NAME AWSNAME LABEL: the daemon is alive and exits cleanly.
finish() {
  check "$3: regcache exits 0 on SIGTERM, no sanitizer report" regcache_stop "$1"
  stop "$2"
}

# --- (a) environment --------------------------------------------------------
aws_start aws_env
rc_start rc_env 2 AWS_ACCESS_KEY_ID="$AKID" AWS_SECRET_ACCESS_KEY="$SECRET"
refresh_rounds env
env_source() {
  is "$(st ecr_by_source.static)" -ge 4 && is "$(st sts_calls)" -eq 0 &&
    is "$(st imds_calls)" -eq 0 && is "$(st bad_signatures)" -eq 0
}
check "env: every password came with the environment's key; no STS, no IMDS" env_source
finish rc_env aws_env env

# --- (a') environment with a session token -----------------------------------
printf '%s' web-identity-token-env >"$TESTDIR/wit-env"
aws_start aws_envtok --temp-ttl 600 --web-identity-token-file "$TESTDIR/wit-env"
tcurl -f -d Action=AssumeRoleWithWebIdentity -d Version=2011-06-15 -d RoleSessionName=env-test \
  --data-urlencode "RoleArn=$ROLE_ARN" --data-urlencode "WebIdentityToken=web-identity-token-env" \
  "$AWS_URL/" >"$TESTDIR/sts-env.xml"
xml_field() { sed -n "s:.*<$1>\\([^<]*\\)</$1>.*:\\1:p" "$TESTDIR/sts-env.xml"; }
rc_start rc_envtok 2 AWS_ACCESS_KEY_ID="$(xml_field AccessKeyId)" \
  AWS_SECRET_ACCESS_KEY="$(xml_field SecretAccessKey)" AWS_SESSION_TOKEN="$(xml_field SessionToken)"
check "env with AWS_SESSION_TOKEN: pull r0, every file matches its digest" pull r0 envtok-r0
envtok_source() {
  is "$(st ecr_by_source.sts)" -ge 1 && is "$(st ecr_by_source.static)" -eq 0 &&
    is "$(st sts_calls)" -eq 1 && is "$(st unknown_keys)" -eq 0
}
check "env with AWS_SESSION_TOKEN: ECR got the temporary key with its token signed" envtok_source
finish rc_envtok aws_envtok "env with AWS_SESSION_TOKEN"

# --- (b) shared credentials file, non-default profile -------------------------
# The default profile holds a key ECR does not know: using it would show.
cat >"$TESTDIR/aws-credentials" <<EOF
[default]
aws_access_key_id = AKIDDEFAULTPROFILE
aws_secret_access_key = $DEFAULT_SECRET

[regcache-test]
aws_access_key_id = $AKID
aws_secret_access_key = $SECRET
EOF
aws_start aws_file
rc_start rc_file 2 AWS_SHARED_CREDENTIALS_FILE="$TESTDIR/aws-credentials" \
  AWS_PROFILE=regcache-test
refresh_rounds file
file_source() {
  is "$(st ecr_by_source.static)" -ge 4 && is "$(st unknown_keys)" -eq 0 &&
    is "$(st sts_calls)" -eq 0 && is "$(st imds_calls)" -eq 0
}
check "file: every password came with the profile's key, never the default's" file_source
finish rc_file aws_file file

# --- (c) web identity through STS, token file rewritten -----------------------
# fakeaws accepts only what the token file holds at the time of the call,
# so a daemon that kept an old token would be refused.
WIT=$TESTDIR/web-identity-token
printf '%s' web-identity-token-0 >"$WIT"
echo web-identity-token-0 >"$TESTDIR/wit-history"
aws_start aws_wi --web-identity-token-file "$WIT"
rc_start rc_wi 2 AWS_WEB_IDENTITY_TOKEN_FILE="$WIT" AWS_ROLE_ARN="$ROLE_ARN" \
  AWS_ROLE_SESSION_NAME=regcache-test
rewrite_token() {
  local tok=web-identity-token-$1-$RANDOM
  printf '%s' "$tok" >"$WIT.new"
  mv "$WIT.new" "$WIT"
  echo "$tok" >>"$TESTDIR/wit-history"
}
refresh_rounds "web identity" rewrite_token
wi_source() {
  is "$(st ecr_by_source.sts)" -ge 4 && is "$(st ecr_by_source.static)" -eq 0 &&
    is "$(st sts_ok)" -ge 3 && is "$(st sts_refused)" -eq 0 && is "$(st imds_calls)" -eq 0
}
check "web identity: STS asked again as credentials expired, never refused" wi_source
check "web identity: the token file was re-read (3 or more tokens seen by STS)" \
  is "$(st sts_tokens_seen)" -ge 3
diag "web identity: sts_calls $(st sts_calls), tokens seen $(st sts_tokens_seen)"
finish rc_wi aws_wi "web identity"

# --- (d) IMDSv2 ---------------------------------------------------------------
aws_start aws_imds
rc_start rc_imds 2
refresh_rounds imds
imds_source() {
  is "$(st ecr_by_source.imds)" -ge 4 && is "$(st ecr_by_source.static)" -eq 0 &&
    is "$(st imds_creds)" -ge 2 && is "$(st imds_tokens)" -ge 1 && is "$(st sts_calls)" -eq 0
}
check "imds: credentials from IMDS, fetched again as they expired" imds_source
check "imds: never asked without an IMDSv2 session token" is "$(st imds_refused)" -eq 0
finish rc_imds aws_imds imds

# --- (e) a refresh that fails -------------------------------------------------
# Passwords live 10 s and are refreshed 7 s before: the first attempt is
# 3 s in, leaving 7 s in which the current password must still be used.
# Only log lines written after the failures begin count.
aws_start aws_fail --password-ttl 10
rc_start rc_fail 7 AWS_ACCESS_KEY_ID="$AKID" AWS_SECRET_ACCESS_KEY="$SECRET"
check "failing refresh: pull r0, every file matches its digest" pull r0 fail-r0
LOG_LINES=$(wc -l <"$RC_LOG")
tcurl -f -X POST "$AWS_URL/_control/fail?n=1000" >/dev/null
rc=0
wait_for "a failed refresh" 20 stat_above ecr_failed_injected 0 || rc=$?
ok "$rc" "failing refresh: regcache tried to refresh and ECR answered 500"
check "failing refresh: pull r1 with the password regcache still holds" pull r1 fail-r1
check "failing refresh: no password was issued meanwhile" is "$(st ecr_ok)" -eq 1
refresh_logged() {
  tail -n +$((LOG_LINES + 1)) "$RC_LOG" | grep -iE 'fail|error' |
    grep -qiE 'refresh|GetAuthorizationToken|ServerException|(^|[^0-9a-f])500([^0-9a-f]|$)'
}
rc=0
wait_for "the refresh failure in the daemon log" 10 refresh_logged || rc=$?
ok "$rc" "failing refresh: the daemon log says the refresh failed"
tcurl -f -X POST "$AWS_URL/_control/fail?n=0" >/dev/null
rc=0
wait_for "a refresh after ECR recovered" 30 stat_above ecr_ok 1 || rc=$?
ok "$rc" "failing refresh: once ECR answers again, a new password comes"
# The admin listener counts renewals and failures per upstream.
cred_stats() {
  tcurl "$rc_fail_ADMIN_URL/stats" | jq -e '.upstreams.ecr |
    .credential_refreshes >= 2 and .credential_refresh_failures >= 1'
}
check "failing refresh: /stats counts the renewals and the failures of upstream ecr" cred_stats
check "failing refresh: pull r2, every file matches its digest" pull r2 fail-r2
diag "failing refresh: $(st ecr_calls) ECR calls, $(st ecr_failed_injected) failed"
finish rc_fail aws_fail "failing refresh"

# --- (f) a wrong secret key ---------------------------------------------------
aws_start aws_bad
rc_start rc_bad 2 AWS_ACCESS_KEY_ID="$AKID" AWS_SECRET_ACCESS_KEY="$WRONG_SECRET"
bad_status() {
  local code
  code=$(tcurl -o "$TESTDIR/bad.json" -w '%{http_code}' -H "Accept: $MANIFEST_ACCEPT" \
    "$RC_URL/v2/ecr/test/img/manifests/r0")
  diag "wrong secret: manifest answered $code: $(head -c 300 "$TESTDIR/bad.json")"
  case $code in 401 | 502) ;; *) return 1 ;; esac
  jq -e '.errors[0].code | strings' "$TESTDIR/bad.json"
}
check "wrong secret: a manifest gets 401 or 502 with an OCI error" bad_status
fails() { ! "$@"; }
check "wrong secret: skopeo's pull fails" fails pull r0 bad-r0
bad_counted() {
  is "$(st bad_signatures)" -ge 1 && is "$(st ecr_ok)" -eq 0 && is "$(st imds_calls)" -eq 0 &&
    is "$(st sts_calls)" -eq 0
}
check "wrong secret: ECR refused the signature; no other source was tried" bad_counted
check "wrong secret: the daemon log names ECR's refusal" \
  grep -qE 'InvalidSignatureException|(^|[^0-9a-f])403([^0-9a-f]|$)' "$RC_LOG"
check "wrong secret: regcache is still running" regcache_alive rc_bad
finish rc_bad aws_bad "wrong secret"

# --- (g) the password changes behind regcache's back --------------------------
# Passwords live an hour: only the registry's 401 can make regcache ask
# again.  One manifest request first (a single re-authentication), then a
# whole pull.
aws_start aws_rot --password-ttl 3600
rc_start rc_rot 2 AWS_ACCESS_KEY_ID="$AKID" AWS_SECRET_ACCESS_KEY="$SECRET"
check "rotated: pull r0, every file matches its digest" pull r0 rot-r0
tcurl -f -X POST "$AWS_URL/_control/rotate" >/dev/null
ROT_BEFORE=$(st ecr_ok)
rot_manifest() {
  local got
  got=sha256:$(tcurl -f -H "Accept: $MANIFEST_ACCEPT" "$RC_URL/v2/ecr/test/img/manifests/r4" |
    sha256sum | cut -d' ' -f1)
  is "$got" = "${DIGEST[r4]}"
}
check "rotated: the r4 manifest comes through after the registry's 401" rot_manifest
rot_asked() { is "$(st ecr_ok)" -gt "$ROT_BEFORE" && is "$(st ecr_ok)" -le $((ROT_BEFORE + 2)); }
check "rotated: regcache asked ECR again, once or twice" rot_asked
check "rotated: pull r4, every file matches its digest" pull r4 rot-r4
finish rc_rot aws_rot rotated

# --- (h) ECR hands out a password that has already expired --------------------
# Refused as a failed renewal, retried with backoff; the daemon keeps
# answering and a pull fails with an error instead of hanging.
aws_start aws_exp --password-ttl -30 --keep-expired
rc_start rc_exp 2 AWS_ACCESS_KEY_ID="$AKID" AWS_SECRET_ACCESS_KEY="$SECRET"
exp_answers() {
  local code
  code=$(tcurl -o /dev/null -w '%{http_code}' --max-time 20 -H "Accept: $MANIFEST_ACCEPT" \
    "$RC_URL/v2/ecr/test/img/manifests/r1") || true
  diag "expired password: the manifest answered $code"
  [ "$code" -ge 400 ] && tcurl -f -o /dev/null "$RC_URL/v2/"
}
check "an already expired password: a request fails with an error, the daemon still answers" exp_answers
check "expired password: the log says so" grep -q 'already expired' "$RC_LOG"
finish rc_exp aws_exp "expired password"

# --- secrets ------------------------------------------------------------------
no_secret_logged() {
  collect_secrets
  is "$(wc -l <"$TESTDIR/secrets")" -ge 20 || return 1
  if grep -F -l -f "$TESTDIR/secrets" "$TESTDIR"/rc_*.log "$TESTDIR"/aws_*.log; then
    diag "a secret is in the logs above"
    return 1
  fi
}
check "no password, token or secret key appears in any regcache or fakeaws log" no_secret_logged

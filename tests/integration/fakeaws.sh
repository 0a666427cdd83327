#!/bin/bash
# The fake AWS that ecr.sh relies on (tests/tools/fakeaws.py), checked on
# its own: its SigV4 verifier against the AWS test suite, IMDSv2 (and
# IMDSv1 refused), STS's web identity checks, ECR's refusals, and the
# passwords it installs in a real registry's htpasswd file.  ECR's
# success path needs a signer; ecr.sh covers it with regcache's own.
# shellcheck disable=SC2154
set -eu
. "$(dirname "$0")/../lib/common.sh"
. "$SRCDIR/tests/lib/registry.sh"

require_cmd docker-registry htpasswd openssl python3 curl jq
plan 12

check "fakeaws --selftest: the verifier passes the AWS SigV4 test suite" \
  python3 "$TOOLSDIR/fakeaws.py" --selftest "$SRCDIR/tests/data/aws4"

registry_start_basic up
ROLE_ARN=arn:aws:iam::123456789012:role/regcache-test
printf '%s' web-identity-token-1 >"$TESTDIR/wit"
spawn aws python3 -u "$TOOLSDIR/fakeaws.py" --port 0 --port-file "$TESTDIR/aws.port" \
  --access-key AKIDFAKEAWSTEST --secret-key fakeaws-test-secret --role-arn "$ROLE_ARN" \
  --web-identity-token-file "$TESTDIR/wit" --htpasswd "$up_HTPASSWD" \
  --issued "$TESTDIR/issued" --issued-creds "$TESTDIR/issued-creds" \
  --stats-file "$TESTDIR/aws.stats" --password-ttl 2 --temp-ttl 60
wait_for "fakeaws port file" 10 test -s "$TESTDIR/aws.port"
AWS=http://127.0.0.1:$(cat "$TESTDIR/aws.port")
stat() { jq -r ".$1" "$TESTDIR/aws.stats"; }
CREDS_PATH=/latest/meta-data/iam/security-credentials

imds_v1_refused() {
  [ "$(tcurl -o /dev/null -w '%{http_code}' "$AWS$CREDS_PATH/")" = 401 ] &&
    [ "$(tcurl -o /dev/null -w '%{http_code}' -X PUT "$AWS/latest/api/token")" = 400 ]
}
check "IMDSv1 (no session token) gets 401, a token without a TTL 400" imds_v1_refused

imds_v2() {
  local tok role creds
  tok=$(tcurl -f -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$AWS/latest/api/token")
  role=$(tcurl -f -H "X-aws-ec2-metadata-token: $tok" "$AWS$CREDS_PATH/")
  [ "$role" = regcache-test-role ] || return 1
  creds=$(tcurl -f -H "X-aws-ec2-metadata-token: $tok" "$AWS$CREDS_PATH/$role")
  jq -e '.Code == "Success" and .Type == "AWS-HMAC" and (.AccessKeyId | startswith("ASIA"))
         and (.SecretAccessKey | length) == 40 and (.Token | length) > 100
         and (.Expiration | test("^[0-9-]{10}T[0-9:]{8}Z$"))' <<<"$creds" &&
    [ "$(tcurl -o /dev/null -w '%{http_code}' -H 'X-aws-ec2-metadata-token: nope' \
      "$AWS$CREDS_PATH/$role")" = 401 ]
}
check "IMDSv2: session token, role name, credentials JSON; a wrong token gets 401" imds_v2

sts() { # sts TOKEN ROLE -> prints "STATUS BODY"
  tcurl -w ' %{http_code}' -d Action=AssumeRoleWithWebIdentity -d Version=2011-06-15 \
    --data-urlencode "RoleArn=$2" -d RoleSessionName=fakeaws-test \
    --data-urlencode "WebIdentityToken=$1" "$AWS/"
}
sts_checks() {
  local out
  out=$(sts web-identity-token-1 "$ROLE_ARN")
  [ "${out##* }" = 200 ] &&
    grep -q '<AssumeRoleWithWebIdentityResult>.*<Credentials><AccessKeyId>ASIA' <<<"$out" &&
    grep -q '<SessionToken>[^<]\{100,\}</SessionToken><Expiration>[0-9-]*T[0-9:]*Z<' \
      <<<"$out" || return 1
  out=$(sts wrong-token "$ROLE_ARN")
  [ "${out##* }" = 400 ] && grep -q '<Code>InvalidIdentityToken</Code>' <<<"$out" || return 1
  out=$(sts web-identity-token-1 arn:aws:iam::123456789012:role/other)
  [ "${out##* }" = 403 ] && grep -q '<Code>AccessDenied</Code>' <<<"$out" || return 1
  # The token is read from the file at each request.
  printf '%s' web-identity-token-2 >"$TESTDIR/wit.new" && mv "$TESTDIR/wit.new" "$TESTDIR/wit"
  out=$(sts web-identity-token-1 "$ROLE_ARN")
  [ "${out##* }" = 400 ] || return 1
  out=$(sts web-identity-token-2 "$ROLE_ARN")
  [ "${out##* }" = 200 ] && [ "$(stat sts_ok)" = 2 ] && [ "$(stat sts_tokens_seen)" = 2 ]
}
check "STS: only the role and the token file's current content get credentials" sts_checks

ecr() { # ecr [CURL ARGS] -> prints "BODY STATUS"
  tcurl -w ' %{http_code}' -X POST -d '{}' -H 'Content-Type: application/x-amz-json-1.1' \
    -H 'X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken' "$@" "$AWS/"
}
AMZ_DATE=$(date -u +%Y%m%dT%H%M%SZ)
authz() { # authz AKID [DATE]: a well-formed Authorization with a made-up signature
  printf '%s' "Authorization: AWS4-HMAC-SHA256" \
    " Credential=$1/${2:-${AMZ_DATE:0:8}}/us-east-1/ecr/aws4_request," \
    " SignedHeaders=host;x-amz-date, Signature=$(printf '%064d' 7)"
}
ecr_refusals() {
  local out
  out=$(ecr)
  [ "${out##* }" = 400 ] && grep -q MissingAuthenticationTokenException <<<"$out" || return 1
  out=$(ecr -H "X-Amz-Date: $AMZ_DATE" -H "$(authz AKIDFAKEAWSTEST)")
  [ "${out##* }" = 403 ] && grep -q '"InvalidSignatureException"' <<<"$out" || return 1
  out=$(ecr -H "X-Amz-Date: $AMZ_DATE" -H "$(authz AKIDUNKNOWN)")
  [ "${out##* }" = 403 ] && grep -q '"UnrecognizedClientException"' <<<"$out" || return 1
  out=$(ecr -H "X-Amz-Date: 20150830T123600Z" -H "$(authz AKIDFAKEAWSTEST 20150830)")
  [ "${out##* }" = 403 ] && grep -q 'Signature expired' <<<"$out" || return 1
  [ "$(stat ecr_calls)" = 4 ] && [ "$(stat bad_signatures)" = 2 ] &&
    [ "$(stat unknown_keys)" = 1 ] && [ "$(stat ecr_ok)" = 0 ]
}
check "ECR: unsigned 400, forged 403, unknown key 403, stale date 403, all counted" ecr_refusals

# Passwords at the registry: the controls install them like a successful
# ECR call would, and the last line of --issued is the current one.
reg_status() { # reg_status PASSWORD
  tcurl -o /dev/null -w '%{http_code}' --cacert "$TLS_CA" -u "AWS:$1" "$up_URL/v2/"
}
check "a rotation installs a password" tcurl -f -X POST "$AWS/_control/rotate"
PW1=$(tail -n 1 "$TESTDIR/issued")
check "the registry accepts the installed password for user AWS" \
  test "$(reg_status "$PW1")" = 200
tcurl -f -X POST "$AWS/_control/rotate" >/dev/null
PW2=$(tail -n 1 "$TESTDIR/issued")
two_passwords() { [ "$(reg_status "$PW1")" = 401 ] && [ "$(reg_status "$PW2")" = 200 ]; }
check "after another rotation only the new password works" two_passwords
expired() { [ "$(stat passwords_expired)" -ge 1 ]; }
wait_for "the password to expire" 10 expired || true
check "an expired password (TTL 2 s) is refused by the registry" \
  test "$(reg_status "$PW2")" = 401
test_user() {
  [ "$(tcurl -o /dev/null -w '%{http_code}' --cacert "$TLS_CA" -u "$up_CREDS" "$up_URL/v2/")" = 200 ]
}
check "the test user of the registry is untouched" test_user

fail_control() {
  [ "$(tcurl -f -X POST "$AWS/_control/fail?n=2" | jq .fail_next)" = 2 ] &&
    [ "$(tcurl -f "$AWS/_control/stats" | jq .rotations)" = 2 ]
}
check "controls: fail-next is set, stats are served" fail_control

no_secrets_logged() {
  grep -v '^$' "$TESTDIR/issued" "$TESTDIR/issued-creds" -h >"$TESTDIR/secrets"
  printf '%s\n' fakeaws-test-secret web-identity-token-1 web-identity-token-2 >>"$TESTDIR/secrets"
  [ "$(wc -l <"$TESTDIR/secrets")" -ge 8 ] && ! grep -F -f "$TESTDIR/secrets" "$aws_LOG"
}
check "no password, key, token or secret appears in the fakeaws log" no_secrets_logged

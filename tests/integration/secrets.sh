#!/bin/bash
# Runs after every other integration test (see Makefile.am): every regcache
# log the suite kept (tests/logs/NAME/) is searched for every password and
# token the tests used (tests/logs/NAME.secrets): none may appear, not even
# in the debug logs.  Short values are skipped: they would match by chance.
# Nor may anything shaped like a JWT.
set -eu
. "$(dirname "$0")/../lib/common.sh"

shopt -s nullglob
lists=("$LOGKEEP"/*.secrets)
logs=("$LOGKEEP"/*/*.log)
[ ${#logs[@]} -gt 0 ] || skip_all "no kept regcache logs: run the other tests first"
[ ${#lists[@]} -gt 0 ] || skip_all "no secret lists: run the other tests first"

pass "the suite kept ${#logs[@]} regcache logs"
nsecrets=$(cat "${lists[@]}" | awk 'length($0) >= 8' | sort -u | wc -l)
if [ "$nsecrets" -gt 0 ]; then pass "the tests used $nsecrets distinct secrets"
else fail "the tests recorded no secrets"; fi

for list in "${lists[@]}"; do
  name=$(basename "$list" .secrets)
  found=()
  while IFS= read -r s; do
    [ ${#s} -ge 8 ] || continue
    if grep -rqF -- "$s" "$LOGKEEP"/*/; then
      found+=("${s:0:4}... in $(grep -rlF -- "$s" "$LOGKEEP"/*/ | head -3 | tr '\n' ' ')")
    fi
  done < <(sort -u "$list")
  if [ ${#found[@]} -eq 0 ]; then
    pass "no secret of $name.sh appears in any regcache log ($(sort -u "$list" | awk 'length($0) >= 8' | wc -l) checked)"
  else
    fail "secrets of $name.sh appear in regcache logs"
    diag "${found[@]}"
  fi
done
# Tokens a client fetched by itself (skopeo, ctr) are in no list, but every
# bearer token of the suite is a JWT: none may be in any log either.
jwts=$(grep -rhoE 'eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}' "$LOGKEEP"/*/ | wc -l)
ok "$([ "$jwts" -eq 0 ]; echo $?)" "no JWT-shaped token in any regcache log ($jwts found)"
done_testing

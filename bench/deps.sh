#!/bin/sh
# Install what bench/run.sh needs on Debian (12 "bookworm" or later):
# nginx as the static-file reference, wrk for the manifest load, hyperfine
# (optional), Debian's docker-registry as upstream and reference mirror,
# skopeo as the pulling client, and the small tools the scripts use.
# Runs apt-get as root (through sudo when not root already).  Not part of
# `make check`; bench/RESULTS.md says how to run the benchmark.
set -eu

pkgs="nginx-light wrk hyperfine docker-registry skopeo python3 curl jq
      procps coreutils gzip"

if [ "$(id -u)" -ne 0 ]; then
	exec sudo "$0" "$@"
fi

export DEBIAN_FRONTEND=noninteractive
# Packages must not start their services (nginx, docker-registry) here:
# run.sh starts its own, on loopback ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -q
# nginx-light is gone from newer Debian releases: fall back to nginx.
if apt-cache show nginx-light >/dev/null 2>&1; then :; else
	pkgs=$(echo "$pkgs" | sed 's/nginx-light/nginx/')
fi
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $pkgs

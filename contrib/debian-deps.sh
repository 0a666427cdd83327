#!/bin/sh
# Install what regcache needs on Debian (12 "bookworm" or later).
#   contrib/debian-deps.sh build   compilers, autotools and the libraries
#   contrib/debian-deps.sh test    that, plus the real registries and
#                                  clients the test suite starts
#   contrib/debian-deps.sh bench   what bench/run.sh needs besides the
#                                  build: nginx, wrk, hyperfine, ...
# Runs apt-get as root (through sudo when not root already).
set -eu

mode=${1:-build}
build="autoconf automake libtool pkg-config make gcc libc6-dev
       libevent-dev libssl-dev liblmdb-dev libjansson-dev ca-certificates"
# Real parts of the test suite: distribution 2.8 as the upstream, skopeo,
# containerd's ctr, podman and dockerd as clients; tools the scripts use.
# contrib.sh checks the deployment files and manuals with systemd-analyze,
# logrotate, PyYAML, man, groff and mandoc; stats.sh checks /metrics with
# promtool (prometheus).
test="docker-registry skopeo containerd podman docker.io apache2-utils
      openssl python3 curl jq procps util-linux iproute2
      systemd logrotate python3-yaml man-db groff-base mandoc prometheus"

# The benchmark: nginx as the static-file reference, wrk for the manifest
# load, hyperfine (optional), the registry and skopeo.
bench="nginx-light wrk hyperfine docker-registry skopeo python3 curl jq
       procps coreutils gzip"

case $mode in
build) pkgs=$build ;;
test) pkgs="$build $test" ;;
bench) pkgs=$bench ;;
*) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
	exec sudo "$0" "$@"
fi

export DEBIAN_FRONTEND=noninteractive
# Packages must not start their services here (dockerd, containerd,
# docker-registry): the tests start their own, on loopback ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -q
# nginx-light is gone from newer Debian releases: fall back to nginx.
case $pkgs in *nginx-light*)
	apt-cache show nginx-light >/dev/null 2>&1 ||
	    pkgs=$(echo "$pkgs" | sed 's/nginx-light/nginx/') ;;
esac
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $pkgs

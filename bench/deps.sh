#!/bin/sh
# Install what bench/run.sh needs on Debian (12 "bookworm" or later), as
# root (through sudo otherwise).  Not part of `make check`;
# bench/RESULTS.md says how to run the benchmark.
exec "$(dirname "$0")/../contrib/debian-deps.sh" bench

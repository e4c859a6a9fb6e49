#!/usr/bin/env bash
# `make tools`: make sure promtool is installed, from Debian's `prometheus` package, so that the
# tests check deploy/prometheus/ with it. Only the binaries are wanted: the package's service is
# kept from starting. Never fails the build: without apt-get or root it says why, and the promtool
# tests skip with that reason.
set -u

log=${TOOLS_LOG:-var/log/tools.log}
mkdir -p "$(dirname "$log")"

if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
skip() {
  echo "promtool not installed: $1; tests/deploy skips the promtool checks" >&2
  exit 0
}
command -v apt-get >/dev/null 2>&1 || skip "apt-get is not available (install Prometheus' promtool by hand)"

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo -n true 2>/dev/null || skip "not root and no password-less sudo for apt-get"
  sudo=(sudo -n)
fi

# invoke-rc.d asks /usr/sbin/policy-rc.d whether a package may start its service; 101 says no.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# written by tiqu deploy/local/ensure_promtool.sh while installing\nexit 101\n' \
    | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi

install_prometheus() {
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends prometheus >>"$log" 2>&1
}
echo "installing Debian's prometheus package for promtool (log: $log)"
if ! install_prometheus; then
  # A fresh machine may have no package lists yet.
  "${sudo[@]}" apt-get update -qq >>"$log" 2>&1 && install_prometheus
fi

# Where systemd runs, the unit may have been enabled: tiqu starts Prometheus itself (make up).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  "${sudo[@]}" systemctl disable --now prometheus.service >>"$log" 2>&1 || true
fi

if command -v promtool >/dev/null 2>&1; then
  echo "installed $(promtool --version 2>&1 | head -n 1)"
else
  skip "apt-get install prometheus failed (see $log)"
fi

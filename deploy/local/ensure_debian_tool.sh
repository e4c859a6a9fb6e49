#!/usr/bin/env bash
# `make tools`: make sure COMMAND is installed, from Debian's PACKAGE, for the tests that use it:
#   ensure_debian_tool.sh promtool prometheus "tests/deploy skips the promtool checks"
#   ensure_debian_tool.sh chromium chromium "the console's browser tests skip"
# Only the binaries are wanted: a package's service is kept from starting. Never fails the build:
# without apt-get or root it says why (SKIPS tells what does without), and those tests skip.
set -u

command_name=$1
package=$2
skips=$3
log=${TOOLS_LOG:-var/log/tools.log}
mkdir -p "$(dirname "$log")"

if command -v "$command_name" >/dev/null 2>&1; then
  exit 0
fi
skip() {
  echo "$command_name not installed: $1; $skips" >&2
  exit 0
}
command -v apt-get >/dev/null 2>&1 || skip "apt-get is not available (install Debian's $package by hand)"

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo -n true 2>/dev/null || skip "not root and no password-less sudo for apt-get"
  sudo=(sudo -n)
fi

# invoke-rc.d asks /usr/sbin/policy-rc.d whether a package may start its service; 101 says no.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# written by tiqu deploy/local/ensure_debian_tool.sh while installing\nexit 101\n' \
    | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi

install_package() {
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "$package" >>"$log" 2>&1
}
echo "installing Debian's $package package for $command_name (log: $log)"
if ! install_package; then
  # A fresh machine may have no package lists yet.
  "${sudo[@]}" apt-get update -qq >>"$log" 2>&1 && install_package
fi

# Where systemd runs, the package's unit may have been enabled: tiqu starts its servers itself.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  "${sudo[@]}" systemctl disable --now "$package.service" >>"$log" 2>&1 || true
fi

if command -v "$command_name" >/dev/null 2>&1; then
  # The first line with a dotted version: Debian's chromium launcher prints a shell warning first.
  echo "installed $("$command_name" --version 2>&1 | grep -m 1 -E '[0-9]+\.[0-9]+')"
else
  skip "apt-get install $package failed (see $log)"
fi

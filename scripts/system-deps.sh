#!/usr/bin/env bash
# Installs Debian packages, with apt-get update first, only when one is
# missing: those named as arguments, or by default all that the tests need.
# Run as root, or with sudo at hand. openssh-server and iproute2: the pool
# test's hosts (tests/test_pool.py: network namespaces, each with an sshd).
set -euo pipefail
if [ $# -gt 0 ]; then packages=("$@"); else packages=(postgresql chromium bubblewrap nodejs openssh-server iproute2); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# Installs what the VM tests and the demo need from Debian when it is missing:
# QEMU, a guest kernel, busybox for the guest userland, gcc for the guest agent.
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "setup_host: missing Debian packages: ${need[*]} (run as root: apt-get install ${need[*]})" >&2
  exit 2
fi
echo "setup_host: installing ${need[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null

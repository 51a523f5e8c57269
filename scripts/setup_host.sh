#!/usr/bin/env bash
# Installs what the VM tests and the demo need from Debian when it is missing:
# QEMU, a guest kernel, busybox for the guest userland, gcc for the guest agent,
# promtool (package prometheus) to check the daemon's /metrics, curl to call its socket.
# For container images: erofs-utils (mkfs.erofs), zstd (zstd layers), umoci and skopeo (OCI layouts).
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
command -v zstd >/dev/null || need+=(zstd)
command -v umoci >/dev/null || need+=(umoci)
command -v skopeo >/dev/null || need+=(skopeo)
[ -x /usr/bin/promtool ] || need+=(prometheus)
[ -x /usr/bin/curl ] || need+=(curl)
[ -x /usr/bin/python3 ] || need+=(python3) # a real client of the API in the tests
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "setup_host: missing Debian packages: ${need[*]} (run as root: apt-get install ${need[*]})" >&2
  exit 2
fi
echo "setup_host: installing ${need[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
if [[ " ${need[*]} " == *" prometheus "* ]]; then
  # only promtool is wanted: the Prometheus server the package sets up must not keep running
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  else
    service prometheus stop >/dev/null 2>&1 || true
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi

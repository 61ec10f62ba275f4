#!/usr/bin/env bash
# Build the sandbox image without a registry: debootstrap a minimal Debian, install the toolchains
# from Debian's packages in a chroot, and `docker import` the tree. Needs root, debootstrap and a
# running Docker engine. Usage: build-offline.sh IMAGE_TAG [MIRROR]
set -euo pipefail
tag=${1:?usage: build-offline.sh IMAGE_TAG [MIRROR]}
mirror=${2:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)
GO_CACHE=/usr/local/share/evalkit/gocache
root=$(mktemp -d /var/tmp/evalkit-rootfs.XXXXXX)
cleanup() {
  umount "$root/proc" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT

echo "[1/4] debootstrap bookworm (minbase) into $root"
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null

echo "[2/4] apt-get install $(grep -v '^#' "$here/packages.txt" | tr '\n' ' ')"
# The JDK's post-install scripts need /proc.
mount -t proc proc "$root/proc"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
chroot "$root" /bin/sh -c "apt-get -o APT::Sandbox::User=root update -qq && DEBIAN_FRONTEND=noninteractive \
  apt-get -o APT::Sandbox::User=root install -y -qq --no-install-recommends $(grep -v '^#' "$here/packages.txt" | tr '\n' ' ') >/dev/null"
chroot "$root" useradd --uid 10001 --create-home --shell /usr/sbin/nologin sandbox
# A warm Go build cache (std + testify, vetted): each Go program starts from a copy (~1 s instead of ~9 s).
mkdir -p "$root/tmp/warm" && cp "$here/warm/go_cache_test.go" "$root/tmp/warm/main_test.go"
chroot "$root" /bin/sh -c "cd /tmp/warm && GOCACHE=$GO_CACHE GOPATH=/usr/share/gocode GO111MODULE=off \
  go test main_test.go >/dev/null && chmod -R a+rX $GO_CACHE && rm -rf /tmp/warm"
umount "$root/proc"

echo "[3/4] trimming apt caches and docs"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root/etc/resolv.conf"

echo "[4/4] docker import as $tag"
tar -C "$root" -c . | docker import \
  -c 'USER 10001:10001' -c 'WORKDIR /tmp' -c 'ENV LANG=C.UTF-8' \
  -m "evalkit sandbox (offline build)" - "$tag" >/dev/null
echo "built $tag"

#!/usr/bin/env bash
# An emulated Raspberry Pi: a Debian bookworm arm64 root filesystem run under
# qemu user-mode emulation (qemu >= 10; bookworm's qemu 7.2 crashes ai-edge-litert).
#
#   scripts/arm64_rootfs.sh check            can this host run it? (prints the reason, exit 3 if not)
#   scripts/arm64_rootfs.sh host-setup       install debootstrap + qemu >= 10 (bookworm-backports), register binfmt
#   scripts/arm64_rootfs.sh build            build the cached tarball if missing; print its path
#   scripts/arm64_rootfs.sh extract          unpack the tarball (building it if missing); print the root dir
#   scripts/arm64_rootfs.sh run CMD...       run CMD inside the unpacked root (proc/dev mounted, QEMU_CPU set)
#   scripts/arm64_rootfs.sh cached           exit 0 if the tarball exists (used by the default test run)
#
# The tarball (~/.cache/edgeq/, or $EDGEQ_CACHE) holds Debian + python3 + two venvs:
#   /opt/edgeq/litert          numpy 2, pillow, flatbuffers, click, ai-edge-litert 2.3.0
#   /opt/edgeq/tflite-runtime  numpy<2, pillow, flatbuffers, click, tflite-runtime 2.14.0
# and openssh-server (for deploying into it over SSH). edgeq-device itself is not in the
# tarball: the tests install the wheel of the current source into both venvs.
# pip inside the root works as on the host: the host's CA bundle, /etc/pip.conf,
# ~/.config/pip/pip.conf and PIP_* / proxy variables are passed in, and local folders
# the pip configuration names (find-links, file:// indexes) are bind-mounted read-only.
set -euo pipefail

RECIPE=1   # bump when the recipe below changes: a new tarball name, the old one is left alone
CACHE=${EDGEQ_CACHE:-$HOME/.cache/edgeq}
TARBALL=$CACHE/arm64-bookworm-rootfs-v$RECIPE.tar.zst
ROOT=${EDGEQ_ARM64_ROOT:-$CACHE/arm64-bookworm-rootfs-v$RECIPE}
MIRROR=${EDGEQ_DEBIAN_MIRROR:-http://deb.debian.org/debian}
export QEMU_CPU=${QEMU_CPU:-cortex-a72}   # a Raspberry Pi 4; cortex-a76 for a Pi 5
HOST_PY=${HOST_PY:-python3}

say() { echo "arm64_rootfs: $*" >&2; }

qemu_major() {
  local q
  q=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
  [ -n "$q" ] || { echo 0; return; }
  "$q" --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1
}

binfmt_ok() { [ -r /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64; }

# Print why this host cannot run the rootfs, or nothing.
reason() {
  if [ "$(id -u)" != 0 ]; then echo "needs root (debootstrap, chroot, mounts)"; return; fi
  if [ "$(uname -m)" = aarch64 ]; then return; fi
  local m; m=$(qemu_major)
  if [ "${m:-0}" -lt 10 ]; then echo "needs qemu-user >= 10 (found ${m:-none}); run: $0 host-setup"; return; fi
  if ! binfmt_ok; then echo "binfmt_misc has no enabled qemu-aarch64 entry; run: $0 host-setup"; return; fi
}

cmd_check() { local r; r=$(reason); if [ -n "$r" ]; then echo "$r"; exit 3; fi; echo ok; }

cmd_host_setup() {
  [ "$(id -u)" = 0 ] || { say "host-setup needs root"; exit 3; }
  export DEBIAN_FRONTEND=noninteractive
  local need=()
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v zstd >/dev/null || need+=(zstd)
  if [ "$(uname -m)" != aarch64 ] && [ "$(qemu_major)" -lt 10 ]; then
    if ! apt-cache policy qemu-user-static 2>/dev/null | grep -q ' 1:1[0-9]\.'; then
      . /etc/os-release
      if [ "${VERSION_CODENAME:-}" = bookworm ]; then
        say "adding bookworm-backports for qemu >= 10"
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
          "$MIRROR" > /etc/apt/sources.list.d/edgeq-bookworm-backports.sources
      fi
      apt-get update -qq
    fi
    apt-get install -y -qq -t bookworm-backports qemu-user-static binfmt-support >/dev/null 2>&1 \
      || apt-get install -y -qq qemu-user-static binfmt-support >/dev/null
  fi
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq; apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [ "$(uname -m)" != aarch64 ] && ! binfmt_ok; then
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64
    local conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -r "$conf" ] || conf=/usr/lib/binfmt.d/qemu-aarch64-static.conf
    if [ -r "$conf" ]; then
      grep -v '^#' "$conf" | head -1 > /proc/sys/fs/binfmt_misc/register
    else
      update-binfmts --enable qemu-aarch64
    fi
  fi
  cmd_check
}

# --- mounts for a chroot; always undone ------------------------------------------------
MOUNTED=()
umount_all() {
  local i
  for ((i=${#MOUNTED[@]}-1; i>=0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
  MOUNTED=()
}
bind() {  # bind SRC DEST [ro]
  mkdir -p "$2"
  mountpoint -q "$2" && return 0
  mount --bind "$1" "$2"; MOUNTED+=("$2")
  [ "${3:-}" = ro ] && mount -o remount,bind,ro "$2" || true
}

# Local folders the host's pip configuration refers to (find-links, file:// indexes).
pip_local_dirs() {
  "$HOST_PY" - <<'EOF' 2>/dev/null || true
import configparser, os, re
paths = ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", os.path.expanduser("~/.pip/pip.conf"),
         os.path.expanduser("~/.config/pip/pip.conf")]
values = []
for p in paths:
    c = configparser.ConfigParser()
    try:
        c.read(p)
    except configparser.Error:
        continue
    for s in c.sections():
        for k in ("find-links", "index-url", "extra-index-url"):
            if c.has_option(s, k):
                values += c.get(s, k).split()
for k in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
    values += os.environ.get(k, "").split()
for v in values:
    v = re.sub(r"^file://", "", v).rstrip("/")
    if v.startswith("/") and os.path.isdir(v):
        # a "simple" index links to files beside it (../files/...): take its parent folder
        print(os.path.dirname(v) if os.path.basename(v) == "simple" else v)
EOF
}

prepare_root() {  # mounts + host pip/CA configuration into the root
  local r=$1
  bind /dev "$r/dev"
  mkdir -p "$r/proc"; mountpoint -q "$r/proc" || { mount -t proc proc "$r/proc"; MOUNTED+=("$r/proc"); }
  local ca
  for ca in /etc/ssl/certs/ca-certificates.crt "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}"; do
    if [ -n "$ca" ] && [ -f "$ca" ]; then mkdir -p "$r$(dirname "$ca")"; cp -fL "$ca" "$r$ca"; fi
  done
  [ -f /etc/pip.conf ] && cp -f /etc/pip.conf "$r/etc/pip.conf"
  if [ -f "$HOME/.config/pip/pip.conf" ]; then mkdir -p "$r/root/.config/pip"; cp -f "$HOME/.config/pip/pip.conf" "$r/root/.config/pip/pip.conf"; fi
  [ -f /etc/resolv.conf ] && cp -fL /etc/resolv.conf "$r/etc/resolv.conf" || true
  local d
  while IFS= read -r d; do [ -n "$d" ] && bind "$d" "$r$d" ro; done < <(pip_local_dirs)
}

# Run a command inside the root with a clean environment plus pip/proxy/CA variables.
in_root() {
  local r=$1; shift
  local envs=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
              QEMU_CPU="$QEMU_CPU" PYTHONDONTWRITEBYTECODE=1)
  local v
  while IFS= read -r v; do envs+=("$v"); done < <(env | grep -E '^(PIP_[A-Z_]+|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY|SSL_CERT_FILE|REQUESTS_CA_BUNDLE|EDGEQ_[A-Z_]+)=' || true)
  env -i "${envs[@]}" chroot "$r" "$@"
}

cmd_build() {
  if [ -f "$TARBALL" ]; then echo "$TARBALL"; return; fi
  local r; r=$(reason); [ -z "$r" ] || { say "cannot build: $r"; exit 3; }
  command -v debootstrap >/dev/null || { say "debootstrap missing; run: $0 host-setup"; exit 3; }
  mkdir -p "$CACHE"
  local work; work=$(mktemp -d "$CACHE/.build.XXXXXX")
  trap 'umount_all; rm -rf "'"$work"'"' EXIT
  local t0=$SECONDS
  say "debootstrap bookworm arm64 into $work/root (several minutes)"
  debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,ca-certificates,openssh-server,tar,procps \
    bookworm "$work/root" "$MIRROR" > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  say "debootstrap done in $((SECONDS - t0)) s"
  prepare_root "$work/root"
  say "venv /opt/edgeq/litert: numpy 2 + ai-edge-litert"
  in_root "$work/root" python3 -m venv /opt/edgeq/litert
  in_root "$work/root" /opt/edgeq/litert/bin/python -m pip install -q --no-cache-dir \
    numpy pillow flatbuffers click ai-edge-litert==2.3.0
  say "venv /opt/edgeq/tflite-runtime: numpy<2 + tflite-runtime"
  in_root "$work/root" python3 -m venv /opt/edgeq/tflite-runtime
  in_root "$work/root" /opt/edgeq/tflite-runtime/bin/python -m pip install -q --no-cache-dir \
    'numpy<2' pillow flatbuffers click tflite-runtime==2.14.0
  umount_all
  # the host's pip/CA files are passed in at each run, not baked in
  rm -f "$work/root/etc/pip.conf"; rm -rf "$work/root/root/.config/pip" "$work/root/var/cache/apt/archives/"*.deb
  say "packing $TARBALL"
  tar -C "$work/root" --numeric-owner -cf - . | zstd -q -T0 -6 -o "$work/rootfs.tar.zst"
  mv "$work/rootfs.tar.zst" "$TARBALL"
  say "built in $((SECONDS - t0)) s: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
  echo "$TARBALL"
}

cmd_extract() {
  cmd_build >/dev/null
  local stamp="$ROOT/.edgeq-rootfs-stamp" want
  want=$(stat -c '%s %Y' "$TARBALL")
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then echo "$ROOT"; return; fi
  grep -qs " $ROOT/" /proc/mounts && { say "$ROOT has mounts still in use"; exit 1; }
  rm -rf "$ROOT"; mkdir -p "$ROOT"
  zstd -q -dc "$TARBALL" | tar -C "$ROOT" --numeric-owner -xf -
  echo "$want" > "$stamp"
  echo "$ROOT"
}

cmd_run() {
  local r; r=$(reason); [ -z "$r" ] || { say "cannot run: $r"; exit 3; }
  [ -f "$ROOT/.edgeq-rootfs-stamp" ] || cmd_extract >/dev/null
  trap umount_all EXIT
  prepare_root "$ROOT"
  local rc=0
  in_root "$ROOT" "$@" || rc=$?
  umount_all
  return $rc
}

case "${1:-}" in
  check) cmd_check ;;
  host-setup) cmd_host_setup ;;
  build) cmd_build ;;
  extract) cmd_extract ;;
  run) shift; cmd_run "$@" ;;
  cached) [ -f "$TARBALL" ] ;;
  path) echo "$TARBALL" ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# An emulated Raspberry Pi: a Debian arm64 (or armhf) root filesystem run under qemu
# user-mode emulation (qemu >= 10; bookworm's qemu 7.2 crashes ai-edge-litert).
#
#   scripts/arm64_rootfs.sh check            can this host run it? (prints the reason, exit 3 if not)
#   scripts/arm64_rootfs.sh host-setup       install debootstrap + qemu >= 10 (bookworm-backports), register binfmt
#   scripts/arm64_rootfs.sh build            build the root if missing (cached); print its folder
#   scripts/arm64_rootfs.sh run CMD...       run CMD inside the root (proc/dev mounted, QEMU_CPU set)
#   scripts/arm64_rootfs.sh cached           exit 0 if the root is built
#   scripts/arm64_rootfs.sh path             the root's folder
#
# EDGEQ_PI_OS picks the operating system (default bookworm):
#   bookworm        Raspberry Pi OS bookworm, 64-bit: Debian bookworm arm64, Python 3.11, two venvs
#                     /opt/edgeq/litert          numpy 2, pillow, flatbuffers, click, ai-edge-litert 2.3.0
#                     /opt/edgeq/tflite-runtime  numpy<2, pillow, flatbuffers, click, tflite-runtime 2.14.0
#   trixie          Raspberry Pi OS trixie, 64-bit: Debian trixie arm64, Python 3.13, the litert venv only
#                     (tflite-runtime has no wheels for Python 3.13)
#   bookworm-armhf  the 32-bit Raspberry Pi OS: Debian bookworm armhf, Python 3.11 with Debian's numpy,
#                     pillow, click and flatbuffers; PyPI has no TFLite runtime for it
# QEMU_CPU picks the CPU: cortex-a72 (a Pi 4, the default on arm64) or cortex-a76 (a Pi 5).
# The arm64 roots have openssh-server (for deploying into them over SSH). edgeq-device itself
# is not in the root: the tests install the wheel of the current source.
#
# Built on the host without emulating package scripts or pip (about a minute each): debootstrap
# --foreign downloads the packages, every one is unpacked with dpkg-deb, the few things their
# maintainer scripts would do are done here (users, ld.so.cache), and the aarch64 wheels are
# installed by the host's pip (--platform/--target) into venvs laid out by hand. The root is
# cached as a folder (~/.cache/edgeq/, or $EDGEQ_CACHE) whose name carries a hash of the recipe:
# a changed recipe builds a new one (the old is removed).
# pip inside the root works as on the host: the host's CA bundle, /etc/pip.conf,
# ~/.config/pip/pip.conf and PIP_* / proxy variables are passed in, and local folders
# the pip configuration names (find-links, file:// indexes) are bind-mounted read-only.
set -euo pipefail

PI_OS=${EDGEQ_PI_OS:-bookworm}
CACHE=${EDGEQ_CACHE:-$HOME/.cache/edgeq}
MIRROR=${EDGEQ_DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_PY=${HOST_PY:-python3}

say() { echo "arm64_rootfs[$PI_OS]: $*" >&2; }

# --- the recipe: everything below until "end of recipe" is hashed into the root folder's name ----
COMMON_WHEELS="pillow==13.0.0 flatbuffers==25.12.19 click==8.5.1 pip==26.3"
case "$PI_OS" in
  bookworm)
    ARCH=arm64 SUITE=bookworm PYV=3.11 GLIBC_MINOR=36 QEMU=aarch64
    INCLUDE=python3,python3-venv,ca-certificates,openssh-server,tar,procps
    VENV_LITERT="numpy==2.4.6 ai-edge-litert==2.3.0 $COMMON_WHEELS"
    VENV_TFLITE="numpy==1.26.4 tflite-runtime==2.14.0 $COMMON_WHEELS" ;;
  trixie)
    ARCH=arm64 SUITE=trixie PYV=3.13 GLIBC_MINOR=41 QEMU=aarch64
    INCLUDE=python3,python3-venv,ca-certificates,openssh-server,tar,procps
    VENV_LITERT="numpy==2.4.6 ai-edge-litert==2.3.0 $COMMON_WHEELS"
    VENV_TFLITE="" ;;
  bookworm-armhf)
    ARCH=armhf SUITE=bookworm PYV=3.11 GLIBC_MINOR=36 QEMU=arm
    INCLUDE=python3,python3-numpy,python3-pil,python3-click,python3-flatbuffers,procps
    VENV_LITERT="" VENV_TFLITE="" ;;
  *) echo "arm64_rootfs: EDGEQ_PI_OS must be bookworm, trixie or bookworm-armhf (got $PI_OS)" >&2; exit 2 ;;
esac
if [ "$QEMU" = aarch64 ]; then export QEMU_CPU=${QEMU_CPU:-cortex-a72}; else export QEMU_CPU=${QEMU_CPU:-max}; fi

# Unpack every package debootstrap --foreign downloaded, then do by hand what their maintainer
# scripts would have done that matters here.
unpack_root() {  # unpack_root DIR
  local r=$1 p
  debootstrap --foreign --arch="$ARCH" --variant=minbase --include="$INCLUDE" "$SUITE" "$r" "$MIRROR" \
    > "$r.debootstrap.log" 2>&1 || { tail -20 "$r.debootstrap.log" >&2; return 1; }
  while read -r _ p; do
    dpkg-deb --fsys-tarfile "$r$p" | tar -C "$r" --keep-directory-symlink -xf -
  done < "$r/debootstrap/debpaths"
  rm -rf "$r/debootstrap" "$r/var/cache/apt/archives/"*.deb "$r/proc"
  mkdir -p "$r/proc" "$r/run/sshd" "$r/root"
  # base-passwd's and openssh-server's postinst: the users and groups (root: key-only login)
  cp "$r/usr/share/base-passwd/passwd.master" "$r/etc/passwd"
  cp "$r/usr/share/base-passwd/group.master" "$r/etc/group"
  echo 'sshd:x:100:65534::/run/sshd:/usr/sbin/nologin' >> "$r/etc/passwd"
  awk -F: '{print $1 ":*:19000:0:99999:7:::"}' "$r/etc/passwd" > "$r/etc/shadow"
  chmod 640 "$r/etc/shadow"
  echo raspberrypi > "$r/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n' > "$r/etc/hosts"
  # update-alternatives in libblas3's and liblapack3's postinst (numpy's BLAS on the armhf root)
  for p in "$r"/usr/lib/*/blas/lib*.so.* "$r"/usr/lib/*/lapack/lib*.so.*; do
    [ -e "$p" ] && [ ! -e "$(dirname "$(dirname "$p")")/$(basename "$p")" ] \
      && ln -s "$(basename "$(dirname "$p")")/$(basename "$p")" "$(dirname "$(dirname "$p")")/$(basename "$p")"
  done
  # libc's trigger: the loader's cache (one emulated ldconfig, well under a second)
  chroot "$r" /sbin/ldconfig
}

# A venv laid out by hand (what `python -m venv --without-pip` makes) filled by the host's pip
# with the wheels for the Pi's CPU and Python.
make_venv() {  # make_venv ROOT /opt/edgeq/NAME PACKAGES...
  local r=$1 venv=$2; shift 2
  local d=$r$venv y plat=(--platform "manylinux2014_$QEMU")
  for ((y=17; y<=GLIBC_MINOR; y++)); do plat+=(--platform "manylinux_2_${y}_aarch64"); done
  mkdir -p "$d/bin" "$d/lib/python$PYV/site-packages"
  ln -s lib "$d/lib64"
  ln -s "/usr/bin/python$PYV" "$d/bin/python"
  ln -s python "$d/bin/python3"
  ln -s python "$d/bin/python$PYV"
  printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = %s\nexecutable = /usr/bin/python%s\n' \
    "$(chroot "$r" "/usr/bin/python$PYV" -c 'import platform; print(platform.python_version())')" "$PYV" \
    > "$d/pyvenv.cfg"
  "$HOST_PY" -m pip install -q --disable-pip-version-check --no-compile --only-binary=:all: "${plat[@]}" \
    --python-version "$PYV" --implementation cp --abi "cp${PYV/./}" --target "$d/lib/python$PYV/site-packages" \
    "$@" 2>&1 | grep -v -e "dependency resolver does not currently" -e "requires numpy>=2" -e "is ignored: it is neither" \
    >&2 || true
  "$HOST_PY" - "$d/lib/python$PYV/site-packages" "$@" <<'EOF'
import importlib.metadata as md, re, sys
site, wanted = sys.argv[1], sys.argv[2:]
have = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in md.distributions(path=[site])}
for req in wanted:
    name, version = req.split("==")
    if have.get(re.sub(r"[-_.]+", "-", name).lower()) != version:
        sys.exit(f"{name}=={version} did not install into {site}")
EOF
  rm -rf "$d/lib/python$PYV/site-packages/bin"   # console scripts with the host's python in them
}

build_root() {  # build_root DIR
  local r=$1
  unpack_root "$r"
  [ -z "$VENV_LITERT" ] || make_venv "$r" /opt/edgeq/litert $VENV_LITERT
  [ -z "$VENV_TFLITE" ] || make_venv "$r" /opt/edgeq/tflite-runtime $VENV_TFLITE
  # what python3's postinst (py3compile) would do, and the venvs too: each emulated start of
  # Python would otherwise compile numpy and the standard library again. The host's Python of
  # the same version does it natively when there is one (a bookworm host has 3.11).
  local d dirs=() skip='/(tests?|idlelib|tkinter|lib2to3)/' host
  for d in "/usr/lib/python$PYV" /usr/lib/python3/dist-packages /opt/edgeq; do [ -d "$r$d" ] && dirs+=("$d"); done
  host=$(command -v "python$PYV" || true)
  if [ -n "$host" ] && [ "$("$host" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$PYV" ]; then
    "$host" -m compileall -q -j0 -x "$skip" -s "$r" -p / "${dirs[@]/#/$r}" >/dev/null 2>&1 || true
  else
    chroot "$r" "/usr/bin/python$PYV" -m compileall -q -j0 -x "$skip" "${dirs[@]}" >/dev/null 2>&1 || true
  fi
}
# --- end of recipe --------------------------------------------------------------------------------

recipe_key() {
  { declare -f unpack_root make_venv build_root
    echo "$ARCH $SUITE $PYV $GLIBC_MINOR $INCLUDE | $VENV_LITERT | $VENV_TFLITE"; } | sha256sum | cut -c1-12
}
KEY=$(recipe_key)
ROOT=$CACHE/pi-$PI_OS-rootfs-$KEY
READY=$ROOT/.edgeq-rootfs-ready

qemu_major() {
  local q
  q=$(command -v "qemu-$QEMU-static" || command -v "qemu-$QEMU" || true)
  [ -n "$q" ] || { echo 0; return; }
  "$q" --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1
}

binfmt_ok() {  # binfmt_ok NAME
  [ -r "/proc/sys/fs/binfmt_misc/qemu-$1" ] && grep -q enabled "/proc/sys/fs/binfmt_misc/qemu-$1"
}

native() { [ "$(uname -m)" = aarch64 ] && [ "$QEMU" = aarch64 ]; }

# Print why this host cannot run the rootfs, or nothing.
reason() {
  if [ "$(id -u)" != 0 ]; then echo "needs root (chroot, mounts)"; return; fi
  native && return
  local m; m=$(qemu_major)
  if [ "${m:-0}" -lt 10 ]; then echo "needs qemu-user >= 10 (found ${m:-none}); run: $0 host-setup"; return; fi
  if ! binfmt_ok "$QEMU"; then echo "binfmt_misc has no enabled qemu-$QEMU entry; run: $0 host-setup"; return; fi
}

cmd_check() { local r; r=$(reason); if [ -n "$r" ]; then echo "$r"; exit 3; fi; echo ok; }

cmd_host_setup() {
  [ "$(id -u)" = 0 ] || { say "host-setup needs root"; exit 3; }
  export DEBIAN_FRONTEND=noninteractive
  local need=()
  command -v debootstrap >/dev/null || need+=(debootstrap)
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
  if [ "$(uname -m)" != aarch64 ]; then
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    local name conf
    for name in aarch64 arm; do   # the 64-bit and the 32-bit Pi OS
      binfmt_ok "$name" && continue
      [ -e "/proc/sys/fs/binfmt_misc/qemu-$name" ] && echo -1 > "/proc/sys/fs/binfmt_misc/qemu-$name"
      conf=/usr/lib/binfmt.d/qemu-$name.conf
      [ -r "$conf" ] || conf=/usr/lib/binfmt.d/qemu-$name-static.conf
      if [ -r "$conf" ]; then
        grep -v '^#' "$conf" | head -1 > /proc/sys/fs/binfmt_misc/register
      else
        update-binfmts --enable "qemu-$name"
      fi
    done
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
  while IFS= read -r v; do envs+=("$v"); done < <(env | grep -E '^(PIP_[A-Z_]+|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY|SSL_CERT_FILE|REQUESTS_CA_BUNDLE|OPENBLAS_NUM_THREADS|EDGEQ_[A-Z_]+)=' || true)
  env -i "${envs[@]}" chroot "$r" "$@"
}

with_lock() {  # one build or unpack of an OS at a time, across processes
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.pi-$PI_OS.lock"
  flock 9
}

cmd_build() {
  with_lock
  if [ -f "$READY" ]; then echo "$ROOT"; return; fi
  local r; r=$(reason); [ -z "$r" ] || { say "cannot build: $r"; exit 3; }
  command -v debootstrap >/dev/null || { say "debootstrap missing; run: $0 host-setup"; exit 3; }
  local work; work=$(mktemp -d "$CACHE/.build.XXXXXX")
  trap 'rm -rf "'"$work"'"' EXIT
  local t0=$SECONDS old
  say "building $SUITE $ARCH (Python $PYV) on the host"
  build_root "$work/root"
  touch "$work/root/.edgeq-rootfs-ready"
  rm -rf "$ROOT"; mv "$work/root" "$ROOT"
  for old in "$CACHE/pi-$PI_OS-rootfs-"*; do   # older recipes, unless in use
    [ "$old" = "$ROOT" ] || grep -qs " $old/" /proc/mounts || rm -rf "$old"
  done
  say "built in $((SECONDS - t0)) s: $ROOT ($(du -sh "$ROOT" | cut -f1))"
  echo "$ROOT"
}

cmd_run() {
  local r; r=$(reason); [ -z "$r" ] || { say "cannot run: $r"; exit 3; }
  (cmd_build >/dev/null)   # builds only when the recipe changed
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
  build|extract) cmd_build ;;
  run) shift; cmd_run "$@" ;;
  cached) [ -f "$READY" ] ;;
  path) echo "$ROOT" ;;
  *) sed -n '2,32p' "$0" >&2; exit 2 ;;
esac

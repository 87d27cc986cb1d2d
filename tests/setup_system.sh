#!/usr/bin/env bash
# System packages the test suite needs: the loopback sshd for deploy tests, headless
# Chromium to render the HTML report, the Arm cross compiler for the C export, PostgreSQL
# (initdb/pg_ctl) for the results store on a server, and qemu for the emulated Raspberry Pis.
# Installs only what is missing; needs root (CI and the dev machines are root).
set -u
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# The C export's array is compiled for a Cortex-M by the mcu tests.
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need+=(gcc-arm-none-eabi)
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing ${need[*]}: the tests that need them will skip (fail under CI=true)" >&2
  fi
fi
# The emulated Raspberry Pis (tests/arm64): qemu-user >= 10 (bookworm-backports on a bookworm
# host), debootstrap, and qemu's binfmt entries (they do not survive a reboot). The roots
# themselves are built by the tests when missing.
root_script="$(dirname "$0")/../scripts/arm64_rootfs.sh"
if [ "$(id -u)" = 0 ]; then
  bash "$root_script" host-setup >/dev/null || echo "the emulated Raspberry Pi cannot run here: $(bash "$root_script" check)" >&2
else
  echo "not root: the emulated Raspberry Pi tests will skip (fail under CI=true)" >&2
fi
exit 0

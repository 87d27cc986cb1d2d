#!/usr/bin/env bash
# System packages the test suite needs: the loopback sshd for deploy tests,
# headless Chromium to render the HTML report, the Arm cross compiler for the C export,
# and PostgreSQL (initdb/pg_ctl) for the results store on a server.
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
    echo "missing ${need[*]}: the tests that need them will skip" >&2
  fi
fi
# The emulated Raspberry Pi (tests/arm64) runs in the default suite when its root is cached:
# make sure qemu's binfmt entry is registered again (it does not survive a reboot).
root_script="$(dirname "$0")/../scripts/arm64_rootfs.sh"
if [ -f "$root_script" ] && bash "$root_script" cached 2>/dev/null; then
  bash "$root_script" check >/dev/null 2>&1 || bash "$root_script" host-setup >/dev/null 2>&1 || true
fi
exit 0

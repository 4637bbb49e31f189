#!/usr/bin/env bash
# Installs what the test suite needs beyond Go and the control plane: Debian's chromium, for the
# dashboard's end-to-end test in a real headless browser (driven from Go by chromedp), and
# libmbedtls-dev with a C compiler, for the device protocol's mbedtls C sketch (compiled and checked
# against the key agreement test vectors) and the TLS port's mbedtls client (tools/mbedtls-client,
# linked against its static libraries); those tests skip without them. Idempotent: installs only what
# is missing. Needs root (or sudo) and Debian's package archive.
set -euo pipefail
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
MBEDTLS_HEADER=${MBEDTLS_HEADER:-/usr/include/mbedtls/hkdf.h}
packages=()
if [ ! -x "$CHROMIUM" ]; then
  packages+=(chromium)
fi
if [ ! -f "$MBEDTLS_HEADER" ]; then
  packages+=(libmbedtls-dev)
fi
if ! command -v cc >/dev/null 2>&1; then
  packages+=(gcc libc6-dev)
fi
if [ ${#packages[@]} = 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  if [ ! -x "$CHROMIUM" ]; then
    echo "install-test-deps: $CHROMIUM is missing and there is no apt-get: install Chromium by hand (the dashboard's browser test needs it)" >&2
    exit 1
  fi
  echo "install-test-deps: mbedtls is missing and there is no apt-get: the mbedtls C sketch's test will skip" >&2
  exit 0
fi
SUDO=
if [ "$(id -u)" != 0 ]; then
  SUDO=sudo
fi
echo "install-test-deps: installing Debian's ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
if [ -x "$CHROMIUM" ]; then
  "$CHROMIUM" --version
fi

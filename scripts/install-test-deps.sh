#!/usr/bin/env bash
# Installs what the test suite needs beyond Go and the control plane: Debian's chromium, for the
# dashboard's end-to-end test in a real headless browser (driven from Go by chromedp). Idempotent:
# does nothing when /usr/bin/chromium exists. Needs root (or sudo) and Debian's package archive.
set -euo pipefail
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: $CHROMIUM is missing and there is no apt-get: install Chromium by hand (the dashboard's browser test needs it)" >&2
  exit 1
fi
SUDO=
if [ "$(id -u)" != 0 ]; then
  SUDO=sudo
fi
echo "install-test-deps: installing Debian's chromium (for the dashboard's browser test)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
"$CHROMIUM" --version

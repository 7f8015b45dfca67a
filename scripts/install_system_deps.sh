#!/usr/bin/env bash
# Installs the Debian and npm packages that datasets and browser tests need.
# Idempotent: does nothing when everything is present. Without root, prints the apt command.
set -euo pipefail

APT_PACKAGES=(fonts-noto-color-emoji unicode-cldr-core libfribidi0 kanjidic-xml libcairo2 espeak-ng fluidsynth fluid-soundfont-gm)
APT_PACKAGES+=(sword-text-kjv sword-text-web sword-text-sparv)  # bible-en-es
APT_PACKAGES+=(chromium)  # headless browser tests of the HTML reports (playwright, never `playwright install`)
APT_PACKAGES+=(wrk)  # the server's load generator in `make bench` (benchmarks/server_load.py)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

NPM_PREFIX="${MODALIGN_NPM_PREFIX:-$HOME/.cache/modalign/npm}"
# name@version: the recipes read these packages' file layouts, so the versions are pinned
NPM_PACKAGES=(openmoji@17.0.0 @lobehub/fluent-emoji-3d@1.1.0 emoji-datasource-google@16.0.0)
NPM_PACKAGES+=(@mdi/svg @tabler/icons lucide-static)  # icons
npm_missing=()
for spec in "${NPM_PACKAGES[@]}"; do
  name="${spec%@*}"; [[ -z "$name" ]] && name="$spec"  # strip "@version" (scoped names start with @)
  [[ -d "$NPM_PREFIX/node_modules/$name" ]] || npm_missing+=("$spec")
done
if ((${#npm_missing[@]})); then
  if command -v npm >/dev/null; then
    echo "installing npm packages into $NPM_PREFIX: ${npm_missing[*]}"
    mkdir -p "$NPM_PREFIX"
    npm install --prefix "$NPM_PREFIX" --no-audit --no-fund --silent "${npm_missing[@]}"
  else
    echo "npm is missing; the emoji dataset will use only the Noto style" >&2
  fi
fi

#!/usr/bin/env bash
# Builds web/pkg: the deper-web crate for wasm32-unknown-unknown (profile `wasm`: release at
# opt-level "s", no LTO), then `wasm-bindgen --target web`. No wasm-opt: Debian's binaryen
# produces modules Chromium rejects (see FACTS). The wasm-bindgen CLI must be the version of the
# `wasm-bindgen` crate in Cargo.lock, or the generated glue does not fit the module.
#
#   bash web/build.sh            (honours CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."

want=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
if [ -z "$want" ]; then
  echo "web/build.sh: no wasm-bindgen crate in Cargo.lock" >&2
  exit 1
fi
if ! command -v wasm-bindgen >/dev/null 2>&1; then
  echo "web/build.sh: wasm-bindgen not found; install it with: cargo install wasm-bindgen-cli --version $want" >&2
  exit 1
fi
have=$(wasm-bindgen --version | awk '{ print $2 }')
if [ "$have" != "$want" ]; then
  echo "web/build.sh: wasm-bindgen is $have but Cargo.lock has wasm-bindgen $want;" \
    "install the matching CLI: cargo install wasm-bindgen-cli --version $want --force" >&2
  exit 1
fi

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
start=$(date +%s)
cargo build -p deper-web --target wasm32-unknown-unknown --profile wasm --locked
rm -rf web/pkg
wasm-bindgen --target web --no-typescript --out-dir web/pkg "$target_dir/wasm32-unknown-unknown/wasm/deper_web.wasm"
echo "web/build.sh: web/pkg built in $(( $(date +%s) - start )) s:" \
  "$(du -h web/pkg/deper_web_bg.wasm | cut -f1) deper_web_bg.wasm"

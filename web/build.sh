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
# A fresh machine lacks the wasm32 target and the CLI: install them (both come from the registries
# the project may reach). A CLI of another version is replaced only when asked to
# (DEPER_INSTALL_WASM_BINDGEN=1, as CI does), since it may serve another project.
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if ! command -v wasm-bindgen >/dev/null 2>&1; then
  echo "web/build.sh: installing wasm-bindgen-cli $want (once, a few minutes)" >&2
  cargo install wasm-bindgen-cli --version "$want"
fi
have=$(wasm-bindgen --version | awk '{ print $2 }')
if [ "$have" != "$want" ]; then
  if [ "${DEPER_INSTALL_WASM_BINDGEN:-0}" = 1 ]; then
    cargo install wasm-bindgen-cli --version "$want" --force
  else
    echo "web/build.sh: wasm-bindgen is $have but Cargo.lock has wasm-bindgen $want;" \
      "install the matching CLI: cargo install wasm-bindgen-cli --version $want --force" \
      "(or run with DEPER_INSTALL_WASM_BINDGEN=1)" >&2
    exit 1
  fi
fi

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
start=$(date +%s)
cargo build -p deper-web --target wasm32-unknown-unknown --profile wasm --locked
rm -rf web/pkg
wasm-bindgen --target web --no-typescript --out-dir web/pkg "$target_dir/wasm32-unknown-unknown/wasm/deper_web.wasm"
echo "web/build.sh: web/pkg built in $(( $(date +%s) - start )) s:" \
  "$(du -h web/pkg/deper_web_bg.wasm | cut -f1) deper_web_bg.wasm"

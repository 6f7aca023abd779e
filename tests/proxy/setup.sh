#!/usr/bin/env bash
# The LiteLLM proxy for tests/test_litellm_proxy.py, in a venv of its own (it
# is a separate service with its own pins, not a dependency of gpo), created
# once and kept in a cache folder keyed by version:
#   ${XDG_CACHE_HOME:-~/.cache}/gpo/litellm-proxy-<version>/
# from tests/proxy/requirements.txt (litellm[proxy] and every dependency
# pinned as verified). About a minute the first time; nothing when cached.
#
#   bash tests/proxy/setup.sh           install when missing (prints nothing when cached)
#   bash tests/proxy/setup.sh --check   print LITELLM_BIN=<path>; exit 1 when not installed
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

LITELLM_VERSION=1.100.0
REQUIREMENTS=$HERE/requirements.txt
CACHE=${GPO_PROXY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpo}
VENV=$CACHE/litellm-proxy-$LITELLM_VERSION
LITELLM_BIN=$VENV/bin/litellm
# The marker holds the requirements' hash, written last: an interrupted
# install, or one from other pins, is redone rather than reused.
WANT=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
installed() { [ -x "$LITELLM_BIN" ] && [ "$(cat "$VENV/.gpo-installed" 2>/dev/null)" = "$WANT" ]; }

grep -qx "litellm==$LITELLM_VERSION" "$REQUIREMENTS" \
  || { echo "proxy setup: $REQUIREMENTS does not pin litellm==$LITELLM_VERSION" >&2; exit 1; }

if [ "${1:-}" = "--check" ]; then
  echo "LITELLM_BIN=$LITELLM_BIN"
  installed
  exit
fi

if installed; then
  exit 0
fi
echo "proxy setup: litellm[proxy]==$LITELLM_VERSION into $VENV (about a minute, once)"
start=$SECONDS
rm -rf "$VENV"
mkdir -p "$CACHE"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS" >"$CACHE/litellm-proxy-$LITELLM_VERSION.log" 2>&1 \
  || { tail -n 40 "$CACHE/litellm-proxy-$LITELLM_VERSION.log" >&2; echo "proxy setup: pip install failed" >&2; exit 1; }
# The proxy must start: import what `litellm --config` imports.
LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/python" -c "import litellm.proxy.proxy_server" \
  || { echo "proxy setup: litellm.proxy.proxy_server does not import in $VENV" >&2; exit 1; }
echo "$WANT" >"$VENV/.gpo-installed"
echo "proxy setup: installed in $((SECONDS - start)) s"

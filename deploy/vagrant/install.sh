#!/usr/bin/env bash
# Install vxlab and what its units need on a Debian 12 host (run as root):
#   install.sh SRC [WHEELS]
# SRC: a checkout of vxlab; it is copied to /opt/vxlab/src (the deploy files, the docs the
#   units point at) unless it is that directory already.
# WHEELS: a directory made by `pip wheel --wheel-dir WHEELS SRC` where a package registry
#   is reachable (with Debian 12's Python 3.11): vxlab and its dependencies are installed
#   from it alone (`pip install --no-index`). Without it pip fetches them.
# Debian packages: only those missing are installed (apt-get, needs a mirror), so a host
# or image that has them all needs none. Offline: both. It also runs in the chroot of an
# image build (mmdebstrap; lab/vmimage.py does it, deploy/README.md "Offline").
# Called by provision.sh; running it again reinstalls.
set -euo pipefail
src="$(realpath "$1")" wheels="${2:-}"
opt=/opt/vxlab
PACKAGES=(python3-venv python3-nftables iproute2 iputils-ping nftables util-linux etcd-server etcd-client tcpdump procps)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Debian's etcd-server must not start its own single-member daemon.
  policy=/usr/sbin/policy-rc.d ours=""
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && ours=1; fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [[ -z $ours ]] || rm -f "$policy"
fi
systemctl disable etcd.service 2>/dev/null || true  # ours are vxlab-etcd@NAME
systemctl stop etcd.service 2>/dev/null || true

mkdir -p "$opt"
if [[ "$src" != "$opt/src" ]]; then
  rm -rf "$opt/src" && cp -r "$src" "$opt/src" && rm -rf "$opt/src/.venv" "$opt/src/.git"
fi
[[ -x "$opt/bin/python" ]] || python3 -m venv "$opt"
if [[ -n "$wheels" ]]; then
  "$opt/bin/pip" install -q --no-index --find-links "$wheels" vxlab
  "$opt/bin/pip" install -q --no-index --find-links "$wheels" --force-reinstall --no-deps vxlab  # this very build
else
  "$opt/bin/pip" install -q "$opt/src"
fi
# libnftables in-process for the agent: Debian's pure-Python module alone, not the whole
# system site (DEVELOPERS.md); without it the agent runs the nft command.
site="$("$opt/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
[[ ! -d /usr/lib/python3/dist-packages/nftables ]] || ln -sfn /usr/lib/python3/dist-packages/nftables "$site/nftables"
ln -sf "$opt/bin/vxlab" /usr/local/bin/vxlab
echo "install: vxlab $("$opt/bin/python" -c 'import importlib.metadata as m; print(m.version("vxlab"))') in $opt"

#!/usr/bin/env bash
# Provision one VM of the vxlab multi-VM lab (run as root by Vagrant or cloud-init):
#   provision.sh SRC NAME [controller]
# SRC: a checkout of vxlab; NAME: vm1, vm2 or vm3 (its etcd member, its host name);
# "controller": also run a controller replica here.
# Idempotent: running it again reinstalls and restarts.
set -euo pipefail
src="$1" name="$2" role="${3:-}"
[[ "$name" =~ ^vm[123]$ ]] || { echo "provision: NAME must be vm1, vm2 or vm3, not '$name'" >&2; exit 2; }

export DEBIAN_FRONTEND=noninteractive
# Debian's etcd-server must not start its own single-member daemon.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3-venv python3-pip iproute2 iputils-ping nftables \
  util-linux etcd-server etcd-client tcpdump >/dev/null
rm -f /usr/sbin/policy-rc.d
systemctl disable --now etcd.service 2>/dev/null || true

# vxlab in its own virtualenv; the source kept next to it for the docs the units point at.
rm -rf /opt/vxlab/src && mkdir -p /opt/vxlab && cp -r "$src" /opt/vxlab/src && rm -rf /opt/vxlab/src/.venv
[[ -x /opt/vxlab/bin/python ]] || python3 -m venv /opt/vxlab
/opt/vxlab/bin/pip install -q /opt/vxlab/src
ln -sf /opt/vxlab/bin/vxlab /usr/local/bin/vxlab

deploy=/opt/vxlab/src/deploy
install -d -m 0755 /etc/vxlab /etc/vxlab/etcd
install -m 0644 "$deploy/etcd/$name.env" /etc/vxlab/etcd/
install -m 0644 "$deploy/config/controller.toml" /etc/vxlab/controller.toml
sed "s/^host = \".*\"/host = \"$name\"/" "$deploy/config/agent.toml" > /etc/vxlab/agent.toml
install -m 0644 "$deploy"/systemd/*.service /etc/systemd/system/
systemctl daemon-reload

# --no-block: a member is "started" only once the cluster has a quorum, i.e. after the
# next VM's provisioning; the controller is ordered after it, the agent retries alone.
units=("vxlab-etcd@$name.service" vxlab-agent.service)
[[ "$role" == controller ]] && units+=(vxlab-controller.service)
systemctl enable "${units[@]}"
systemctl restart --no-block "${units[@]}"
echo "provision: $name ready (etcd member${role:+, controller}, agent)"

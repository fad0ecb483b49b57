#!/usr/bin/env bash
# Provision one VM of the vxlab multi-VM lab (run as root by Vagrant or cloud-init):
#   provision.sh SRC NAME [controller]
# SRC: a checkout of vxlab; NAME: vm1, vm2 or vm3 (its etcd member, its host name);
# "controller": also run a controller replica here.
# vxlab is installed from SRC (install.sh: `VXLAB_WHEELS=DIR` for an offline install from
# wheels), unless SRC is /opt/vxlab/src with vxlab installed from it: an image made with
# install.sh (deploy/README.md, "Offline"), where nothing is fetched.
# Certificates: this VM's are copied from SRC/deploy/pki when it exists (Vagrant: `vxlab pki
# init deploy/pki …` before `vagrant up`), else they must be in /etc/vxlab/pki already
# (cloud-init: deploy/cloud-init/user-data.py writes them there).
# Idempotent: running it again reinstalls (unless preinstalled) and restarts.
set -euo pipefail
src="$(realpath "$1")" name="$2" role="${3:-}"
[[ "$name" =~ ^vm[123]$ ]] || { echo "provision: NAME must be vm1, vm2 or vm3, not '$name'" >&2; exit 2; }
[[ -z "$role" || "$role" == controller ]] || { echo "provision: the role must be 'controller' or nothing, not '$role'" >&2; exit 2; }
here="$src/deploy/vagrant"

if [[ "$src" == /opt/vxlab/src && -x /opt/vxlab/bin/vxlab ]]; then
  echo "provision: vxlab is installed in /opt/vxlab (from $src), nothing to fetch"
else
  "$here/install.sh" "$src" "${VXLAB_WHEELS:-}"
fi

# The certificates this VM needs, as paths in a `vxlab pki init` directory (never a CA key).
pki_files() {  # pki_files NAME [controller]
  echo ca.crt etcd/ca.crt etcd/server.crt etcd/server.key "hosts/$1.crt" "hosts/$1.key"
  [[ "${2:-}" != controller ]] || echo controller.crt controller.key etcd/client.crt etcd/client.key admin.crt admin.key
}
pki=/etc/vxlab/pki
if [[ -d "$src/deploy/pki" ]]; then
  for f in $(pki_files "$name" "$role"); do
    mode=0644; [[ "$f" != *.key ]] || mode=0600
    install -D -m "$mode" "$src/deploy/pki/$f" "$pki/$f"
  done
fi
for f in $(pki_files "$name" "$role"); do
  [[ -s "$pki/$f" ]] || { echo "provision: $pki/$f is missing (make the certificates first: deploy/README.md step 0)" >&2; exit 2; }
done

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

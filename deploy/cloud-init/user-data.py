#!/usr/bin/env python3
"""Print the cloud-init user-data of one VM: vxlab-vm.yaml (next to this file) with
VXLAB_NAME and VXLAB_ROLE set, and the VM's certificates from a `vxlab pki init`
directory written to /etc/vxlab/pki (the list deploy/vagrant/provision.sh copies for
Vagrant; never a CA key).

  deploy/cloud-init/user-data.py --pki PKI vm1 --controller > vm1.user-data

Standard library only (run it with any python3): the file is edited as text, the PEM
files go in as YAML block scalars right after `write_files:`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROVISION = HERE.parent / "vagrant" / "provision.sh"


def pki_files(name: str, controller: bool) -> list[str]:
    """The files of a PKI directory this VM needs: provision.sh's own `pki_files`."""
    body = re.search(r"^pki_files\(\) \{.*?^\}", PROVISION.read_text(), re.MULTILINE | re.DOTALL)
    assert body, f"{PROVISION} defines no pki_files"
    out = subprocess.run(["bash", "-c", f'{body.group(0)}\npki_files "$@"', "_", name,
                          *(["controller"] if controller else [])], capture_output=True, text=True, check=True)
    return out.stdout.split()


def user_data(base: str, *, name: str, controller: bool, pki: Path) -> str:
    text = re.sub(r"(?m)^(\s*)VXLAB_NAME=.*$", rf"\g<1>VXLAB_NAME={name}", base)
    text = re.sub(r"(?m)^(\s*)VXLAB_ROLE=.*$", rf"\g<1>VXLAB_ROLE={'controller' if controller else ''}", text)
    entries = []
    for rel in pki_files(name, controller):
        pem = (pki / rel).read_text()
        mode = "0600" if rel.endswith(".key") else "0644"
        body = "".join(f"      {line}\n" for line in pem.strip().splitlines())
        entries.append(f"  - path: /etc/vxlab/pki/{rel}\n    permissions: \"{mode}\"\n    content: |\n{body}")
    head, found, rest = text.partition("\nwrite_files:\n")
    if not found:
        raise SystemExit("error: vxlab-vm.yaml has no top-level write_files:")
    return head + found + "".join(entries) + rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="vm1, vm2 or vm3")
    parser.add_argument("--controller", action="store_true", help="this VM runs a controller replica too")
    parser.add_argument("--pki", type=Path, required=True, help="a directory made by `vxlab pki init`")
    parser.add_argument("--base", type=Path, default=HERE / "vxlab-vm.yaml", help="the cloud-config to start from")
    args = parser.parse_args()
    if not re.fullmatch(r"vm[123]", args.name):
        parser.error(f"name: must be vm1, vm2 or vm3, not {args.name!r}")
    try:
        sys.stdout.write(user_data(args.base.read_text(), name=args.name, controller=args.controller, pki=args.pki))
    except OSError as e:
        raise SystemExit(f"error: {e.filename}: {e.strerror}") from None


if __name__ == "__main__":
    main()

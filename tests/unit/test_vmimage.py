"""lab/vmimage.py without building anything: what goes into an image and its cache key."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from vxlab.lab import vmimage

ROOT = Path(__file__).resolve().parents[2]


def test_the_image_has_every_package_install_sh_would_fetch() -> None:
    """install.sh finds them all in the image and runs no apt-get: the offline path."""
    wanted = vmimage.install_packages(ROOT)
    assert {"etcd-server", "etcd-client", "python3-venv", "python3-nftables", "nftables", "iproute2"} <= set(wanted)
    assert "cloud-init" in vmimage.BOOT_PACKAGES and "linux-image-amd64" in vmimage.BOOT_PACKAGES


def test_no_packages_line_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "deploy" / "vagrant").mkdir(parents=True)
    (tmp_path / "deploy" / "vagrant" / "install.sh").write_text("#!/bin/sh\n")
    with pytest.raises(vmimage.ImageError, match="no PACKAGES"):
        vmimage.install_packages(tmp_path)


def test_hooks_run_install_sh_offline_and_leave_no_wheels() -> None:
    hooks = vmimage.hooks("$1")
    assert hooks[0] == 'chroot "$1" /opt/vxlab/src/deploy/vagrant/install.sh /opt/vxlab/src /opt/wheels'
    assert any("locale-gen" in h for h in hooks) and any("serial-getty@hvc0" in h and "mask" in h for h in hooks)
    assert hooks[-1] == 'rm -rf "$1/opt/wheels"'


def test_only_deploy_files_are_baked() -> None:
    baked = vmimage.baked_files(ROOT)
    assert "deploy/vagrant/provision.sh" in baked and "deploy/cloud-init/vxlab-vm.yaml" in baked
    assert all(f.startswith(vmimage.BAKED) for f in baked) and not any(f.startswith("tests/") for f in baked)


def _wheel(path: Path, files: dict[str, bytes], date: tuple[int, ...]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, date_time=date), data)  # type: ignore[arg-type]


def test_wheels_digest_sees_content_not_zip_timestamps(tmp_path: Path) -> None:
    for d, date in (("a", (2020, 1, 1, 0, 0, 0)), ("b", (2024, 5, 6, 7, 8, 10))):
        (tmp_path / d).mkdir()
        _wheel(tmp_path / d / "x-1-py3-none-any.whl", {"x/__init__.py": b"v = 1\n", "x-1.dist-info/RECORD": b"r"}, date)
    assert vmimage.wheels_digest(tmp_path / "a") == vmimage.wheels_digest(tmp_path / "b")
    _wheel(tmp_path / "b" / "x-1-py3-none-any.whl", {"x/__init__.py": b"v = 2\n", "x-1.dist-info/RECORD": b"r"},
           (2024, 5, 6, 7, 8, 10))
    assert vmimage.wheels_digest(tmp_path / "a") != vmimage.wheels_digest(tmp_path / "b")


def test_wheels_are_built_by_the_guests_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vmimage, "GUEST_PYTHON", (3, 99))
    with pytest.raises(vmimage.ImageError, match=r"Python 3\.99 \(Debian 12's\), not " + sys.version.split()[0]):
        vmimage.build_wheels(tmp_path, tmp_path / "w", log=tmp_path / "log")


def test_the_build_environment_has_no_pip_or_python_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PYTHONPATH", "/x")
    env = vmimage._clean_env()
    assert "PIP_FIND_LINKS" not in env and "PYTHONPATH" not in env and "PATH" in env

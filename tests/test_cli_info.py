"""`portanet info`: version, every backend with version/devices/usability, the active backend."""

from __future__ import annotations

import subprocess
import sys

import portanet as pn
from portanet import cli
from portanet.backends import ADAPTERS


def test_info_lists_every_backend(capsys, monkeypatch):
    monkeypatch.setenv("PORTANET_BACKEND", "numpy")
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"portanet {pn.__version__}")
    for name, adapter in ADAPTERS.items():
        line = next(li for li in out.splitlines() if li.strip().startswith(name + " "))
        if not adapter.is_installed():
            assert "not installed" in line and "pip install" in line
        elif adapter.devices():
            assert "usable" in line and adapter.version() in line
            assert all(d in line for d in adapter.device_names())
        else:
            assert "no usable device" in line
    assert "active backend: Backend(name='numpy', device='cpu')" in out


def test_console_script_runs():
    done = subprocess.run([sys.executable, "-m", "portanet.cli", "info"], capture_output=True,
                          text=True, check=True)
    assert "array_api_strict" in done.stdout and "CPU_DEVICE, device1" in done.stdout


def test_version_flag(capsys):
    try:
        cli.main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert pn.__version__ in capsys.readouterr().out

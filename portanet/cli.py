"""The ``portanet`` command: ``info`` (backends, devices, versions) and the jobs built on it."""

from __future__ import annotations

import argparse
import platform
import sys

from . import __version__, bench, parity
from .backend import BACKEND_NAMES, get_backend
from .backends import ADAPTERS


def _backend_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for name in BACKEND_NAMES:
        adapter = ADAPTERS[name]
        if not adapter.is_installed():
            rows.append((name, "-", "-", f"not installed ({adapter.install_hint})"))
            continue
        try:
            version = adapter.version()
            devices = adapter.device_names()
        except Exception as err:  # a broken install is reported, not raised
            rows.append((name, "?", "-", f"broken install: {err}"))
            continue
        usable = "usable" if devices else "no usable device"
        rows.append((name, version, ", ".join(devices) or "-", usable))
    return rows


def cmd_info(args: argparse.Namespace) -> int:
    """Print portanet's version, every backend with its version, devices and usability."""
    print(f"portanet {__version__}  (Python {platform.python_version()}, {platform.machine()})")
    rows = [("backend", "version", "devices", "status"), *_backend_rows()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    try:
        active = repr(get_backend())
    except Exception as err:
        active = f"none ({err})"
    print(f"active backend: {active}  (set with PORTANET_BACKEND / PORTANET_DEVICE)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portanet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"portanet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="backends, devices and versions on this machine")
    info.set_defaults(run=cmd_info)
    bench.add_command(commands)
    parity.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

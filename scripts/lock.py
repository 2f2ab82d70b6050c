"""The test and demo environment's lock: ``write`` pins what a venv holds into constraints.txt; ``check`` fails
when the venv holds a distribution the lock does not pin, or another version of one it does.

Usage: python scripts/lock.py write|check [LOCK]  (run with the venv's python; LOCK defaults to constraints.txt)
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

HEADER = """\
# The versions `make demo`, `make test` and CI install (pip -c): the environment the suite was last green with.
# Rewrite it with `make lock` (a fresh venv resolved from pyproject.toml without it); `make test-latest` runs the
# suite on the newest releases instead. torch's local label (+cpu) is dropped: the same pin takes either build.
"""
OWN = {"llmops-lightning"}  # the package itself, installed editable


def installed() -> dict[str, str]:
    """Every distribution in this environment, by normalised name, with its version less any local label."""
    out = {}
    for d in metadata.distributions():
        name = d.metadata["Name"].lower().replace("_", "-")
        if name not in OWN:
            out[name] = d.version.split("+")[0]
    return out


def read(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("write", "check"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    lock = Path(argv[1] if len(argv) > 1 else "constraints.txt")
    have = installed()
    if argv[0] == "write":
        lock.write_text(HEADER + "".join(f"{n}=={v}\n" for n, v in sorted(have.items())))
        print(f"{lock}: {len(have)} pins")
        return 0
    pins = read(lock)
    wrong = [f"{n} {v} (locked: {pins.get(n, 'not pinned')})" for n, v in sorted(have.items()) if pins.get(n) != v]
    if wrong:
        print(f"{lock} does not describe this environment: {'; '.join(wrong)}. Run `make lock` and commit it.",
              file=sys.stderr)
        return 1
    print(f"{lock}: the environment matches its {len(pins)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

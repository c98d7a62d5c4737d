"""Write the doctor codes' reference into the README from doctor.py; --check fails when stale."""

import argparse
import sys
from pathlib import Path

from pgdblink_safe.doctor import REFERENCE_END, REFERENCE_START, reference

README = Path(__file__).resolve().parent.parent / "README.md"


def rendered(readme: str) -> str:
    """The README with the reference between its markers replaced by the current one."""
    if REFERENCE_START not in readme or REFERENCE_END not in readme:
        raise SystemExit(f"README.md lacks the lines {REFERENCE_START!r} and {REFERENCE_END!r}")
    head, rest = readme.split(REFERENCE_START, 1)
    _old, tail = rest.split(REFERENCE_END, 1)
    return f"{head}{REFERENCE_START}\n{reference()}{REFERENCE_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="doctor_reference.py", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report whether it is stale")
    args = parser.parse_args(argv)
    current = README.read_text()
    wanted = rendered(current)
    if args.check:
        if wanted != current:
            print("README.md's doctor codes differ from doctor.py: run scripts/doctor_reference.py")
            return 1
        print("README.md's doctor codes match doctor.py")
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())

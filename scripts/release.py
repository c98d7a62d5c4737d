"""Make release steps from the current code in sql/, pin released ones, check both in CI."""

import argparse
import sys
from pathlib import Path

from pgdblink_safe._release import ReleaseError, Tree, check, draft, freeze, render_all

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="release.py",
        description=(
            "A change to sql/ reaches installed databases as a release step: "
            "`draft NNNN_name` writes it (hand-written statements above the marker are kept), "
            "`freeze VERSION` pins it in sql/migrations.lock, `check` fails when a step is "
            "missing, stale or a released one changed."
        ),
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout (default: this one)")
    commands = parser.add_subparsers(dest="command", required=True)
    drafting = commands.add_parser("draft", help="write or refresh the unreleased step")
    drafting.add_argument("step", help="e.g. 0002_lost_commit")
    freezing = commands.add_parser("freeze", help="pin the unreleased step as a release")
    freezing.add_argument("release", help="the package version it ships in, e.g. 0.2.0")
    commands.add_parser("check", help="what CI runs: steps up to date, released ones unchanged")
    commands.add_parser("render", help="write migrations/ (each step for the default settings)")
    args = parser.parse_args(argv)
    tree = Tree(args.root)
    try:
        if args.command == "draft":
            for written in draft(tree, args.step):
                print(f"wrote {written.relative_to(tree.root)}", file=sys.stderr)
        elif args.command == "freeze":
            for stem in freeze(tree, args.release):
                print(f"released {stem} as {args.release}", file=sys.stderr)
        elif args.command == "render":
            for written in render_all(tree):
                print(f"wrote {written.relative_to(tree.root)}", file=sys.stderr)
        else:
            check(tree)
            print(f"{len(tree.steps())} step(s): up to date", file=sys.stderr)
    except ReleaseError as exc:
        print(f"release.py {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

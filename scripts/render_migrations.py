"""Write migrations/NNNN_name.sql: each migration rendered for the default settings."""

import sys
from pathlib import Path

from pgdblink_safe.generator import migrations, render_migration
from pgdblink_safe.settings import Settings

OUT = Path(__file__).resolve().parent.parent / "migrations"


def main() -> int:
    for migration in migrations():
        path = OUT / migration.filename
        text = render_migration(migration, Settings()).sql
        if path.exists() and path.read_text() == text:
            continue
        path.write_text(text)
        print(f"wrote {path.relative_to(OUT.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

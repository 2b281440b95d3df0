"""``python -m cxstream``: the CLI."""

from __future__ import annotations

from cxstream.cli import main

if __name__ == "__main__":
    main()

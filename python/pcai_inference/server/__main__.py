"""``python -m pcai_inference.server [options]``: the same as ``pcai-inference serve``."""

from __future__ import annotations

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))

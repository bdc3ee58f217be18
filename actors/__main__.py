"""``python -m actors ...`` is ``seed-rl actors ...``."""

import sys

from seed_rl.cli import main

if __name__ == "__main__":  # spawned children import this module as __mp_main__
    sys.exit(main(["actors", *sys.argv[1:]]))

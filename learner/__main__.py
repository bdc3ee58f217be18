import sys

from seed_rl.cli import main

sys.exit(main(["learner", *sys.argv[1:]]))

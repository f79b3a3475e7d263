"""``python -m sb3_frontier.zoo``: same as the ``sb3-frontier`` command."""

import sys

from sb3_frontier.zoo.cli import main

sys.exit(main())

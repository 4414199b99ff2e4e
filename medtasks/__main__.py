"""``python -m medtasks ...`` (also what ``torchrun -m medtasks`` starts): the ``medtasks`` command line."""

import sys

from medtasks.cli import main

if __name__ == "__main__":
    sys.exit(main())

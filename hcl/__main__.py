"""``python -m hcl`` (and ``torchrun -m hcl``): the same command line as the ``hcl`` script."""

import sys

from hcl.cli import main

if __name__ == "__main__":
    sys.exit(main())

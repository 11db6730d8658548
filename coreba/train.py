"""``python -m coreba.train``: the training command, kept at this short name (the code is in
:mod:`coreba.training`)."""

import sys

from coreba.training.train import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m voc` is the `voc` command."""

import sys

from voc.cli import main

sys.exit(main())

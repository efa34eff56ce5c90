"""``python -m brainjepa.cli`` (what torchrun launches): the ``brainjepa`` command."""

import sys

from brainjepa.cli import main

sys.exit(main())

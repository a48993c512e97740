"""``python -m numbaconv`` runs the ``numbaconv`` command (numbaconv.tools.cli)."""
import sys

from .tools.cli import main

sys.exit(main())

"""`python -m rnnbench` is the `rnnbench` command."""
import sys

from rnnbench.cli import main

sys.exit(main())

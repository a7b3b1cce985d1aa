"""``python -m flexbone`` (also what ``torchrun -m flexbone train ...`` runs)."""
import sys

from .cli import main

sys.exit(main())

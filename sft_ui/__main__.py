"""`python -m sft_ui ...`"""

import sys

from .cli import main

sys.exit(main())

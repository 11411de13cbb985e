"""``python -m kgglm.serve --checkpoint DIR``: the same as ``kgglm serve``."""

import sys

from kgglm.serve.commands import serve_main

sys.exit(serve_main())

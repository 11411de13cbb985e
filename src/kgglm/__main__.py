"""``python -m kgglm`` is the ``kgglm`` command; it is also how torchrun launches it:

    torchrun --nproc_per_node=2 -m kgglm run --dataset ml-100k
"""

import sys

from kgglm.cli import main

if __name__ == "__main__":
    sys.exit(main())

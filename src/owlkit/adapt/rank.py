"""``python -m owlkit.adapt.rank SPEC``: one process of a data-parallel ``owl tune --nproc N`` started by
ddp.launch. Its own module, so that ddp.py (the process group) and train.py (the loop) need not import
each other."""

import sys

from owlkit.adapt import ddp
from owlkit.adapt.train import train

if __name__ == "__main__":
    sys.exit(ddp.run_rank(sys.argv[1:], train))

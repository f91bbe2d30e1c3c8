"""`python -m jobs.bench_step [--config PRESET]`: the same as `audiogan bench step`.

Submitted with `ray job submit --entrypoint-num-gpus 1`, it runs on a GPU node and times that
node's GPU."""

import sys

from audiogan.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "step", *sys.argv[1:]]))

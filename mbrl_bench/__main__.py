"""``python -m mbrl_bench`` is the ``bench`` command."""

from mbrl_bench.cli import main

main()

"""``python -m keel.cli``: the ``keel`` command without its console script."""

from keel.cli import main

main()

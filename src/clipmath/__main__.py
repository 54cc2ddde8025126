"""``python -m clipmath``: the ``clipmath`` command."""

from clipmath.cli import main

main()

"""``python -m clipmath.cli``: the ``clipmath`` command."""

from clipmath.cli import main

main()

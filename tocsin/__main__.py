"""``python -m tocsin`` is the ``tocsin`` command."""

from tocsin.app.cli import main

main()

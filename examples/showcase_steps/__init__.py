"""The steps of ``examples/showcase.py``.

A step is a module named ``sNN_<topic>.py`` (run in file-name order). Its docstring's first line is its
title (``setup: URL binding and attach``), shown as ``== NN <title> ==``. It defines::

    def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None: ...

``workdir`` is a temporary directory shared by all steps, and the current directory while they run;
``say`` prints narration, a few lines per step saying what it demonstrates. A step shows a feature working
and checks it with ``assert``: an exception fails the showcase. SQLite only, no configuration.
"""

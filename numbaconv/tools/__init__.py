"""numbaconv's tools: the ``numbaconv`` command and what it runs, above the library.

- :mod:`~numbaconv.tools.cli`: the command (``info``, ``bench``, ``verify``, ``tune``, ``compile-time``).
- :mod:`~numbaconv.tools.suite`: the benchmark layers and their operands.
- :mod:`~numbaconv.tools.bench`: the implementations compared, each result checked, then timed.
- :mod:`~numbaconv.tools.report`: the rows, the table and the chart.
- :mod:`~numbaconv.tools.verify`: every algorithm against the reference on random problems.
- :mod:`~numbaconv.tools.compiletime`: compile time in fresh processes.

The tools import the library (numbaconv and its modules); no library module imports the tools
(tests/test_layers.py checks it).
"""

"""Benchmarks of COREBA inference: ``python benchmarks/latency.py --help``.

* :mod:`benchmarks.latency`: the driver (engines x batch sizes x video lengths -> CSV, JSON, plot, table).
* :mod:`benchmarks.engines`: every way to run the model, behind one bind-then-step interface.
* :mod:`benchmarks.timing`: warm-up, timed runs and their statistics (perf_counter or CUDA events).
* :mod:`benchmarks.flops`: the model's FLOPs per query, counted from the ONNX graph.
* :mod:`benchmarks.machine`: what the numbers were measured on, and its matrix-multiply rate.
* :mod:`benchmarks.report`: ``results.csv``, ``results.json``, ``latency.png`` and the markdown table.
"""

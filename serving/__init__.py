"""Serving COREBA with Triton Inference Server: the model repository, a launcher, a client and a load test.

See ``docs/serving.md`` for the steps; :mod:`serving.spec` for the names every part agrees on.
"""

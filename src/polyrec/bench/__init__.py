"""Benchmark suites (:mod:`polyrec.bench.suite`), the published-results registry
(:mod:`polyrec.bench.published`) and reports (:mod:`polyrec.bench.report`); the ``bench`` and
``report`` commands are in :mod:`polyrec.bench.cli`."""

"""Everything around the methods, one folder per role.

* :mod:`benchmarks.metrics`: the evaluation engine (mAP, precision/recall, tie rule);
* :mod:`benchmarks.runner`: experiment definitions, one cell's job, launchers, the result store;
* :mod:`benchmarks.render`: tables and figures, drawn from stored results only;
* :mod:`benchmarks.evidence`: standalone comparison scripts behind the READMEs' claims;
* :mod:`benchmarks.speed`: speed and memory benchmarks.
"""

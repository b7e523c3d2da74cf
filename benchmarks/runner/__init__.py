"""The runner: which cells an experiment needs, the job of one cell, launching, storing results.

* :mod:`.experiments`: presets, datasets, table and figure definitions, and the cells they need;
* :mod:`.cell`: one cell's job (load data, fit, encode, evaluate, store);
* :mod:`.launchers`: many cells, in this process or as submitit (Slurm) jobs;
* :mod:`.results`: the result store (one JSON record per cell, atomic writes, provenance);
* :mod:`.user_data`: a user's own dataset as a one-column preset.
"""

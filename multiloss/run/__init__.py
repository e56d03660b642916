"""The run layer: a config file to a run folder.

Run configs (:mod:`.config`), data sources (:mod:`.data`), model builders
(:mod:`.models`, :mod:`.examples`), the optimizer builder (:mod:`.optim`),
the run folder with atomic writes (:mod:`.rundir`, :mod:`.atomic`), the run
kinds and their protocol (:mod:`.kinds`, :mod:`.train`), console output,
plots, ``compare`` and the quickstart job.
"""

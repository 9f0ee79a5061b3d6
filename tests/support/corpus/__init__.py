"""torch's own test data as fxdelegate's corpus.

PyTorch checks every backend it ships, inductor included, against the sample
inputs in ``torch.testing._internal``: ``op_db`` (one OpInfo per operator:
sample inputs, supported dtypes) and ``module_db`` (one ModuleInfo per
``torch.nn`` module: constructor and forward inputs). Nobody here wrote them,
which is the point: they hold the argument combinations our own tests never
thought of (the defaults a binding gets wrong, the layouts a pass does not
expect).

* :mod:`.cases` turns each sample into a one-op (or one-module) program and
  exports it;
* :mod:`.paths` runs one exported case every way fxdelegate can run it and
  compares each with ``ep.module()``;
* :mod:`.status` keeps the outcomes and writes the status table
  (``docs/opinfo-status.md``).
"""

"""The core: the composite loss installed on a Keras model.

:mod:`.composite` computes Σ wᵢ·lossᵢ and tracks every term; :mod:`.compile`
installs it (``ml.compile``) with the model mixin of :mod:`.model`; every
training step runs through the one guarded skeleton of :mod:`.train_step`,
whose non-finite guard is :mod:`.guard`; per-head metrics, gradient
diagnostics and the runtime of the weighting strategies (weights control,
shared parameters, gradient providers, callbacks) sit beside them.  Every
private attribute of Keras that multiloss touches is read in :mod:`.keras_access`.
"""

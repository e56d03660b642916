"""The ``multiloss`` command line: the argument parser (:mod:`.parser`, no TensorFlow) and the commands."""

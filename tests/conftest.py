"""Test set-up: two logical CPU devices, so MirroredStrategy has two replicas."""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
try:
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError:  # already initialised by an earlier import
    pass

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def pytest_collection_modifyitems(config, items):
    if not os.path.exists(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz")):
        skip = pytest.mark.skip(
            reason="Fashion-MNIST absent: `apt-get install dataset-fashion-mnist` installs it"
        )
        for item in items:
            if "fashion_mnist" in item.keywords:
                item.add_marker(skip)


def pytest_collection_finish(session):
    """Move what the imports made (TensorFlow, Keras, the test modules) out of the collector's sight.

    ``keras.utils.clear_session()`` below ends in a full ``gc.collect()``, which walks every
    tracked object: about 0.4 s a test for the ~400k objects of the imports alone.  Frozen, they
    are not walked; whatever a test creates is still collected as before.
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _clear_keras_session():
    import keras

    keras.utils.clear_session()
    yield

"""The Keras backend the package runs on, and what each backend needs set up once.

TensorFlow serves CPU inference, export and cluster training; JAX serves GPUs.
Under JAX nothing on the inference path imports TensorFlow: when imported, it
claims every GPU's memory. Where it must still be imported beside JAX (reading
an official TF1 checkpoint, evaluate's tf.data reader), `import_tensorflow`
hides the GPUs from it first.
"""

import os
import sys

from deeplab_xception.errors import ArgumentError

BACKENDS = ("tensorflow", "jax")
# Set to a folder to keep JAX's compiled programs there, or to "off" to keep none.
COMPILATION_CACHE_VARIABLE = "DEEPLAB_XCEPTION_JAX_CACHE"


def use_backend(name):
    """Makes `name` Keras' backend; it must be set before Keras is first imported."""
    if name not in BACKENDS:
        raise ArgumentError("backend", f"{name!r} is not one of {', '.join(BACKENDS)}")
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            raise ArgumentError("backend", f"{{argument}} {name}: Keras already runs on "
                                           f"{keras.backend.backend()}")
        return
    os.environ["KERAS_BACKEND"] = name


def is_jax():
    import keras

    return keras.backend.backend() == "jax"


def default_cache_dir():
    """$DEEPLAB_XCEPTION_CACHE, else deeplab_xception/ under the Keras cache (~/.keras)."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.environ.get("DEEPLAB_XCEPTION_CACHE") or os.path.join(keras_home, "deeplab_xception")


def compilation_cache_dir():
    """Where JAX keeps compiled programs between runs: $DEEPLAB_XCEPTION_JAX_CACHE, else
    jax_compilation_cache/ in the package's cache folder; None when that variable is "off"."""

    chosen = os.environ.get(COMPILATION_CACHE_VARIABLE)
    if chosen and chosen.lower() == "off":
        return None
    return chosen or os.path.join(default_cache_dir(), "jax_compilation_cache")


def enable_compilation_cache():
    """JAX's persistent compilation cache, on unless JAX already has a cache folder (its own
    JAX_COMPILATION_CACHE_DIR) or the package's is turned off; the folder in use, or None.
    A program compiled once (xception_65 on a GPU: a minute) then loads in a second."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    folder = compilation_cache_dir()
    if folder is not None:
        jax.config.update("jax_compilation_cache_dir", folder)
    return folder


def keep_keras_off_tensorflow():
    """Under JAX, stops Keras importing TensorFlow to serialize a layer's config: it asks
    whether a value is a TensorFlow shape or dtype, and imports TensorFlow to ask
    (`keras.src.utils.module_utils.tensorflow.available`). No value can be one unless
    TensorFlow was imported, so that is the answer it gets."""
    from keras.src.utils import module_utils

    lazy = module_utils.tensorflow
    if is_jax() and lazy.module is None and "tensorflow" not in sys.modules:
        lazy._available = False


def import_tensorflow():
    """TensorFlow, with its GPUs hidden when JAX is the backend (else it takes their memory)."""
    import tensorflow as tf

    if is_jax():
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TensorFlow had already started its devices: too late to hide
            pass
    return tf

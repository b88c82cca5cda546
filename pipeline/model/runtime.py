"""The compute environment of a training run: which device, seeds, determinism, precision.

The only backend-specific code of the project lives here, behind Keras' backend name.
"""

import os

import keras


def device() -> str:
    """'gpu: <name>' when the active Keras backend sees a GPU, else 'cpu'."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"gpu: {gpus[0].name}" if gpus else "cpu"
    if backend == "torch":
        import torch

        return f"gpu: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        return f"gpu: {gpus[0].device_kind}" if gpus else "cpu"
    return "cpu"


def configure(seed: int, deterministic: bool, mixed_precision: bool) -> dict[str, str]:
    """Seed everything, switch on op determinism if asked, and mixed precision on a GPU only."""
    keras.utils.set_random_seed(seed)
    backend = keras.backend.backend()
    if deterministic:
        os.environ["PYTHONHASHSEED"] = str(seed)
        if backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        elif backend == "torch":
            import torch

            torch.use_deterministic_algorithms(True, warn_only=True)
    where = device()
    policy = "mixed_float16" if mixed_precision and where.startswith("gpu") else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return {"device": where, "backend": backend, "precision": policy}

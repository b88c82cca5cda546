"""The compute environment of a training run: which device(s), seeds, determinism, precision.

The only backend-specific code of the project lives here, behind Keras' backend name.
"""

import contextlib
import functools
import os

import keras

from pipeline.core.errors import PipelineError

# What decides which CPU kernels compute a model, so the same numbers on another machine: dvc.yaml
# sets them for the stages that run one (docs/reproducibility.md); a run reports what it had.
KERNEL_VARIABLES = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "TF_NUM_INTRAOP_THREADS")


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


def kernels() -> str:
    """The CPU kernel settings this process runs under, as dvc.yaml writes them ('unset': the
    library's own choice for this processor). TensorFlow's: other backends do not read them."""
    return " ".join(f"{name}={os.environ.get(name, 'unset')}" for name in KERNEL_VARIABLES)


def configure(seed: int, deterministic: bool, mixed_precision: bool, devices: int = 1) -> dict[str, str]:
    """Seed everything, switch on op determinism if asked, and mixed precision on a GPU only.
    `devices` is only reported here ('2 x cpu'); `distribution` spreads the training over them."""
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
    kind = "gpu" if where.startswith("gpu") else "cpu"
    found = {"device": where, "backend": backend, "precision": policy, "devices": f"{devices} x {kind}"}
    return found | ({"kernels": kernels()} if backend == "tensorflow" else {})


def replicas(devices: int) -> list[str]:
    """The first `devices` devices of the backend's accelerator type (GPUs if any, else CPUs): a
    replica each. An error, not fewer replicas, when there are not enough: the run must be the one
    the params describe."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus, cpus = tf.config.list_logical_devices("GPU"), tf.config.list_logical_devices("CPU")
        visible = [d.name for d in gpus or cpus]
    elif backend == "jax":
        visible = [str(d) for d in keras.distribution.list_devices()]
    else:
        raise PipelineError(
            f"train.devices: {devices}: data-parallel training is not supported on the {backend} backend "
            "(TensorFlow and JAX only); set train.devices: 1"
        )
    if devices > len(visible):
        raise PipelineError(
            f"train.devices: {devices} asked, but the {backend} backend sees {len(visible)}: {visible}"
        )
    return visible[:devices]


def distribution(devices: int) -> contextlib.AbstractContextManager:
    """The context to build, compile and fit a model in for synchronous data parallelism over
    `devices` replicas, each taking an equal share of every (global) batch. One device: no strategy
    at all, so a single-device run is exactly what it was before this option existed."""
    if devices == 1:
        return contextlib.nullcontext()
    names = replicas(devices)
    if keras.backend.backend() == "tensorflow":
        return _mirrored(tuple(names)).scope()
    return keras.distribution.DataParallel(devices=names).scope()  # JAX; global only inside the block


@functools.cache
def _mirrored(names: tuple[str, ...]):
    """One strategy per device set and process: a second MirroredStrategy starts its collective
    keys where the first did, and TensorFlow then mixes the two's all-reduces (a shape-mismatch
    abort in the next model trained)."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(devices=list(names))

import keras
import numpy as np
import pytest

from pipeline.model import runtime


@pytest.fixture(autouse=True)
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_is_refused_on_the_cpu():
    """Mixed float16 on a CPU is slower and less accurate: the run falls back to float32 and says so."""
    got = runtime.configure(seed=1, deterministic=False, mixed_precision=True)
    assert got == {
        "device": "cpu", "backend": "tensorflow", "precision": "float32", "devices": "1 x cpu",
        "kernels": runtime.kernels(),
    }  # fmt: skip
    assert keras.mixed_precision.global_policy().name == "float32"


def test_a_run_reports_the_cpu_kernels_it_ran_under(monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    got = runtime.configure(seed=1, deterministic=False, mixed_precision=False)["kernels"]
    assert got == "TF_ENABLE_ONEDNN_OPTS=0 ONEDNN_MAX_CPU_ISA=unset TF_NUM_INTRAOP_THREADS=2"
    monkeypatch.setattr(runtime.keras.backend, "backend", lambda: "jax")  # they are TensorFlow's
    monkeypatch.setattr(runtime, "device", lambda: "cpu")
    assert "kernels" not in runtime.configure(seed=1, deterministic=False, mixed_precision=False)


def test_mixed_precision_is_used_on_a_gpu(monkeypatch):
    monkeypatch.setattr(runtime, "device", lambda: "gpu: /physical_device:GPU:0")
    got = runtime.configure(seed=1, deterministic=False, mixed_precision=True)
    assert got["device"].startswith("gpu") and got["precision"] == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "mixed_float16"


def test_the_seed_fixes_keras_random_draws():
    def draw(seed: int) -> np.ndarray:
        runtime.configure(seed=seed, deterministic=False, mixed_precision=False)
        return keras.ops.convert_to_numpy(keras.random.normal((4, 3)))

    assert np.array_equal(draw(7), draw(7))
    assert not np.array_equal(draw(7), draw(8))


def test_the_device_count_is_reported(monkeypatch):
    def reported(devices: int) -> str:
        return runtime.configure(1, deterministic=False, mixed_precision=False, devices=devices)["devices"]

    assert reported(2) == "2 x cpu"
    monkeypatch.setattr(runtime, "device", lambda: "gpu: /physical_device:GPU:0")
    assert reported(4) == "4 x gpu"

"""Keeping freed memory: a big block freed and allocated again is not faulted in again, and the
numbers a model computes do not change. Each case runs in a fresh interpreter, since the setting
lasts for the process."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# Faults per round of allocating, touching and freeing 64 MB, after a first round has warmed up.
FAULTS = """
import ctypes, ctypes.util, resource, sys
from pipeline.core.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
def round_trip():  # what a step's big tensor does: malloc, write, free
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)
    libc.free(block)
round_trip()  # the first round faults the memory in either way
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_trip()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) // 10)
"""

# A seeded model's weights after a few training steps, as a digest.
WEIGHTS = """
import hashlib, sys
import numpy as np
from pipeline.core.memory import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
import keras
keras.utils.set_random_seed(1)
layers = keras.layers  # activations of 16 x 96 x 96 x 32 floats: blocks glibc would map and unmap
model = keras.Sequential([keras.Input((96, 96, 3)), layers.Conv2D(32, 3), layers.BatchNormalization(),
                          layers.GlobalAveragePooling2D(), layers.Dense(4, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
model.fit(rng.random((64, 96, 96, 3)), rng.integers(0, 4, 64), batch_size=16, epochs=2, verbose=0)
print(hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest())
"""


def run(script: str, mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_a_freed_block_is_reused_not_faulted_in_again():
    pages = (64 << 20) // 4096
    assert int(run(FAULTS, "default")) > pages // 2  # glibc unmaps it: every round faults it anew
    assert int(run(FAULTS, "keep")) < pages // 20


def test_the_weights_trained_are_the_same():
    assert run(WEIGHTS, "keep") == run(WEIGHTS, "default")

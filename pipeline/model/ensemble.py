"""An ensemble of models as one Keras model: the members' class probabilities averaged per head.

One model file, so evaluate, `wbc predict`, the registry and `mlflow models serve` take an ensemble
as they take a single model; test-time augmentation then averages the ensemble over the views.
"""

from collections.abc import Sequence

import keras
from keras import layers

from pipeline.core.errors import PipelineError

# Member i trains with seed `train.seed + i * MEMBER_SEED_STEP`: two ensembles with nearby base
# seeds (42 and 43) share no member seed.
MEMBER_SEED_STEP = 1000
MEMBER = "member_{}"


def member_seed(seed: int, member: int) -> int:
    return seed + member * MEMBER_SEED_STEP


def average(members: Sequence[keras.Model]) -> keras.Model:
    """A model whose every output is the mean of the members' same-named outputs. One member is
    returned as it is, so a one-member 'ensemble' is the single model, file and all."""
    if not members:
        raise PipelineError("ensemble: no members")
    if len(members) == 1:
        return members[0]
    heads = list(members[0].output_names)
    for i, model in enumerate(members):
        if list(model.output_names) != heads or model.input_shape != members[0].input_shape:
            raise PipelineError(f"ensemble: member {i} has other inputs or outputs than member 0")
        model.name = MEMBER.format(i)  # nested models need distinct names
    inputs = keras.Input(shape=members[0].input_shape[1:], name="image")
    outputs = [model(inputs) for model in members]
    averaged = {h: layers.Average(name=h)([out[h] for out in outputs]) for h in heads}
    return keras.Model(inputs, averaged, name=f"ensemble_of_{len(members)}")


def members_of(model: keras.Model) -> list[keras.Model]:
    """The member models of an `average`d ensemble, in order; a single model is its own member."""
    found = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    named = [m for m in found if m.name.startswith("member_")]
    return sorted(named, key=lambda m: int(m.name.split("_")[1])) if named else [model]


def first(model: keras.Model, k: int) -> keras.Model:
    """The ensemble of the first `k` members of `model` (to see what each added member buys)."""
    found = members_of(model)
    if not 1 <= k <= len(found):
        raise PipelineError(f"ensemble: {k} members asked, the model has {len(found)}")
    return average(found[:k]) if k > 1 else found[0]

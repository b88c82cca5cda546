"""The model zoo: every architecture the published work on this problem used, in plain Keras 3.

Each backbone maps an image batch (float pixels in [0, 255]) to a feature vector; `build_model`
adds the task's softmax head(s). No backend-specific calls, so the same code runs on TensorFlow
(CPU here) and on the torch backend (GPU checks). Where a report leaves a detail out, the
choice made is said in the backbone's docstring.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import keras
from keras import layers

from pipeline.core.classes import Head
from pipeline.core.errors import PipelineError


def _reg(l1: float, l2: float) -> keras.regularizers.Regularizer | None:
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


def varra(x, *, dropout: float, reg, **_) -> keras.KerasTensor:
    """Varra's best ('model 2', 78%): three 3x3 convs (32, 32, 64) with max-pooling and dropout,
    then dense 128 with dropout. The report gives no filter counts; these are Keras-example sizes."""
    x = layers.Rescaling(1 / 255)(x)
    x = layers.Conv2D(32, 3, activation="relu", kernel_regularizer=reg)(x)
    x = layers.Conv2D(32, 3, activation="relu", kernel_regularizer=reg)(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(dropout / 2)(x)
    x = layers.Conv2D(64, 3, activation="relu", kernel_regularizer=reg)(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(dropout / 2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu", kernel_regularizer=reg)(x)
    return layers.Dropout(dropout)(x)


def _conv_pool_flatten(x, filters: tuple[int, ...], reg) -> keras.KerasTensor:
    """Pixels to [0, 1], then a valid 3x3 ReLU conv and a 2x2 max-pool per entry of `filters`,
    flattened: the trunk the Fischbach and Athelas networks share."""
    x = layers.Rescaling(1 / 255)(x)
    for n in filters:
        x = layers.Conv2D(n, 3, activation="relu", kernel_regularizer=reg)(x)
        x = layers.MaxPooling2D()(x)
    return layers.Flatten()(x)


def fischbach(x, *, dropout: float, reg, **_) -> keras.KerasTensor:
    """Fischbach & Weinstein (84%): conv 32/64/128 (3x3, valid) each with 2x2 max-pool, flatten,
    dense 64 and 32 with dropout between; L1/L2 kernel regularisation. 423,237 params at
    60x80x3 with 5 outputs, as published."""
    x = _conv_pool_flatten(x, (32, 64, 128), reg)
    x = layers.Dense(64, activation="relu", kernel_regularizer=reg)(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(32, activation="relu", kernel_regularizer=reg)(x)
    return layers.Dropout(dropout)(x)


def lenet(x, *, dropout: float, reg, **_) -> keras.KerasTensor:
    """Athelas LeNet variant: conv 32, 32, 64 (3x3, valid) each with ReLU and 2x2 max-pool, dense 64,
    dropout (0.7 in the report). 987,298 params at 120x160x3 with 2 outputs, as published."""
    x = _conv_pool_flatten(x, (32, 32, 64), reg)
    x = layers.Dense(64, activation="relu", kernel_regularizer=reg)(x)
    return layers.Dropout(dropout)(x)


def depthwise(x, *, dropout: float, reg, **_) -> keras.KerasTensor:
    """Rao, Sai & Rao: a standard 3x3 conv ('same') with 2x2 max-pool, then depthwise-separable
    blocks with kernel sizes 3, 5, 3, 5 (the report says only 'varying'), each with batch norm,
    ReLU and max-pool; flatten (after global pooling, to keep the head small); three dense layers
    (256, 128, 64) with dropout between."""
    x = layers.Rescaling(1 / 255)(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", kernel_regularizer=reg)(x)
    x = layers.MaxPooling2D()(x)
    for filters, kernel in ((64, 3), (128, 5), (128, 3), (256, 5)):
        x = layers.SeparableConv2D(filters, kernel, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    for units in (256, 128, 64):
        x = layers.Dense(units, activation="relu", kernel_regularizer=reg)(x)
        x = layers.Dropout(dropout)(x)
    return x


def cnn_bilstm(x, *, dropout: float, reg, **_) -> keras.KerasTensor:
    """Gür & Kaya's CNN + RNN: a conv branch, plus two bidirectional LSTMs (64 units) over the
    grayscale image — the first reads it row by row, the second reads the first's outputs
    column-wise — merged with the CNN features before the dense head. The grayscale image is
    downsampled to 64x64 first (the report's ResNet/MobileNet branch is `mobilenetv2` here)."""
    scaled = layers.Rescaling(1 / 255)(x)
    c = scaled
    for filters in (32, 64, 128):
        c = layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_regularizer=reg)(c)
        c = layers.MaxPooling2D()(c)
    c = layers.GlobalAveragePooling2D()(c)
    gray = layers.Resizing(64, 64)(scaled)
    # Grayscale as a fixed 1x1 convolution (the channel mean): a built-in layer, so the saved model
    # loads in Keras' safe mode and in MLflow, which a Lambda layer would not.
    gray = layers.Conv2D(
        1, 1, use_bias=False, trainable=False, kernel_initializer=keras.initializers.Constant(1 / 3),
        name="grayscale",
    )(gray)  # fmt: skip
    gray = layers.Reshape((64, 64))(gray)  # (B, 64 rows, 64 columns)
    rows = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(gray)  # (B, 64 rows, 128)
    cols = layers.Permute((2, 1))(rows)  # (B, 128, 64): read the row outputs column-wise
    cols = layers.Bidirectional(layers.LSTM(64))(cols)  # (B, 128)
    x = layers.Concatenate()([c, cols])
    x = layers.Dense(128, activation="relu", kernel_regularizer=reg)(x)
    return layers.Dropout(dropout)(x)


def _application(factory: Callable, preprocess: Callable | None):
    def backbone(x, *, dropout: float, weights: str | None, **_) -> keras.KerasTensor:
        if preprocess is not None:
            x = preprocess(x)
        base_weights = "imagenet" if weights == "imagenet" else None
        try:
            base = factory(include_top=False, weights=base_weights, input_shape=x.shape[1:], pooling="avg")
        except Exception as err:  # keras raises several types when a download fails
            raise PipelineError(
                f"train.weights: cannot get ImageNet weights for {factory.__name__} ({err}). With no "
                "network, download the no-top weights file on a networked machine and set "
                "train.weights to its local path, or use weights: null"
            ) from None
        if weights not in (None, "imagenet"):
            path = Path(weights)
            if not path.is_file():
                raise PipelineError(f"train.weights: {path}: no such weights file")
            base.load_weights(path)
        return layers.Dropout(dropout)(base(x))

    return backbone


BACKBONES: dict[str, Callable] = {
    "varra": varra,
    "fischbach": fischbach,
    "lenet": lenet,
    "depthwise": depthwise,
    "cnn_bilstm": cnn_bilstm,
    # MobileNetV2 expects pixels in [-1, 1]; EfficientNet rescales inside itself.
    "mobilenetv2": _application(keras.applications.MobileNetV2, layers.Rescaling(1 / 127.5, offset=-1)),
    "efficientnetb0": _application(keras.applications.EfficientNetB0, None),
}


def build_model(
    name: str,
    input_shape: tuple[int, int, int],
    heads: Sequence[Head],
    *,
    dropout: float,
    l1: float = 0.0,
    l2: float = 0.0,
    weights: str | None = None,
    bn_momentum: float = 0.99,
) -> keras.Model:
    """Backbone `name` with one softmax output per head, named like the head.

    The model takes float pixels in [0, 255] of shape `input_shape` and outputs a dict of
    class probabilities by head name. Every batch-norm layer, the applications' included, gets
    `bn_momentum`: Keras' 0.99 needs hundreds of steps before the moving statistics used at
    inference are any good, more than a short CPU run has.
    """
    if name not in BACKBONES:
        raise PipelineError(f"train.model: unknown model {name!r}; choose from {', '.join(BACKBONES)}")
    inputs = keras.Input(shape=input_shape, name="image")
    features = BACKBONES[name](inputs, dropout=dropout, reg=_reg(l1, l2), weights=weights)
    outputs = {
        h.name: layers.Dense(len(h.classes), activation="softmax", dtype="float32", name=h.name)(features)
        for h in heads
    }
    model = keras.Model(inputs, outputs, name=name)
    for layer in _layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    return model


def _layers(model: keras.Model) -> list[layers.Layer]:
    """Every layer, those of nested models (the applications' backbones) included."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(_layers(layer))
    return found

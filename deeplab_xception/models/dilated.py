"""Dilated depthwise convs with one space-to-batch per run of layers, not one per conv.

TensorFlow runs a dilated depthwise conv on CPU as space-to-batch, a
depthwise conv at rate 1 and batch-to-space: two copies of the tensor per
conv, padded by the dilated kernel's halo. At output stride 8, xception_65
has 51 such convs at rate 2 in a row (middle flow and exit block 1) with only
pointwise layers between them, and a pointwise layer computes the same on the
rearranged tensor. `with_shared_space_to_batch` rearranges a tensor once,
where a dilated depthwise conv first reads it, keeps it rearranged through
every pointwise layer and every depthwise conv of that rate, and rearranges
it back where anything else reads it. It pads only to a multiple of the rate,
with no halo, so where the image's size is not such a multiple some
positions lie outside the image: a mask zeroes them before each depthwise
conv, whose own zero padding then stands for the image's border exactly as
in the dilated conv. TensorFlow only; for inference copies (see `inference`).
"""

import keras
from keras import tree


def _paddings(shape, rate):
    """Bottom and right padding that makes the height and width multiples of `rate`."""
    return [[0, -shape[1] % rate], [0, -shape[2] % rate]]


class SpaceToBatch(keras.layers.Layer):
    """N x H x W x C to rate^2 N x ceil(H / rate) x ceil(W / rate) x C, zero padded."""

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate

    def call(self, inputs):
        import tensorflow as tf

        return tf.space_to_batch(inputs, [self.rate] * 2, _paddings(tf.shape(inputs), self.rate))

    def compute_output_shape(self, input_shape):
        return (None, None, None, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


class InsideMask(SpaceToBatch):
    """1 where a rearranged position lies inside the image, 0 in the padding: one channel."""

    def call(self, inputs):
        import tensorflow as tf

        return super().call(tf.ones_like(inputs[..., :1]))

    def compute_output_shape(self, input_shape):
        return (None, None, None, 1)


class BatchToSpace(SpaceToBatch):
    """The inverse of `SpaceToBatch`, cropped to the size of `like`."""

    def call(self, inputs, like):
        import tensorflow as tf

        return tf.batch_to_space(inputs, [self.rate] * 2, _paddings(tf.shape(like), self.rate))

    def compute_output_shape(self, inputs_shape, like_shape):
        return tuple(like_shape[:3]) + (inputs_shape[-1],)


class Masked(keras.layers.Layer):
    def call(self, inputs, mask):
        return inputs * mask


def shared_rate(layer):
    """The rate of a dilated depthwise conv that runs on a rearranged tensor, or None."""
    rates = getattr(layer, "dilation_rate", (1, 1))
    if (type(layer) is keras.layers.DepthwiseConv2D and rates[0] == rates[1] > 1
            and layer.strides == (1, 1) and layer.padding == "same"
            and layer.data_format == "channels_last"
            and all(k % 2 for k in layer.kernel_size)):
        return rates[0]
    return None


POINTWISE = (keras.layers.ReLU, keras.layers.Activation, keras.layers.BatchNormalization,
             keras.layers.Dropout, keras.layers.Add, keras.layers.Identity)


def _pointwise(layer, extra):
    """Whether `layer` computes each position from that position alone."""
    if isinstance(layer, keras.layers.Concatenate):
        return layer.axis in (-1, 3)
    if type(layer) is keras.layers.Conv2D:
        return layer.kernel_size == (1, 1) and layer.strides == (1, 1)
    return isinstance(layer, POINTWISE + tuple(extra))


class _Rearranged:
    """A tensor in space-to-batch form: its rate, the mask, and a tensor of its spatial size."""

    def __init__(self, tensor, rate, mask, like):
        self.tensor, self.rate, self.mask, self.like = tensor, rate, mask, like

    def keep(self, tensor):
        return _Rearranged(tensor, self.rate, self.mask, self.like)


class _Rewrite:
    """Calls each layer of a functional model on tensors in whichever form suits it."""

    def __init__(self, pointwise):
        self.pointwise = pointwise
        self.plain = {}  # id(_Rearranged): its tensor back in N x H x W x C
        self.rearranged = {}  # (id(tensor), rate): _Rearranged
        self.kept_alive = []  # what the ids above refer to

    def to_plain(self, x):
        if not isinstance(x, _Rearranged):
            return x
        if id(x) not in self.plain:
            self.plain[id(x)] = BatchToSpace(x.rate)(x.tensor, x.like)
            self.kept_alive.append(x)
        return self.plain[id(x)]

    def to_rearranged(self, x, rate):
        if isinstance(x, _Rearranged) and x.rate == rate:
            return x
        x = self.to_plain(x)
        key = (id(x), rate)
        if key not in self.rearranged:
            self.rearranged[key] = _Rearranged(SpaceToBatch(rate)(x), rate, InsideMask(rate)(x), x)
            self.kept_alive.append(x)
        return self.rearranged[key]

    def __call__(self, layer, *args, **kwargs):
        rate = shared_rate(layer)
        if rate is not None:
            x = self.to_rearranged(args[0], rate)
            config = {**layer.get_config(), "dilation_rate": 1}
            conv = type(layer).from_config(config)
            outputs = conv(Masked()(x.tensor, x.mask))
            conv.set_weights(layer.get_weights())
            return x.keep(outputs)
        rates = {x.rate for x in tree.flatten((args, kwargs)) if isinstance(x, _Rearranged)}
        if _pointwise(layer, self.pointwise) and len(rates) == 1:
            # a plain input (a residual) joins the others' form rather than the reverse
            rate = rates.pop()
            args, kwargs = tree.map_structure(
                lambda x: x if not isinstance(x, (_Rearranged, keras.KerasTensor))
                else self.to_rearranged(x, rate), (args, kwargs))
            first = next(x for x in tree.flatten((args, kwargs)) if isinstance(x, _Rearranged))
            args, kwargs = tree.map_structure(
                lambda x: x.tensor if isinstance(x, _Rearranged) else x, (args, kwargs))
            return first.keep(layer(*args, **kwargs))
        args, kwargs = tree.map_structure(self.to_plain, (args, kwargs))
        return layer(*args, **kwargs)


def with_shared_space_to_batch(model, pointwise=()):
    """`model` (functional, one input) with its dilated depthwise convs on tensors rearranged
    once per run of layers; the same layers and weights otherwise. `pointwise`: further
    layer classes that compute each position from that position alone."""
    if not any(shared_rate(layer) for layer in model.layers):
        return model
    inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype)
    rewrite = _Rewrite(pointwise)
    outputs = model._run_through_graph([inputs], call_fn=rewrite)
    return keras.Model(inputs, tree.map_structure(rewrite.to_plain, outputs), name=model.name)

"""Which precision inference computes in, and a model rebuilt to compute in it.

`auto` picks bfloat16 where the hardware multiplies bfloat16 natively and it
was measured faster, float32 elsewhere: emulated bfloat16 is slower than
float32 and no more accurate. On CPU under TensorFlow that is Intel AMX or
AVX512_BF16 (oneDNN's kernels); under JAX, XLA's CPU convs were measured
slower in bfloat16 even with AMX (xception_65, OS 16, 513x513, 2 vCPUs of a
Xeon with AMX, 6 alternating runs: best 4.96 against 3.77 s, medians 7.1
against 6.2 s), so `auto` is float32 on a JAX CPU. On a GPU under JAX
(compute capability 8.0 or newer) bfloat16 pays only with enough work per
network call, so `auto` decides per call size from the measured table
`GPU_MEASURED` (`gpu_bfloat16_from`). Weights stay float32; a bfloat16 model computes every layer
in bfloat16 except its last affine layer and what follows it (logits and
their upsampling), which stay float32, as `build_model(dtype=...)` builds them.
"""

import keras

from deeplab_xception.errors import ArgumentError
from deeplab_xception.models.backbones.base import copy_weights_by_name

PRECISIONS = ("auto", "float32", "bfloat16")
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
# /proc/cpuinfo flags of CPUs with bfloat16 dot products in hardware.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = "/proc/cpuinfo"
# Inference on a JAX GPU by work per call: (output positions per call, that is batch x
# ceil(H / OS) x ceil(W / OS), float32 ms, bfloat16 ms). xception_65 DeepLabv3+, 21
# classes, 513 x 513, depthwise convs shifted, one H200 (benchmarks/gpu.py,
# docs/benchmarks.md). bfloat16 lost at batch 1, OS 16.
GPU_MEASURED = (
    (1 * 33 * 33, 3.15, 3.46),  # batch 1, OS 16
    (1 * 65 * 65, 6.94, 5.85),  # batch 1, OS 8
    (16 * 33 * 33, 25.10, 18.35),  # batch 16, OS 16
    (16 * 65 * 65, 68.01, 60.28),  # batch 16, OS 8
)


def cpu_flags(cpuinfo=CPUINFO):
    """The feature flags of the first processor listed in `cpuinfo`; empty where unreadable."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(cpuinfo=CPUINFO):
    """Whether the CPU multiplies bfloat16 in hardware (AMX or AVX512_BF16)."""
    return any(flag in cpu_flags(cpuinfo) for flag in NATIVE_BF16_FLAGS)


def _gpu_has_native_bf16():
    """Under JAX, whether the default device is a GPU of compute capability 8.0 or newer."""
    import jax

    device = jax.devices()[0]
    if device.platform != "gpu":
        return None
    capability = getattr(device, "compute_capability", "0")
    return float(capability) >= 8.0


def gpu_bfloat16_from(measured=GPU_MEASURED):
    """The fewest output positions per call from which bfloat16 was measured faster than
    float32 at every measured size (None: never): `auto`'s threshold on a JAX GPU. Sizes
    between the last slower and the first faster measurement take float32."""
    slowest_loss = max((p for p, f32, bf16 in measured if bf16 >= f32), default=0)
    return min((p for p, f32, bf16 in measured if bf16 < f32 and p > slowest_loss), default=None)


def positions_per_call(shape, output_stride):
    """batch x ceil(H / OS) x ceil(W / OS) of an N x H x W x C input: the work of one call."""
    batch, height, width = shape[:3]
    return batch * -(-height // output_stride) * -(-width // output_stride)


def resolve_precision(precision="auto", cpuinfo=CPUINFO, positions=None):
    """"float32" or "bfloat16": `precision`, with "auto" decided for this machine; on a JAX
    GPU, for calls of `positions` output positions (`positions_per_call`; None: unknown,
    float32)."""
    if precision not in PRECISIONS:
        raise ArgumentError("precision", f"{precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if keras.backend.backend() == "jax":
        threshold = gpu_bfloat16_from()
        faster = (_gpu_has_native_bf16() and positions is not None and threshold is not None
                  and positions >= threshold)
        return "bfloat16" if faster else "float32"
    return "bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"


def _float32_tail(model):
    """Names of the layers from the last layer with weights to each output, along first
    inputs (a resize's first input is what it resizes): they stay float32. Followed by
    the nodes of `model` itself, as its layers may also be called in another model."""
    tail = set()
    for output in model.outputs:
        tensor = output
        while True:
            layer, node_index, _ = tensor._keras_history
            tail.add(layer.name)
            node = layer._inbound_nodes[node_index]
            if layer.weights or not node.input_tensors:
                break
            tensor = node.input_tensors[0]
    return tail


def with_precision(model, precision):
    """`model` computing in `precision` ("float32" or "bfloat16"), same float32 weights.

    float32 returns `model` itself. bfloat16 clones it with every layer under
    Keras' mixed_bfloat16 policy but its float32 tail (the logits), so each layer
    casts once, at the input, and activations flow between layers in bfloat16.
    """
    if precision == "float32":
        return model
    policy = POLICIES[precision]
    tail = _float32_tail(model)

    def clone(layer):
        config = layer.get_config()
        if layer.name not in tail and layer.__class__.__name__ != "InputLayer":
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    rebuilt = keras.models.clone_model(model, clone_function=clone)
    copy_weights_by_name(model, rebuilt)
    return rebuilt


"""Which precision inference computes in, and a model rebuilt to compute in it.

`auto` picks bfloat16 where the hardware multiplies bfloat16 natively (Intel
AMX or AVX512_BF16 on CPU, a GPU of compute capability 8.0 or newer under
JAX) and float32 elsewhere: emulated bfloat16 is slower than float32 and
no more accurate. Weights stay float32; a bfloat16 model computes every layer
in bfloat16 except its last affine layer and what follows it (logits and
their upsampling), which stay float32, as `build_model(dtype=...)` builds them.
"""

import keras

from deeplab_xception.errors import UserError

PRECISIONS = ("auto", "float32", "bfloat16")
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
# /proc/cpuinfo flags of CPUs with bfloat16 dot products in hardware.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = "/proc/cpuinfo"


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


def resolve_precision(precision="auto", cpuinfo=CPUINFO):
    """"float32" or "bfloat16": `precision`, with "auto" decided for this machine."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if keras.backend.backend() == "jax":
        on_gpu = _gpu_has_native_bf16()
        if on_gpu is not None:
            return "bfloat16" if on_gpu else "float32"
    return "bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"


def _float32_tail(model):
    """Names of the layers from the last layer with weights to each output, along first
    inputs (a resize's first input is what it resizes): they stay float32."""
    tail = set()
    for output in model.outputs:
        layer = output._keras_history.operation
        while True:
            tail.add(layer.name)
            nodes = layer._inbound_nodes
            if layer.weights or len(nodes) != 1 or not nodes[0].parent_nodes:
                break
            layer = nodes[0].parent_nodes[0].operation
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
    rebuilt.set_weights(model.get_weights())
    return rebuilt


"""DeepLabv3+ xception_65 on one GPU: ours on JAX against segmentation_models_pytorch.

Needs JAX, PyTorch, timm, segmentation-models-pytorch and keras; no TensorFlow
(it is refused on import, so the run also proves the JAX path needs none).
Ours runs at 513x513 through `jax.jit` over `stateless_call`, batch norms
folded for inference; smp's DeepLabV3Plus (timm `tu-xception65` encoder,
channels-last, cuDNN benchmark mode) at 512x512, eager and `torch.compile`.
Each configuration builds every candidate, then times them alternately in
rounds; a figure is the median of the rounds' medians, in ms per batch.
Results are written to --output after every configuration, so a run stopped
at its --deadline keeps what it measured.

    python benchmarks/gpu.py --output gpu.json              # the full run, minutes on an H200
    python benchmarks/gpu.py --output gpu.json --quick      # a smoke test on any machine
    python benchmarks/gpu.py --output gpu.json --configs 1 2 --profile 25   # where the time goes

`--profile TOP` traces a few calls of each candidate after its timings
(`jax.profiler` for ours, `torch.profiler` for smp) and writes the TOP
longest device kernels and the time by kind of kernel into the JSON.
"""

import argparse
import collections
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # PyTorch shares the GPU
sys.modules.setdefault("tensorflow", None)  # the JAX path must not need it

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NUM_CLASSES = 21
IGNORE_LABEL = 255
ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
LEARNING_RATE, MOMENTUM = 0.007, 0.9


def enable_compilation_cache(folder):
    import jax

    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


# ---------------------------------------------------------------- ours (JAX)

def ours_network(output_stride, dtype="float32", training=False, depthwise="shifted"):
    from deeplab_xception.models import build_model

    model = build_model("deeplab", backbone="xception_65", num_classes=NUM_CLASSES,
                        output_stride=output_stride, atrous_rates=ATROUS_RATES[output_stride],
                        dtype=dtype if training else "float32")
    if not training:
        from deeplab_xception.runtime.folding import fold_batch_norms
        from deeplab_xception.runtime.precision import with_precision

        model = with_precision(fold_batch_norms(model), dtype)
    if depthwise == "shifted":
        from deeplab_xception.models.depthwise import with_shifted_depthwise

        model = with_shifted_depthwise(model)
    return model


def ours_inference(output_stride, batch, precision, depthwise, size):
    import jax
    import numpy as np

    model = ours_network(output_stride, precision, depthwise=depthwise)
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    call = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])
    images = jax.device_put(np.random.default_rng(0).uniform(
        -1, 1, (batch, size, size, 3)).astype("float32"))
    return lambda: call(trainable, frozen, images)


def ours_train_step(output_stride, batch, precision, depthwise, size):
    """One SGD step (Nesterov momentum, the ignore label masked) over a jitted
    `stateless_call`, state donated; returns a callable running one step."""
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    dtype = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    model = ours_network(output_stride, dtype, training=True, depthwise=depthwise)
    optimizer = keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM, nesterov=True)
    optimizer.build(model.trainable_variables)

    def loss(trainable, frozen, images, labels):
        logits, frozen = model.stateless_call(trainable, frozen, images, training=True)
        logits = logits.astype("float32")
        valid = labels != IGNORE_LABEL
        log_p = jax.nn.log_softmax(logits)
        picked = jnp.take_along_axis(log_p, jnp.where(valid, labels, 0)[..., None], -1)[..., 0]
        return -jnp.sum(jnp.where(valid, picked, 0.0)) / jnp.maximum(valid.sum(), 1), frozen

    def step(trainable, frozen, slots, images, labels):
        (value, frozen), grads = jax.value_and_grad(loss, has_aux=True)(
            trainable, frozen, images, labels)
        trainable, slots = optimizer.stateless_apply(slots, grads, trainable)
        return trainable, frozen, slots, value

    step = jax.jit(step, donate_argnums=(0, 1, 2))
    rng = np.random.default_rng(0)
    images = jax.device_put(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"))
    labels = rng.integers(0, NUM_CLASSES, (batch, size, size)).astype("int32")
    labels[:, :8] = IGNORE_LABEL
    labels = jax.device_put(labels)
    state = [[v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables]]

    def run():
        state[0], state[1], state[2], value = step(*state, images, labels)
        return value
    return run


def jax_timer(run):
    import jax

    def timed():
        start = time.perf_counter()
        jax.block_until_ready(run())
        return time.perf_counter() - start
    return timed


# ---------------------------------------------------------------- smp (PyTorch)

def smp_network(output_stride):
    import segmentation_models_pytorch as smp

    return smp.DeepLabV3Plus(encoder_name="tu-xception65", encoder_weights=None,
                             encoder_output_stride=output_stride,
                             decoder_atrous_rates=ATROUS_RATES[output_stride],
                             classes=NUM_CLASSES)


def torch_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def smp_inference(output_stride, batch, precision, compiled, size):
    import torch

    device = torch_device()
    model = smp_network(output_stride).to(device).eval().to(memory_format=torch.channels_last)
    if compiled:
        model = torch.compile(model)
    images = torch.rand(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    bf16 = precision == "bfloat16"

    def run():
        with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=bf16):
            return model(images)
    return run


def smp_train_step(output_stride, batch, precision, compiled, size):
    import torch

    device = torch_device()
    model = smp_network(output_stride).to(device).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), LEARNING_RATE, momentum=MOMENTUM,
                                nesterov=True)
    forward = torch.compile(model) if compiled else model
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_LABEL)
    images = torch.rand(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (batch, size, size), device=device)
    labels[:, :8] = IGNORE_LABEL
    bf16 = precision == "bfloat16"

    def run():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, torch.bfloat16, enabled=bf16):
            loss = loss_fn(forward(images).float(), labels)
        loss.backward()
        optimizer.step()
        return loss
    return run


def torch_timer(run):
    import torch

    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def timed():
        synchronize()
        start = time.perf_counter()
        run()
        synchronize()
        return time.perf_counter() - start
    return timed


# ---------------------------------------------------------------- profiles (--profile)

PROFILED_CALLS = 3
CONV_MARKS = ("conv", "gemm", "xmma", "cutlass", "cudnn", "fprop", "dgrad", "wgrad", "matmul")


def kernel_kind(name):
    """A coarse kind for a device kernel's name, the same for both frameworks."""
    name = name.lower()
    if any(mark in name for mark in CONV_MARKS):
        return "conv and matmul"
    if any(mark in name for mark in ("transpose", "copy", "memcpy", "memset", "layout")):
        return "transposes and copies"
    if "reduce" in name or "reduction" in name:
        return "reductions"
    return "elementwise and other fusions"


def kernel_summary(times, counts, details, top):
    """ms per call by kernel (the `top` longest) and by kind, from summed nanoseconds."""
    per_call = {name: ns / 1e6 / PROFILED_CALLS for name, ns in times.items()}
    kinds = collections.Counter()
    for name, ms in per_call.items():
        kinds[kernel_kind(name)] += ms
    return {"calls": PROFILED_CALLS,
            "total_ms": round(sum(per_call.values()), 3),
            "by_kind_ms": {kind: round(ms, 3) for kind, ms in kinds.most_common()},
            "kernels": [{"name": name[:300], "ms": round(ms, 3),
                         "count": counts[name] // PROFILED_CALLS, **details.get(name, {})}
                        for name, ms in sorted(per_call.items(), key=lambda i: -i[1])[:top]]}


def jax_profile(timer, top):
    """The kernels `timer`'s calls ran, from a `jax.profiler` trace: the device's
    stream lines on a GPU, XLA's executor lines on a CPU (a smoke test)."""
    import jax
    from jax.profiler import ProfileData

    folder = tempfile.mkdtemp(prefix="jax-trace-")
    with jax.profiler.trace(folder):
        for _ in range(PROFILED_CALLS):
            timer()
    (path,) = glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)
    planes = list(ProfileData.from_file(path).planes)
    lines = [line for plane in planes if plane.name.startswith("/device:")
             for line in plane.lines]
    streams = [line for line in lines if line.name.startswith("Stream")]
    lines = streams or lines or [line for plane in planes for line in plane.lines
                                 if line.name.startswith("tf_XLA")]
    events = [(event, {str(k): str(v)[:200] for k, v in event.stats
                       if str(k) in ("hlo_op", "hlo_module", "long_name")})
              for line in lines for event in line.events]
    if any("hlo_op" in stats for _, stats in events):  # drop the executor's own spans
        events = [(event, stats) for event, stats in events if "hlo_op" in stats]
    times, counts, details = collections.Counter(), collections.Counter(), {}
    for event, stats in events:
        times[event.name] += event.duration_ns
        counts[event.name] += 1
        details.setdefault(event.name, stats)  # e.g. the HLO op a kernel belongs to
    return {"lines": sorted({line.name for line in lines})[:20],
            **kernel_summary(times, counts, details, top)}


def torch_profile(timer, top):
    """The device kernels `timer`'s calls ran, from `torch.profiler` (CPU ops on a CPU)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as recorded:
        for _ in range(PROFILED_CALLS):
            timer()
    times, counts = collections.Counter(), collections.Counter()
    for row in recorded.key_averages():
        us = (getattr(row, "self_device_time_total", None) if cuda
              else row.self_cpu_time_total)
        if us:
            times[row.key] += us * 1000
            counts[row.key] += row.count
    return kernel_summary(times, counts, {}, top)



# ---------------------------------------------------------------- the run

def candidates(config, quick, depthwise_paths):
    """(name, timer factory) of every candidate of one configuration."""
    job, output_stride, batch = config["job"], config["output_stride"], config["batch"]
    ours_size, smp_size = (65, 64) if quick else (513, 512)
    found = []
    for precision in config["ours"]:
        for depthwise in depthwise_paths:
            build = ours_train_step if job == "train" else ours_inference
            found.append((f"ours {precision} depthwise={depthwise}",
                          lambda b=build, p=precision, d=depthwise: jax_timer(
                              b(output_stride, batch, p, d, ours_size))))
    if config.get("smp") and torch_available():
        for mode, precision in config["smp"]:
            build = smp_train_step if job == "train" else smp_inference
            found.append((f"smp {mode} {precision}",
                          lambda b=build, p=precision, m=mode: torch_timer(
                              b(output_stride, batch, p, m == "compile", smp_size))))
    return found


def torch_available():
    try:
        import segmentation_models_pytorch  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# Ours with its depthwise convs shifted (deeplab_xception/models/depthwise.py, what the JAX path
# runs); --with-grouped-depthwise adds XLA's grouped conv, which compiles for minutes.
CONFIGS = [
    dict(job="inference", output_stride=16, batch=1, ours=("float32", "bfloat16"),
         smp=(("eager", "float32"), ("eager", "bfloat16"), ("compile", "bfloat16"))),
    dict(job="inference", output_stride=16, batch=16, ours=("float32", "bfloat16"),
         smp=(("eager", "float32"), ("eager", "bfloat16"), ("compile", "bfloat16"))),
    dict(job="train", output_stride=16, batch=16, ours=("bfloat16",),
         smp=(("eager", "bfloat16"),)),
    dict(job="inference", output_stride=8, batch=1, ours=("float32", "bfloat16"),
         smp=(("eager", "float32"), ("eager", "bfloat16"), ("compile", "bfloat16"))),
    dict(job="inference", output_stride=8, batch=16, ours=("float32", "bfloat16"),
         smp=(("eager", "bfloat16"), ("compile", "bfloat16"))),
]


def measure(config, quick, rounds, repeats, deadline, depthwise_paths, profile_top=0):
    entries = {}
    timers = []
    for name, factory in candidates(config, quick, depthwise_paths):
        if time.monotonic() > deadline:
            entries[name] = {"skipped": "deadline"}
            continue
        start = time.perf_counter()
        try:
            timer = factory()
            built = time.perf_counter() - start
            first = timer()
        except Exception as error:  # one failing candidate must not cost the run
            entries[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
            print(f"  {name}: {entries[name]['error'][:300]}", flush=True)
            continue
        entries[name] = {"build_s": round(built, 2), "first_call_s": round(first, 2)}
        timers.append((name, timer))
        print(f"  {name}: built in {built:.1f} s, first call {first:.1f} s", flush=True)
    for _ in range(2):  # warm-up: autotuned kernels, allocator
        for _, timer in timers:
            timer()
    medians = {name: [] for name, _ in timers}
    for _ in range(rounds):
        for name, timer in timers:
            medians[name].append(statistics.median(timer() for _ in range(repeats)))
    for name, values in medians.items():
        entries[name]["ms"] = round(1000 * statistics.median(values), 3)
        entries[name]["round_ms"] = [round(1000 * v, 3) for v in values]
        print(f"  {name}: {entries[name]['ms']:.2f} ms", flush=True)
    for name, timer in timers if profile_top else ():
        try:
            profiled = (jax_profile if name.startswith("ours") else torch_profile)(
                timer, profile_top)
        except Exception as error:  # a profile must not cost the timings
            profiled = {"error": f"{type(error).__name__}: {error}"[:2000]}
        entries[name]["profile"] = profiled
        print(f"  {name}: profiled {profiled.get('by_kind_ms', profiled)}", flush=True)
    return entries


def first_step_warm(args):
    """In a fresh process: the first training step with the compilation cache of the
    main run (what a second `finetune` on the same machine pays)."""
    enable_compilation_cache(args.cache)
    start = time.perf_counter()
    run = ours_train_step(16, args.batch, "bfloat16", args.depthwise, 65 if args.quick else 513)
    built = time.perf_counter() - start
    timer = jax_timer(run)
    print(json.dumps({"build_s": round(built, 2), "first_call_s": round(timer(), 2)}))


def environment():
    import jax

    info = {"python": platform.python_version(), "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()], "tensorflow_imported": False}
    import keras

    info["keras"] = keras.__version__
    try:
        import segmentation_models_pytorch
        import timm
        import torch

        info.update(torch=torch.__version__, timm=timm.__version__,
                    smp=segmentation_models_pytorch.__version__,
                    cudnn_tf32=torch.backends.cudnn.allow_tf32,
                    gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
        torch.backends.cudnn.benchmark = True
    except ImportError as error:
        info["torch_missing"] = str(error)
    return info


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="JSON file written after each config")
    parser.add_argument("--quick", action="store_true", help="tiny images: a smoke test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per round")
    parser.add_argument("--with-grouped-depthwise", action="store_true",
                        help="also time ours with XLA's grouped depthwise conv")
    parser.add_argument("--deadline", type=float, default=420,
                        help="seconds after which no new candidate is built")
    parser.add_argument("--configs", type=int, nargs="*", help="indices into CONFIGS")
    parser.add_argument("--profile", type=int, default=0, metavar="TOP",
                        help="after timing, profile each candidate and keep its TOP kernels")
    parser.add_argument("--first-step-warm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--depthwise", default="shifted", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_step_warm:
        return first_step_warm(args)

    began = time.monotonic()
    deadline = began + args.deadline
    cache = tempfile.mkdtemp(prefix="jax-cache-")
    enable_compilation_cache(cache)
    result = {"environment": environment(), "command": " ".join(sys.argv), "configs": []}
    chosen = args.configs if args.configs is not None else range(len(CONFIGS))
    for index in chosen:
        config = CONFIGS[index]
        print(f"{config['job']} OS {config['output_stride']} batch {config['batch']}", flush=True)
        depthwise_paths = ("xla", "shifted") if args.with_grouped_depthwise else ("shifted",)
        entries = measure(config, args.quick, args.rounds, args.repeats, deadline, depthwise_paths,
                          args.profile)
        result["configs"].append({key: config[key] for key in ("job", "output_stride", "batch")}
                                 | {"results": entries})
        if config["job"] == "train" and "first_step_warm" not in result and any(
                "first_call_s" in e for e in entries.values()):
            command = [sys.executable, __file__, "--output", args.output, "--first-step-warm",
                       "--cache", cache, "--batch", str(config["batch"])] + (
                ["--quick"] if args.quick else [])
            done = subprocess.run(command, capture_output=True, text=True)
            lines = done.stdout.strip().splitlines()
            result["first_step_warm"] = (json.loads(lines[-1]) if done.returncode == 0
                                         else {"error": done.stderr[-2000:]})
            print(f"  first step with a warm cache: {result['first_step_warm']}", flush=True)
        result["wall_s"] = round(time.monotonic() - began, 1)
        result["tensorflow_imported"] = bool(sys.modules.get("tensorflow"))
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    print(f"wrote {args.output} in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()

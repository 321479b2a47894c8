"""`deeplab-xception demo`: the whole pipeline on generated data, no downloads.

Asynchronous pretraining on a local parameter-server cluster, fine-tuning
from that backbone, evaluation, the multiply-add budget and segmentation
overlays, each step through the same commands a user runs.
"""

import glob
import pathlib
import shutil
import time

from deeplab_xception.errors import UserError


def register(subparsers):
    parser = subparsers.add_parser(
        "demo", help="run pretraining, fine-tuning, evaluation, budget and segmentation on "
                     "generated data (a few minutes on a laptop CPU)")
    parser.add_argument("--output-dir", default="demo_output",
                        help="where every output goes (default demo_output)")
    parser.add_argument("--workers", type=int, default=2,
                        help="asynchronous pretraining workers (default 2)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: remove an earlier demo's outputs from --output-dir "
                             "(by default a second run resumes from its checkpoints)")
    parser.set_defaults(run=run)


# What the demo writes in --output-dir; --fresh removes these and nothing else.
OUTPUTS = ("pretrain", "shapes", "finetune", "evaluation", "budget.png", "segmented")


def _step(number, text):
    print(f"\n[{number}/6] {text}", flush=True)


def _run(argv):
    from deeplab_xception.cli import main

    status = main(argv)
    if status:
        raise UserError(f"'deeplab-xception {argv[0]}' failed with exit status {status}")


def run(args):
    from deeplab_xception.segment.synthetic import write_synthetic_dataset

    if args.workers < 1:
        raise UserError(f"--workers: must be at least 1, got {args.workers}")
    out = pathlib.Path(args.output_dir).resolve()
    earlier = [out / name for name in OUTPUTS if (out / name).exists()]
    if earlier and args.fresh:
        print(f"--fresh: removing the earlier demo's {', '.join(p.name for p in earlier)} from {out}")
        for path in earlier:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    elif earlier:
        print(f"{out} holds an earlier demo: training resumes from its checkpoints, so finished "
              "steps are not run again (--fresh starts over)")
    pretrain_dir, segment_dir = out / "pretrain", out / "finetune"
    shapes = out / "shapes"
    start = time.time()

    _step(1, f"Pretraining xception_tiny asynchronously: 1 chief, {args.workers} workers and "
             "1 parameter server on 127.0.0.1, on generated shapes")
    _run(["pretrain", "--config", "pretrain_tiny.yaml",
          "--local-cluster", f"workers={args.workers},ps=1",
          "trainer.strategy=parameter_server", f"trainer.model_dir={pretrain_dir}",
          f"data.train={pretrain_dir}/data/train-*", f"data.eval={pretrain_dir}/data/validation-*"])

    _step(2, "Generating a segmentation set of colored shapes")
    write_synthetic_dataset(str(shapes))
    print(f"written to {shapes}")

    _step(3, "Fine-tuning DeepLabv3+ from the pretrained backbone (output stride 16)")
    _run(["finetune", "--config", "segment_tiny.yaml", f"data.root={shapes}",
          f"init.weights={pretrain_dir / 'model.keras'}", f"trainer.model_dir={segment_dir}"])
    model = str(segment_dir / "model.keras")

    _step(4, "Evaluating on the validation split at output stride 8, scales 0.75 1 1.25 and flip")
    _run(["evaluate", "--weights", model, "--data", str(shapes), "--split", "val",
          "--output-stride", "8", "--scales", "0.75", "1", "1.25", "--flip",
          "--output-dir", str(out / "evaluation")])

    _step(5, "Multiply-add budget of the full-size xception_65 DeepLabv3+ at 513x513")
    _run(["budget", "--plot", str(out / "budget.png")])

    _step(6, "Segmenting validation images, with overlays")
    images = sorted(glob.glob(str(shapes / "images" / "val_*")))[:4]
    _run(["segment", *images, "--weights", model, "--classes", str(shapes / "classes.txt"),
          "--overlay", "--json", "--output-dir", str(out / "segmented")])

    print(f"\nDone in {time.time() - start:.0f} s. Outputs in {out}:\n"
          f"  evaluation/report.json, evaluation/confusion_matrix.png  mIoU and confusion matrix\n"
          f"  segmented/*.overlay.png                                  predictions over the images\n"
          f"  budget.png                                               multiply-adds per output stride\n"
          f"  pretrain/, finetune/                                     checkpoints, TensorBoard logs, model.keras")
    return 0

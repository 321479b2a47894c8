from setuptools import find_packages, setup

# The two applications and the shipped configs sit at the top of the repository and install
# inside the package (deeplab_xception.pretrain, .segment, .configs), so site-packages holds
# deeplab_xception alone.
INSIDE = ("pretrain", "segment", "configs")
PACKAGES = find_packages(include=["deeplab_xception", "deeplab_xception.*"]) + [
    f"deeplab_xception.{package}" for package in find_packages(include=[f"{name}*" for name in INSIDE])]

# ONNX export (keras' exporter runs tf2onnx); the runtimes run exported files, as the tests do.
EXPORT = ["tf2onnx", "onnx"]
RUNTIMES = ["onnxruntime", "ai-edge-litert"]

setup(
    name="deeplab-xception",
    version="0.1.0",
    description="DeepLabv3+ semantic segmentation on a modified Xception backbone (Keras 3)",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={f"deeplab_xception.{name}": name for name in INSIDE},
    package_data={"deeplab_xception": ["data/*"], "deeplab_xception.configs": ["*.yaml"]},
    include_package_data=True,
    license="Apache-2.0",
    license_files=["LICENSE"],
    install_requires=[
        "tensorflow==2.20.*",
        "keras>=3.10",
        "numpy",
        "opencv-python-headless",
        "pycocotools",
        "pyyaml",
        "h5py",
        "matplotlib",
        "Pillow",
        "tqdm",
    ],
    extras_require={
        "export": EXPORT,
        "runtimes": RUNTIMES,
        # Fine-tuning on the JAX backend (CPU jax here; a GPU machine installs its CUDA wheel).
        "jax": ["jax", "tensorboard"],
        "test": ["pytest", "pytest-xdist", "jax[cpu]", "scikit-image", "tensorflow-datasets",
                 *EXPORT, *RUNTIMES],
    },
    entry_points={"console_scripts": ["deeplab-xception=deeplab_xception.cli:entry_point"]},
)

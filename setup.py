from setuptools import find_packages, setup

setup(
    name="deeplab-xception",
    version="0.1.0",
    description="DeepLabv3+ semantic segmentation on a modified Xception backbone (Keras 3)",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["deeplab_xception*", "pretrain*", "segment*"]),
    package_data={"deeplab_xception": ["data/*"]},
    include_package_data=True,
    install_requires=[
        "tensorflow==2.20.*",
        "tf-models-official==2.20.*",
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
        "export": ["tf2onnx", "onnx", "onnxruntime"],
        "test": ["pytest", "jax[cpu]", "scikit-image", "tf2onnx", "onnx", "onnxruntime"],
    },
    entry_points={"console_scripts": ["deeplab-xception=deeplab_xception.cli:entry_point"]},
)

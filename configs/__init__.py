"""The shipped configs: YAML read by `deeplab_xception.config`, installed inside the package."""

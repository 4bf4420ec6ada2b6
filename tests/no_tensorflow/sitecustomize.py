"""On PYTHONPATH, makes `import tensorflow` fail in that process: the GPU machine has JAX
and no TensorFlow, and tests/test_backends.py runs the entry points as if there."""

import sys


class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"{name} is blocked in this process (tests/no_tensorflow)")
        return None


sys.meta_path.insert(0, _NoTensorFlow())

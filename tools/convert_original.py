"""Convert a model file written by voxelmorph 0.2 (`VxmDense.save`, `.h5`) to a `.keras`
file that `keras.saving.load_model` reads under every backend (TensorFlow, JAX, torch).

    python tools/convert_original.py ../shared/models/vxm_dense_brain_T1_3D_mse.h5 \
        models/vxm_dense_brain_T1_3D_mse.keras

The original's deprecated options (`unet_half_res`, `int_downsize`) become their current
names (`svf_resolution=2`, `int_resolution`); the outputs are the original's (checked by
tests/test_reference_parity.py). The `.keras` file is written atomically.
"""

import argparse
import sys

from vxm_tf import cli

cli.quiet_tensorflow_import()
from vxm_tf import networks  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original", help="VxmDense .h5 written by voxelmorph 0.2")
    parser.add_argument("out", help="output .keras file")
    args = parser.parse_args(argv)
    try:
        model = networks.convert_original(args.original, args.out)
    except (ValueError, OSError) as err:
        sys.exit(f"error: {err}")
    config = model.get_config()
    print(f"wrote {args.out}: VxmDense {tuple(config['inshape'])}, svf_resolution "
          f"{config['svf_resolution']}, int_resolution {config['int_resolution']}, "
          f"int_steps {config['int_steps']}")


if __name__ == "__main__":
    main()

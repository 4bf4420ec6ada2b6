"""`python -m vxm_tf.models`: the `vxm-models` command (`vxm_tf.commands.models`)."""

from vxm_tf.commands.models import console

if __name__ == "__main__":
    console()

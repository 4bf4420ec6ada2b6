"""`python -m vxm_tf.train` runs `vxm-train` (`vxm_tf.commands.train`)."""

if __name__ == "__main__":
    from vxm_tf.commands.train import console

    console()

"""`python -m vxm_tf.evaluate` runs `vxm-evaluate` (`vxm_tf.commands.evaluate`)."""

if __name__ == "__main__":
    from vxm_tf.commands.evaluate import console

    console()

"""`python -m vxm_tf.register` runs `vxm-register` (`vxm_tf.commands.register`)."""

if __name__ == "__main__":
    from vxm_tf.commands.register import console

    console()

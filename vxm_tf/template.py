"""`python -m vxm_tf.template` runs `vxm-template` (`vxm_tf.commands.template`)."""

if __name__ == "__main__":
    from vxm_tf.commands.template import console

    console()

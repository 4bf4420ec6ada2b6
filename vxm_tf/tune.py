"""`python -m vxm_tf.tune` runs `vxm-tune` (`vxm_tf.commands.tune`)."""

if __name__ == "__main__":
    from vxm_tf.commands.tune import console

    console()

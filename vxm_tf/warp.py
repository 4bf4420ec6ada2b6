"""`python -m vxm_tf.warp` runs `vxm-warp` (`vxm_tf.commands.warp`)."""

if __name__ == "__main__":
    from vxm_tf.commands.warp import console

    console()

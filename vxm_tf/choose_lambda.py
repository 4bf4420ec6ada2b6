"""`python -m vxm_tf.choose_lambda` runs `vxm-choose-lambda` (`vxm_tf.commands.choose_lambda`)."""

if __name__ == "__main__":
    from vxm_tf.commands.choose_lambda import console

    console()

"""The command-line programs, one module each: flags, a `main` that calls the library, and
`console`, the console script's entry point (`setup.cfg`).

| command | module | the library it calls |
|---|---|---|
| `vxm-register` | `commands.register` | `workflows.register_files`, `workflows.register_list` |
| `vxm-warp` | `commands.warp` | `workflows.warp_file` |
| `vxm-train` | `commands.train` | `trainer.train_and_evaluate` |
| `vxm-evaluate` | `commands.evaluate` | `evaluation.evaluate_model` |
| `vxm-tune` | `commands.tune` | `tuning.run_search` |
| `vxm-choose-lambda` | `commands.choose_lambda` | `lambda_choice.choose_lambda_on_split` |
| `vxm-template` | `commands.template` | `training.template.write_templates` |
| `vxm-models` | `commands.models` | `models` |

`python -m vxm_tf.<command>` (e.g. `python -m vxm_tf.register`) runs the same programs.
"""

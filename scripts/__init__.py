"""The command-line scripts, shipped with the package as `social_align.scripts`.

From a clone: `python scripts/train_dpo.py ...`. From an installed wheel: `python -m social_align.scripts.train_dpo ...`,
or `accelerate launch --config_file CONFIG -m social_align.scripts.train_dpo ...`; `social-align scripts` lists them and
where the accelerate configs (`social_align/scripts/configs/`) are.
"""

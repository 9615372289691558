#!/usr/bin/env python
"""Pretrain a base policy of the toy world as the quickstart does, measure its fluency on the held-out questions the
evaluation asks, and save it (`save_pretrained` layout, half precision by default) with `fluency.json` beside it.

    python scripts/make_base.py --output_dir runs/base-fluent --dtype bf16
    python scripts/quickstart.py --base_model runs/base-fluent      # every stage starts from it

Every size and pretraining setting of the quickstart is a flag, with the quickstart's default:

    python scripts/make_base.py --output_dir runs/base-256x4 --hidden_size 256 --num_layers 4 --pretrain_steps 960
"""
import argparse, json

def main(argv=None):
    from dataclasses import fields
    from social_align.quickstart import QuickstartConfig, BASE_KEYS, make_base
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--output_dir', '--output-dir', default='runs/base-fluent', help='the folder to write')
    p.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16', 'fp32'], help='dtype of the saved weights')
    p.add_argument('--eval_samples', type=int, default=8, help='answers per held-out question for the fluency measure')
    p.add_argument('--no_progress', action='store_true', help='no progress bar')
    defaults = QuickstartConfig()
    for f in fields(QuickstartConfig):
        if f.name in BASE_KEYS:
            p.add_argument(f'--{f.name}', type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name),
                           help=f.metadata.get('help', ''))
    args = p.parse_args(argv)
    info = make_base(args.output_dir, dtype=args.dtype, eval_samples=args.eval_samples, progress=not args.no_progress,
                     **{k: getattr(args, k) for k in BASE_KEYS})
    print(json.dumps(info['fluency'], indent=1))
    print(f"{info['parameters']} parameters, {info['megabytes']} MB in {args.output_dir}; fluent {info['fluency']['fluent']:.1%}")

if __name__ == '__main__': main()

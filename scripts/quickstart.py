"""Run the social_align quickstart on the embedded default (CPU, no downloads): the pipeline as a script, for
`accelerate launch` or plain `python`.

    python scripts/quickstart.py --output_dir runs/quickstart
    python scripts/quickstart.py --base_model runs/base-fluent     # start from a base scripts/make_base.py made
"""
import argparse

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--output_dir', '--output-dir', default='runs/quickstart', help='where models, data, figures and the report go')
    p.add_argument('--seed', type=int, default=0, help='random seed')
    p.add_argument('--base_model', '--base-model', default=None, help='a base policy folder to start from instead of pretraining one')
    p.add_argument('--reduced', action='store_true', help='the small version the tests run (about a minute; too small to show a gain)')
    args = p.parse_args(argv)
    from social_align.quickstart import quickstart, REDUCED_SETTINGS
    quickstart(output_dir=args.output_dir, seed=args.seed, base_model=args.base_model, **(REDUCED_SETTINGS if args.reduced else {}))

if __name__ == '__main__': main()

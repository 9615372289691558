"""The embedded-default pipeline as a script, for `accelerate launch` or plain `python`.

    python scripts/quickstart.py --output-dir runs/quickstart
"""
import argparse

def main(argv=None):
    p = argparse.ArgumentParser(description='Run the social_align quickstart on the embedded default (CPU, no downloads).')
    p.add_argument('--output-dir', default='runs/quickstart', help='where models, data, figures and the report go')
    p.add_argument('--seed', type=int, default=0, help='random seed')
    p.add_argument('--reduced', action='store_true', help='the small version the tests run (about a minute; too small to show a gain)')
    args = p.parse_args(argv)
    from social_align.quickstart import quickstart, REDUCED_SETTINGS
    quickstart(output_dir=args.output_dir, seed=args.seed, **(REDUCED_SETTINGS if args.reduced else {}))

if __name__ == '__main__': main()

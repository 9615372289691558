"""Build Stable Alignment training data from a Sandbox interaction log: imitation, self-critique and realignment
samples grouped by query into `ranked` JSONL (the input of scripts/train_alignment.py), plus statistics and figures.

    python scripts/build_sandbox_data.py --log_path world/interactions.jsonl --output_path data/sandbox.jsonl \\
        --self_critic_ratio 0.1 --realignment_ratio 0.1 --seed 0

Writes OUTPUT_PATH, <stem>_stats.json, <stem>_alignment_by_round.png and <stem>_rating_histograms.png beside it.
"""
import sys
from dataclasses import dataclass, field

from social_align.trainers.command_line import parse_cli


@dataclass
class SandboxDataArguments:
    "Where the Sandbox log is, where the training data goes, and how it is sampled."
    log_path: str = field(metadata={'help': 'the Sandbox log: .jsonl (one interaction record a line) or a .json list'})
    output_path: str = field(metadata={'help': 'the ranked JSONL to write; the stats JSON and the figures go beside it'})
    self_critic_ratio: float = field(default=0.1, metadata={'help': 'self-critique samples per imitation sample (0.1: one per ten)'})
    realignment_ratio: float = field(default=0.1, metadata={'help': 'realignment samples per imitation sample (0.1: one per ten)'})
    seed: int = field(default=0, metadata={'help': 'seed of the sampling (same log, ratios and seed: same data)'})
    plots: bool = field(default=True, metadata={'help': 'draw the alignment-by-round and rating-histogram figures'})


def parse_args(argv=None):
    "(SandboxDataArguments,) from the command line, or from a single .json/.yaml file."
    return parse_cli((SandboxDataArguments,), argv, description=__doc__)


def main(argv=None):
    (args,) = parse_args(argv)
    from social_align.core import DataError
    from social_align.sandbox_data import build_training_data, output_paths
    try:
        ranked, stats = build_training_data(args.log_path, args.output_path, args.self_critic_ratio,
                                            args.realignment_ratio, args.seed, plots=args.plots)
    except (DataError, FileNotFoundError, ValueError) as e: sys.exit(f'error: {e}')
    c = stats['counts']
    print(f"{c['records']} records -> {c['imitation']} imitation, {c['self_critique']} self-critique "
          f"(of {c['self_critique_candidates']}), {c['realignment']} realignment (of {c['realignment_candidates']}) samples; "
          f"{c['ranked_queries']} queries, {c['ranked_responses']} responses in {args.output_path} "
          f"({c['missing_alignment_before'] + c['missing_alignment_after']} unparsed scores skipped, "
          f"{c['duplicates_merged']} duplicates merged); stats in {output_paths(args.output_path)['stats']}")


if __name__ == '__main__': main()

#!/usr/bin/env python
"""Run the Stable Alignment Sandbox: a size x size society of LM agents that answer, rate and revise (social_align.sandbox).

Every agent uses --model_name_or_path. The observer is an LM judge (--observer_model_name_or_path, default: the
agents' model) or a reward model mapped onto 1-7 (--reward_model_name_or_path; the affine map uses --rm_low/--rm_high,
or the 5%/95% reward quantiles of the seed memories' dialogues). Every SandboxConfig setting is a flag.

    python scripts/simulate.py --model_name_or_path runs/base --size 5 --rounds 10 \\
        --init_setting mixed_half_half --global_interaction True --output_dir runs/sandbox

Writes interactions.jsonl (one `interaction` record per agent per round), stats.jsonl (one line per round) and
state/ into --output_dir. Run the same command again to resume after an interruption (even kill -9): the finished
rounds are kept, a partly written round is redone, and no record is lost or duplicated. A resume must use the
settings the world was made with (recorded in resume_settings.json; only --rounds, --output_dir, the paths of
unchanged question/memory files, --device and --progress may change): otherwise it stops, naming each difference.
"""
import sys
from dataclasses import dataclass, field


@dataclass
class SimulateArguments:
    model_name_or_path: str = field(metadata={'help': 'the agents\' causal LM (local folder or hub name)'})
    observer_model_name_or_path: str | None = field(default=None, metadata={'help': 'LM judge (default: the agents\' model)'})
    reward_model_name_or_path: str | None = field(default=None, metadata={'help': 'a reward model as the observer instead of an LM judge'})
    rm_low: float | None = field(default=None, metadata={'help': 'reward mapped to 1 (with --rm_high; default: calibrated)'})
    rm_high: float | None = field(default=None, metadata={'help': 'reward mapped to 7'})
    embedder_name_or_path: str | None = field(default=None, metadata={'help': 'sentence encoder of the memories (default: packaged MiniLM)'})
    backend: str = field(default='hf', metadata={'help': 'hf or vllm'})
    batch_size: int = field(default=64, metadata={'help': 'hf backend: sequences per generate call'})
    device: str | None = field(default=None, metadata={'help': 'cpu, cuda, ... (default: the best available)'})
    dtype: str = field(default='auto', metadata={'help': 'model dtype: auto, fp32, bf16, fp16'})
    as_chat: bool = field(default=False, metadata={'help': 'wrap prompts as one user turn of the chat template'})
    progress: bool = field(default=True, metadata={'help': 'show a progress bar per round'})



# flags that do not change what the simulation writes; every other flag and setting must stay the same on a resume
RUN_ONLY = ('device', 'progress')


def make_generator(path, args):
    from social_align.generation import HFGenerator, VLLMGenerator
    if args.backend == 'hf': return HFGenerator(path, batch_size=args.batch_size, device=args.device, dtype=args.dtype, as_chat=args.as_chat)
    if args.backend == 'vllm': return VLLMGenerator(path, dtype=args.dtype, as_chat=args.as_chat)
    sys.exit(f"simulate.py: error: --backend must be 'hf' or 'vllm', got {args.backend!r}")


def main(argv=None):
    from social_align.trainers.base import parse_cli
    from social_align.sandbox import SandboxConfig
    args, cfg = parse_cli((SimulateArguments, SandboxConfig), argv, description=__doc__)
    from social_align.core import DataError, ResumeSettingsError
    from social_align.sandbox import run_sandbox, LMJudge, RewardModelJudge, load_seed_memories
    from social_align.models import Embedder, load_reward_model, load_tokenizer
    from social_align.toyworld import dialogue_text
    try: cfg.check()
    except ValueError as e: sys.exit(f'simulate.py: error: {e}')
    gen = make_generator(args.model_name_or_path, args)
    if args.reward_model_name_or_path:
        rm, rm_tok = load_reward_model(args.reward_model_name_or_path, device=args.device), load_tokenizer(args.reward_model_name_or_path)
        mem = load_seed_memories(cfg.seed_memories_path)
        calib = [dialogue_text(q, a) for lab in ('good', 'bad') for q, a in mem[lab]]
        observer = RewardModelJudge(rm, rm_tok, args.rm_low, args.rm_high, calibration_texts=calib)
    else:
        obs = make_generator(args.observer_model_name_or_path, args) if args.observer_model_name_or_path else gen
        observer = LMJudge(obs, cfg.retries, cfg.observer_temperature, cfg.max_new_tokens)
    settings = {k: v for k, v in vars(args).items() if k not in RUN_ONLY}
    try: path = run_sandbox(cfg, gen, observer, embedder=Embedder(args.embedder_name_or_path, device=args.device),
                            progress=args.progress, settings=settings)
    except DataError as e: sys.exit(f'simulate.py: error: bad data: {e}')
    except ResumeSettingsError as e: sys.exit(f'simulate.py: error: {e}')
    print(f'records: {path}')


if __name__ == '__main__': main()

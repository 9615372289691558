"""ALMoST synthetic feedback, one stage per run (SPEC §2.1-2.4).

    # PG: mine prompts (one a line) from a seed file (default: the built-in seed queries)
    python scripts/synthetic_feedback.py --mode pg --model_name_or_path MODEL --output_path data/prompts.txt --num_generation 1000
    # RG: answer them with every configuration of a JSON list [{"name", "model", "demonstrations": "hhh"|"faithful"|FILE, "n_shot"}]
    python scripts/synthetic_feedback.py --mode rg --prompts_path data/prompts.txt --configurations_path configs.json --output_path data/rg
    # CS: pair the answers down a rubric (JSON list of levels, best first, e.g. [["big-hhh-5"], ["big-hhh-3", "small-hhh-5"], ["small-faithful-3"]])
    python scripts/synthetic_feedback.py --mode cs --rg_dir data/rg --rubric_path rubric.json --output_path data/pairs.jsonl
    # RMSP: RM-guided self-play dialogues -> SFT JSONL {messages} (after training a reward model on the cs output)
    python scripts/synthetic_feedback.py --mode rmsp --model_name_or_path MODEL --reward_model_name_or_path runs/rm \\
        --prompts_path data/prompts.txt --output_path data/rmsp_sft.jsonl --n_candidates 4 --n_turns 2

ALMoST's own command line works too: --output_dir DIR (pg writes DIR/prompts.txt; rg reads it and writes one
<configuration>.jsonl per run into DIR; cs reads DIR and writes DIR/comparison.jsonl), --prompt_file_path (pg: the
seed file; rg: the demonstrations, 'hhh', 'faithful', a JSON file or ALMoST's *_prompt.txt text layout, of one configuration of --model_name_or_path
named <model>-<demonstrations>-<n_shot>shot as ALMoST names it), --n_shot (pg default 10, rg 3), --rubric as a
space-separated list of configuration names best first (a comma joins tied names: --rubric big-hhh-5shot
big-hhh-3shot,small-hhh-5shot small-faithful-3shot), --use_hf (= --backend hf, the default here), --cache_dir:

    python scripts/synthetic_feedback.py --mode rg --output_dir data/almost --model_name_or_path MODEL \\
        --prompt_file_path hhh --n_shot 3 --use_hf
    python scripts/synthetic_feedback.py --mode cs --output_dir data/almost --rubric model-hhh-5shot model-hhh-3shot

Every stage resumes: PG continues up to --num_generation, RG generates only the prompts a configuration's
<name>.jsonl does not hold yet, RMSP plays the chunks of queries without a dialogue. Rerun a killed run with the same flags:
the chunk it stopped in is generated again whole (PG: --pg_chunk_size prompts; RG, RMSP: --batch_size prompts) with
a seed fixed by --seed and the chunk's place, so the resumed output is exactly that of an uninterrupted run (with a
deterministic backend). The CS output is preference JSONL {prompt, chosen, rejected, meta} for
scripts/train_reward.py (or TRL) as it is. Each run prints its counts (kept, dropped by rule) as one JSON line.

On several processes (GPUs), under accelerate launch or torchrun, RG and RMSP deal out their chunks: each process
makes its share on its own device into <output>.rank<r>-of-<N>.jsonl, and the main process merges them into the
output in prompt order, which is then the file one process writes; a killed run resumes on any number of processes.
PG runs --pg_calls_per_round generate calls side by side from one pool snapshot (use a multiple of N), every process
filters all of them alike and the main process writes the file: the same file for any N with the same
--pg_calls_per_round (1, the default, is the one-process loop). CS runs on the main process only (no model):

    accelerate launch --num_processes 8 scripts/synthetic_feedback.py --mode rg --prompts_path data/prompts.txt \\
        --configurations_path configs.json --output_path data/rg --batch_size 32
"""
import json, os, sys
from dataclasses import dataclass, field

MODES = ('pg', 'rg', 'cs', 'rmsp')

@dataclass
class SyntheticFeedbackArguments:
    "Flags of every stage; each mode uses its own (see the module docstring)."
    mode: str = field(metadata={'help': "the stage: 'pg', 'rg', 'cs' or 'rmsp'"})   # no argparse `choices`: parse_cli's unknown-flag check fills required flags with '_'
    output_path: str = field(default=None, metadata={'help': 'pg: prompts file (one a line); rg: folder of <configuration>.jsonl; cs: preference JSONL (or give --output_dir)'})
    output_dir: str = field(default=None, metadata={'help': "ALMoST's layout: one folder for every stage's inputs and outputs (prompts.txt, <configuration>.jsonl, comparison.jsonl)"})
    model_name_or_path: str = field(default=None, metadata={'help': 'pg: the model that writes queries; rg: the model of --prompt_file_path; rmsp: the prompted model that plays both sides (local folder or hub name)'})
    reward_model_name_or_path: str = field(default=None, metadata={'help': 'rmsp: the reward model that picks the best assistant turn', 'aliases': ['--reward_model_path']})
    cache_dir: str = field(default=None, metadata={'help': 'where models from the hub are downloaded (from_pretrained cache_dir; vLLM download_dir)'})
    n_candidates: int = field(default=4, metadata={'help': 'rmsp: assistant turns proposed per step'})
    n_turns: int = field(default=2, metadata={'help': 'rmsp: assistant turns per dialogue'})
    demonstrations: str = field(default='hhh', metadata={'help': "rmsp: demonstration set of the prompted model ('hhh', 'faithful', a JSON file or ALMoST's *_prompt.txt text layout)"})
    rmsp_n_shot: int = field(default=3, metadata={'help': 'rmsp: demonstrations in the prompt'})
    drop_bad: bool = field(default=True, metadata={'help': 'rmsp: never pick a BAD candidate'})
    seed_path: str = field(default=None, metadata={'help': 'pg: seed file, first line the instruction, then seed queries (default: the built-in one)'})
    prompt_file_path: str = field(default=None, metadata={'help': "ALMoST's flag: pg: the seed file (as --seed_path); rg: demonstrations ('hhh', 'faithful', a JSON file or ALMoST's *_prompt.txt text layout) of one configuration of --model_name_or_path"})
    num_generation: int = field(default=100, metadata={'help': 'pg: prompts to mine in total'})
    n_shot: int = field(default=None, metadata={'help': 'pg: Query: examples per generation prompt (default 10); rg with --prompt_file_path: demonstrations in the prompt (default 3)'})
    max_calls: int = field(default=200, metadata={'help': 'pg: give up after this many generate calls (in one run)'})
    pg_chunk_size: int = field(default=64, metadata={'help': 'pg: mined prompts per resumable chunk (a rerun regenerates the chunk it stopped in)'})
    pg_calls_per_round: int = field(default=1, metadata={'help': 'pg: generate calls drawn from one pool snapshot, made side by side on a launch\'s processes (use a multiple of the number of processes)'})
    min_chars: int = field(default=30, metadata={'help': 'pg: shorter queries need final punctuation'})
    max_chars: int = field(default=250, metadata={'help': 'pg: longer queries are dropped'})
    rouge_threshold: float = field(default=0.5, metadata={'help': 'pg: drop queries with ROUGE-L F >= this against any seed or mined one'})
    prompts_path: str = field(default=None, metadata={'help': 'rg, rmsp: queries, one a line (the pg output; default with --output_dir: its prompts.txt)', 'aliases': ['--queries_path']})
    configurations_path: str = field(default=None, metadata={'help': 'rg: JSON list of {name, model, demonstrations, n_shot}'})
    only: str = field(default=None, metadata={'help': 'rg: comma-separated configuration names to run (default: all)'})
    rg_dir: str = field(default=None, metadata={'help': 'cs: folder of the rg outputs'})
    rubric_path: str = field(default=None, metadata={'help': 'cs: JSON list of levels (each a name or a list of tied names), best first'})
    rubric: list[str] = field(default=None, metadata={'help': 'cs: the levels on the command line instead, best first, space-separated; tied names joined by commas'})
    heuristic: bool = field(default=True, metadata={'help': 'cs: apply the heuristic length filter'})
    heuristic_k: float = field(default=0.5, metadata={'help': 'cs: drop a pair whose chosen is shorter than the rejected and than mean - k*std'})
    temperature: float = field(default=None, metadata={'help': 'sampling temperature (default: 1.2 for pg, 1.0 for rg)'})
    top_p: float = field(default=0.9, metadata={'help': 'nucleus sampling mass'})
    max_new_tokens: int = field(default=None, metadata={'help': 'tokens per completion (default: 64 for pg, 384 for rg)'})
    batch_size: int = field(default=16, metadata={'help': 'pg: candidates per generate call; rg: prompts per generate call; hf backend: sequences per batch'})
    backend: str = field(default='hf', metadata={'help': "generation engine: 'hf' (transformers) or 'vllm'", 'choices': ['hf', 'vllm'], 'aliases': ['--generation_backend']})
    use_hf: bool = field(default=False, metadata={'help': "ALMoST's flag: --backend hf"})
    device: str = field(default=None, metadata={'help': "'cpu', 'cuda', ... (default: the best available; under a multi-process launch, the process's own)"})
    dtype: str = field(default='auto', metadata={'help': "'auto', 'fp32', 'bf16' or 'fp16'"})
    seed: int = field(default=0, metadata={'help': "sampling seed (each chunk's seed is derived from it and the chunk's first record)"})


def need(args, *names):
    missing = [n for n in names if getattr(args, n) in (None, '')]
    if missing: sys.exit(f"error: --mode {args.mode} needs --{' --'.join(missing)}")


def hub_kwargs(args)->dict:
    "from_pretrained keyword arguments of every model the run loads."
    return {'cache_dir': args.cache_dir} if args.cache_dir else {}


def make_generator(args, model_path):
    from social_align.generation import HFGenerator, VLLMGenerator
    from social_align.models import load_causal_lm, load_tokenizer
    tok = load_tokenizer(model_path, **hub_kwargs(args))
    if args.backend == 'vllm':
        return VLLMGenerator(model_path, tok, dtype=args.dtype, **({'download_dir': args.cache_dir} if args.cache_dir else {}))
    return HFGenerator(load_causal_lm(model_path, dtype=args.dtype, device=args.device, **hub_kwargs(args)), tok, batch_size=args.batch_size)


def almost_defaults(args):
    "Fill the stage's paths from ALMoST's flags (--output_dir, --prompt_file_path, --use_hf); exit naming a conflict."
    if args.use_hf:
        if args.backend == 'vllm': sys.exit('error: --use_hf and --backend vllm contradict each other')
        args.backend = 'hf'
    if args.rubric and args.rubric_path: sys.exit('error: give --rubric or --rubric_path, not both')
    if args.output_dir:
        from pathlib import Path
        d = Path(args.output_dir)
        if args.mode in ('rg', 'rmsp') and not args.prompts_path: args.prompts_path = str(d/'prompts.txt')
        if args.mode == 'cs' and not args.rg_dir: args.rg_dir = str(d)
        if not args.output_path:
            args.output_path = str({'pg': d/'prompts.txt', 'rg': d, 'cs': d/'comparison.jsonl', 'rmsp': d/'rmsp_sft.jsonl'}[args.mode])
        if args.mode in ('pg', 'rg'): d.mkdir(parents=True, exist_ok=True)
    if args.prompt_file_path and args.mode == 'pg':
        if args.seed_path: sys.exit('error: --prompt_file_path is the pg seed file: give it or --seed_path, not both')
        args.seed_path = args.prompt_file_path


def seed_configuration(args):
    "The one RG configuration of ALMoST's command line: --model_name_or_path with --prompt_file_path and --n_shot."
    from pathlib import Path
    import social_align.synthetic_feedback as sf
    demos, n = args.prompt_file_path, 3 if args.n_shot is None else args.n_shot
    kind = demos if demos in ('hhh', 'faithful') else Path(demos).stem.removesuffix('_prompt').lower()
    name = f'{Path(str(args.model_name_or_path).rstrip("/")).name.lower()}-{kind}-{n}shot'
    return sf.RGConfiguration(name=name, model=args.model_name_or_path, demonstrations=demos, n_shot=n).check(f'--prompt_file_path {demos}')


def report(stats):
    "Print a stage's counts as one JSON line, on the main process only (every process holds the same counts)."
    from social_align.core import process_info
    if process_info()[0] == 0: print(json.dumps(stats), flush=True)


def main(argv=None):
    from social_align.trainers.command_line import parse_cli, use_cpu_ranks_without_accelerator
    use_cpu_ranks_without_accelerator()                               # a launch on a machine with no GPU: gloo between CPU ranks
    (args,) = parse_cli((SyntheticFeedbackArguments,), argv, __doc__)
    if args.mode not in MODES:
        print(f"synthetic_feedback.py: error: argument --mode: invalid choice: {args.mode!r} (choose from {', '.join(MODES)})", file=sys.stderr)
        sys.exit(2)
    almost_defaults(args)
    need(args, 'output_path')
    from social_align.core import process_info
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:                       # join the launch's processes (gloo on CPU ranks)
        from social_align.core import distributed_state
        state = distributed_state()
        if args.device is None: args.device = str(state.device)          # every process on its own device
    import social_align.synthetic_feedback as sf
    if args.mode == 'pg':
        need(args, 'model_name_or_path')
        cfg = sf.PGConfig(num_generation=args.num_generation, n_shot=10 if args.n_shot is None else args.n_shot, batch_size=args.batch_size,
                          temperature=1.2 if args.temperature is None else args.temperature, top_p=args.top_p,
                          max_new_tokens=args.max_new_tokens or 64, min_chars=args.min_chars, max_chars=args.max_chars,
                          rouge_threshold=args.rouge_threshold, max_calls=args.max_calls, chunk_size=args.pg_chunk_size,
                          calls_per_round=args.pg_calls_per_round, seed=args.seed).check()
        with make_generator(args, args.model_name_or_path) as gen:
            stats = sf.mine_prompts(args.seed_path or sf.almost_asset('seed_prompts.txt'), gen, args.output_path, cfg, progress=True)
        report(stats)
    elif args.mode == 'rg':
        if args.prompt_file_path:
            need(args, 'prompts_path', 'model_name_or_path')
            if args.configurations_path: sys.exit('error: give --configurations_path or --prompt_file_path (one configuration), not both')
            confs = [seed_configuration(args)]
        else:
            need(args, 'prompts_path', 'configurations_path')
            confs = sf.load_configurations(args.configurations_path)
        prompts = sf.load_prompts(args.prompts_path)
        if args.only:
            wanted = args.only.split(',')
            unknown = [n for n in wanted if n not in {c.name for c in confs}]
            if unknown: sys.exit(f'error: --only names {unknown}, not in {args.configurations_path}')
            confs = [c for c in confs if c.name in wanted]
        cfg = sf.RGConfig(temperature=1.0 if args.temperature is None else args.temperature, top_p=args.top_p,
                          max_new_tokens=args.max_new_tokens or 384, chunk_size=args.batch_size, seed=args.seed)
        for c in confs: sf.load_demonstrations(c.demonstrations)          # fail before any model is loaded
        gen, gen_model = None, None
        try:
            for c in confs:
                if c.model != gen_model:                                    # one model loaded at a time
                    if gen is not None: gen.close()
                    gen, gen_model = make_generator(args, c.model), c.model
                report(sf.generate_responses(prompts, gen, c, args.output_path, cfg, progress=True))
        finally:
            if gen is not None: gen.close()
    elif args.mode == 'rmsp':
        need(args, 'model_name_or_path', 'reward_model_name_or_path', 'prompts_path')
        from social_align.models import load_reward_model, load_tokenizer
        cfg = sf.RMSPConfig(n_candidates=args.n_candidates, n_turns=args.n_turns, demonstrations=args.demonstrations,
                            n_shot=args.rmsp_n_shot, temperature=1.0 if args.temperature is None else args.temperature,
                            top_p=args.top_p, max_new_tokens=args.max_new_tokens or 128, drop_bad=args.drop_bad,
                            chunk_size=args.batch_size, seed=args.seed).check()
        prompts = sf.load_prompts(args.prompts_path)
        sf.load_demonstrations(cfg.demonstrations)
        rm = load_reward_model(args.reward_model_name_or_path, dtype=args.dtype, device=args.device, **hub_kwargs(args))
        rm_tok = load_tokenizer(args.reward_model_name_or_path, **hub_kwargs(args))
        with make_generator(args, args.model_name_or_path) as gen:
            stats = sf.self_play(prompts, gen, rm, rm_tok, args.output_path, cfg, progress=True)
        report(stats)
    elif process_info()[0] == 0:                                        # cs: no model, cheap and central: the main process only
        if not args.rubric: need(args, 'rg_dir', 'rubric_path')
        else: need(args, 'rg_dir')
        rubric = [lv.split(',') if ',' in lv else lv for lv in args.rubric] if args.rubric else args.rubric_path
        ds, stats = sf.build_comparisons(args.rg_dir, rubric, args.output_path, heuristic=args.heuristic, k=args.heuristic_k)
        print(json.dumps(stats))


if __name__ == '__main__':
    main()
    from social_align.core import finish_processes
    finish_processes()   # every process waits for the others, then leaves the launch's process group

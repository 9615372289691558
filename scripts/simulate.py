#!/usr/bin/env python
"""Run the Stable Alignment Sandbox: a size x size society of LM agents that answer, rate and revise (social_align.sandbox).

Every agent uses --model_name_or_path, or --society_config names which agents use which model (local or served) and
which model observes. The observer is an LM judge (--observer_model_name_or_path, default: the agents' model) or a
reward model mapped onto 1-7 (--reward_model_name_or_path; the affine map uses --rm_low/--rm_high, or the 5%/95%
reward quantiles of the seed memories' dialogues). Every SandboxConfig setting is a flag.

    python scripts/simulate.py --model_name_or_path runs/base --size 5 --rounds 10 \\
        --init_setting mixed_half_half --global_interaction True --output_dir runs/sandbox

Any OpenAI-compatible server (vllm serve, TGI, SGLang, llama.cpp, a hosted API): --model_name_or_path is then the
served model's name (default: the first the server lists), the key is read from the variable --api_key_env names:

    python scripts/simulate.py --backend openai --base_url http://127.0.0.1:8000/v1 --model_name_or_path tiny-a \\
        --api_key_env OPENAI_API_KEY --max_concurrency 16 --output_dir runs/sandbox

A society of mixed models (YAML or JSON; see nbs/10_sandbox.ipynb for every key):

    # society.yaml
    models:
      base:    {backend: openai, base_url: http://127.0.0.1:8001/v1, model: tiny-a}
      aligned: {backend: openai, base_url: http://127.0.0.1:8002/v1, model: tiny-b}
    agents:   [{model: base, label: bad}, {model: aligned, label: good}]     # or share: 0.5, or ids: [0, 4]
    observer: {model: aligned}

    python scripts/simulate.py --society_config society.yaml --size 3 --rounds 10 --output_dir runs/society

A phase's prompts go to an OpenAI-compatible server in as few requests as --prompts_per_request allows (the
completions endpoint takes a list of prompts), so a round costs about 5 requests per model, whatever the size. Several
servers of one model: --base_url http://h1:8000/v1,http://h2:8000/v1 (or `base_url: [..., ...]` in a society config);
requests go to them in turn. On a cluster, one process per GPU, each phase's prompts split across the processes
(the records do not depend on the number of processes where sampling is per request: vLLM, HF greedy):

    accelerate launch --num_processes 8 scripts/simulate.py --backend vllm --model_name_or_path runs/base \
        --size 10 --rounds 10 --output_dir runs/sandbox

With --backend openai and --as_chat, prompts are formatted with the chat template of --tokenizer_name_or_path (or of
the served model, where its name is a local folder) and sent to /completions, so the server sees the text the hf
backend would; with no such tokenizer they go to /chat/completions and the server applies its own template.

Writes interactions.jsonl (one `interaction` record per agent per round, with the agent's `model`), stats.jsonl (one
line per round) and state/ into --output_dir. Run the same command again to resume after an interruption (even
kill -9, or a server that went down): the finished rounds are kept, a partly written round is redone, and no record
is lost or duplicated. A resume must use the settings the world was made with (recorded in resume_settings.json,
with the society config's contents; only --rounds, --output_dir, the paths of unchanged question/memory/society
files, --device, --progress and where and how fast a model is served (--base_url, --api_key_env, --max_concurrency,
--timeout, --prompts_per_request) and the number of processes may change): otherwise it stops, naming each difference.
"""
import sys
from dataclasses import dataclass, field


@dataclass
class SimulateArguments:
    model_name_or_path: str | None = field(default=None, metadata={'help': "the agents' causal LM (local folder or hub name; "
                                           "--backend openai: the served model's name, default: the first the server lists)"})
    society_config: str | None = field(default=None, metadata={'help': 'a .yaml/.json file: the models, which agents use which, the observer '
                                       '(instead of --model_name_or_path)'})
    observer_model_name_or_path: str | None = field(default=None, metadata={'help': 'LM judge (default: the agents\' model)'})
    reward_model_name_or_path: str | None = field(default=None, metadata={'help': 'a reward model as the observer instead of an LM judge', 'aliases': ['--reward_model_path']})
    rm_low: float | None = field(default=None, metadata={'help': 'reward mapped to 1 (with --rm_high; default: calibrated)'})
    rm_high: float | None = field(default=None, metadata={'help': 'reward mapped to 7'})
    embedder_name_or_path: str | None = field(default=None, metadata={'help': 'sentence encoder of the memories (default: packaged MiniLM)'})
    backend: str = field(default='hf', metadata={'help': 'hf, vllm, or openai (an OpenAI-compatible server at --base_url)', 'aliases': ['--generation_backend']})
    base_url: str | None = field(default=None, metadata={'help': 'openai backend: the server, e.g. http://127.0.0.1:8000/v1; '
                                 'several servers of the same model: their URLs separated by commas (requests go to them in turn)'})
    api_key_env: str | None = field(default=None, metadata={'help': 'openai backend: the environment variable holding the API key '
                                    '(default: $OPENAI_API_KEY if set, else none)'})
    max_concurrency: int = field(default=8, metadata={'help': 'openai backend: requests in flight at once, per server'})
    timeout: float = field(default=120.0, metadata={'help': 'openai backend: seconds per request'})
    prompts_per_request: int = field(default=64, metadata={'help': 'openai backend: prompts in one completions request at most '
                                     '(a phase of the society goes in as few requests as this allows; 1: one request per prompt)'})
    tokenizer_name_or_path: str | None = field(default=None, metadata={'help': 'openai backend with --as_chat: format the chat template '
                                               'locally with this tokenizer (default: the served model, if its name is a local folder)',
                                                     'aliases': ['--tokenizer_name']})
    batch_size: int = field(default=64, metadata={'help': 'hf backend: sequences per generate call'})
    device: str | None = field(default=None, metadata={'help': 'cpu, cuda, ... (default: the best available)'})
    dtype: str = field(default='auto', metadata={'help': 'model dtype: auto, fp32, bf16, fp16'})
    as_chat: bool = field(default=False, metadata={'help': 'wrap prompts as one user turn of the chat template'})
    progress: bool = field(default=True, metadata={'help': 'show a progress bar per round'})



# flags that do not change what the simulation writes; every other flag and setting must stay the same on a resume
# (the society config's path is free: its contents are recorded and checked instead)
RUN_ONLY = ('device', 'progress', 'society_config', 'base_url', 'api_key_env', 'max_concurrency', 'timeout', 'prompts_per_request')
# the flags a society config's model entry takes as its defaults
MODEL_DEFAULTS = ('backend', 'dtype', 'batch_size', 'as_chat', 'max_concurrency', 'timeout', 'prompts_per_request')


def fail(msg):
    sys.exit(f'simulate.py: error: {msg}')


def model_spec(name, args):
    "A model entry for `make_generator` from the command line's flags (the agents' model, or the observer's)."
    spec = {k: getattr(args, k) for k in MODEL_DEFAULTS}
    if args.backend != 'openai': return {**spec, 'model_name_or_path': name}
    urls = [u.strip() for u in args.base_url.split(',') if u.strip()]
    return {**spec, 'base_url': urls[0] if len(urls) == 1 else urls, 'model': name, 'api_key_env': args.api_key_env,
            'tokenizer_name_or_path': args.tokenizer_name_or_path}


def check_args(args):
    "Refuse contradictory or missing flags before anything is loaded."
    from social_align.sandbox import SOCIETY_BACKENDS
    if args.backend not in SOCIETY_BACKENDS: fail(f'--backend must be one of {", ".join(SOCIETY_BACKENDS)}, got {args.backend!r}')
    if args.society_config:
        if args.model_name_or_path: fail('give --model_name_or_path or --society_config, not both')
        return
    if args.backend == 'openai':
        if not args.base_url: fail('--backend openai needs --base_url (e.g. http://127.0.0.1:8000/v1)')
    else:
        if not args.model_name_or_path: fail('--model_name_or_path (or --society_config) is required')
        for flag in ('base_url', 'api_key_env', 'tokenizer_name_or_path'):
            if getattr(args, flag): fail(f'--{flag} is for --backend openai (the backend is {args.backend!r})')


def make_observer(obs, rm_path, rm_low, rm_high, cfg, args):
    "The observer: a `RewardModelJudge` where a reward model is named, else an `LMJudge` on the generator `obs`."
    from social_align.sandbox import LMJudge, RewardModelJudge, load_seed_memories
    if not rm_path: return LMJudge(obs, cfg.retries, cfg.observer_temperature, cfg.max_new_tokens)
    from social_align.models import load_reward_model, load_tokenizer
    from social_align.toyworld import dialogue_text
    rm, rm_tok = load_reward_model(rm_path, device=args.device), load_tokenizer(rm_path)
    mem = load_seed_memories(cfg.seed_memories_path)
    calib = [dialogue_text(q, a) for lab in ('good', 'bad') for q, a in mem[lab]]
    return RewardModelJudge(rm, rm_tok, rm_low, rm_high, calibration_texts=calib)


def build_society(args, cfg):
    "`(each agent's generator, each agent's model name, the observer, {'society': its resume settings})` of --society_config."
    from social_align.core import DataError
    from social_align.generation import GenerationError
    from social_align.sandbox import load_society_config, society_generators, society_settings
    try: soc = load_society_config(args.society_config, cfg, {k: getattr(args, k) for k in MODEL_DEFAULTS})
    except (DataError, OSError) as e: fail(e)
    obs = soc['observer']
    if obs and (args.observer_model_name_or_path or args.reward_model_name_or_path):
        fail(f'{args.society_config} names the observer: drop --observer_model_name_or_path / --reward_model_name_or_path')
    if not obs and args.observer_model_name_or_path:
        fail(f'{args.society_config}: name the LM observer in the file (observer: {{model: NAME}}), not with --observer_model_name_or_path')
    if not obs and not args.reward_model_name_or_path:
        fail(f'{args.society_config}: no observer: add `observer: {{model: NAME}}` (one of its models) or pass --reward_model_name_or_path')
    obs = obs or {'reward_model_name_or_path': args.reward_model_name_or_path, 'rm_low': args.rm_low, 'rm_high': args.rm_high}
    try: gens, obs_gen = society_generators(soc, args.device)
    except GenerationError as e: fail(f'{args.society_config}: {e}')
    observer = make_observer(obs_gen, obs.get('reward_model_name_or_path'), obs.get('rm_low'), obs.get('rm_high'), cfg, args)
    return gens, soc['assignment'], observer, {'society': society_settings(soc)}


def build_single(args, cfg):
    "`(the agents' generator, None, the observer, {})` of --model_name_or_path and the observer flags."
    from social_align.generation import GenerationError
    from social_align.sandbox import make_generator
    try:
        gen = make_generator(model_spec(args.model_name_or_path, args), args.device)
        obs = gen
        if args.observer_model_name_or_path and not args.reward_model_name_or_path:
            obs = make_generator(model_spec(args.observer_model_name_or_path, args), args.device)
    except (GenerationError, ValueError, OSError) as e: fail(e)
    observer = make_observer(obs, args.reward_model_name_or_path, args.rm_low, args.rm_high, cfg, args)
    # a served model is identified by its name: record the one the server gave where the flag left it out
    return gen, None, observer, ({'model_name_or_path': gen.model} if args.backend == 'openai' else {})


def join_processes(args):
    "Under `accelerate launch`: join the launch's processes (gloo between CPU ranks on a machine with no GPU), each on its own device."
    import os
    from social_align.trainers.command_line import use_cpu_ranks_without_accelerator
    use_cpu_ranks_without_accelerator()
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:
        from social_align.core import distributed_state
        state = distributed_state()
        if args.device is None: args.device = str(state.device)
        import torch
        if args.backend == 'vllm' and not args.society_config and torch.cuda.is_available() and torch.cuda.device_count() > 1:
            # --backend vllm: the engine runs in a child process that takes the first GPU it sees; show it this process's own
            gpus = os.environ.get('CUDA_VISIBLE_DEVICES', ','.join(map(str, range(torch.cuda.device_count())))).split(',')
            os.environ['CUDA_VISIBLE_DEVICES'] = gpus[state.local_process_index % len(gpus)]
    from social_align.core import process_info
    return process_info()


def main(argv=None):
    from social_align.trainers.base import parse_cli
    from social_align.sandbox import SandboxConfig
    args, cfg = parse_cli((SimulateArguments, SandboxConfig), argv, description=__doc__)
    from social_align.core import DataError, ResumeSettingsError
    from social_align.generation import GenerationError
    from social_align.sandbox import run_sandbox
    from social_align.models import Embedder
    try: cfg.check()
    except ValueError as e: fail(e)
    check_args(args)
    rank, _ = join_processes(args)
    gens, names, observer, extra = (build_society if args.society_config else build_single)(args, cfg)
    settings = {**{k: v for k, v in vars(args).items() if k not in RUN_ONLY}, **extra}
    try: path = run_sandbox(cfg, gens, observer, embedder=Embedder(args.embedder_name_or_path, device=args.device),
                            progress=args.progress, settings=settings, agent_models=names)
    except DataError as e: fail(f'bad data: {e}')
    except ResumeSettingsError as e: fail(e)
    except GenerationError as e:
        fail(f'generation failed: {e}\nThe finished rounds are kept in {cfg.output_dir}: run the same command again to resume.')
    if rank == 0: print(f'records: {path}')


if __name__ == '__main__':
    main()
    from social_align.core import finish_processes
    finish_processes()   # every process waits for the others, then leaves the launch's process group

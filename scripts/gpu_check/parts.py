"""The parts of the GPU check, run by `scripts/gpu_check/run.py` in child processes (one hang or crash costs one part).

    python -m scripts.gpu_check.parts --config CONFIG.json ITEM [ITEM ...]

runs each ITEM (env, build, sft, reward, stable_alignment, dpo, sso, ppo, rloo, raft, generation, mfu) in turn and
prints one `@@gpu_check {"event": "start", ...}` line before it and one `@@gpu_check {"event": "result", ...}` line
after it on stdout (everything else a library prints goes to stderr). An exception fails its item, not the process.
The models come from a config (no downloads): `build` trains a BPE tokenizer on the toy world's text, saves it with a
random-init Llama of the configured size in `work_dir/policy`, and every later item reads that folder.
"""
from __future__ import annotations
import argparse, contextlib, importlib.util, json, math, os, sys, tempfile, time, traceback, warnings
from pathlib import Path

MARK = '@@gpu_check '
TRAINERS = ('sft', 'reward', 'stable_alignment', 'dpo', 'sso', 'ppo', 'rloo', 'raft')
# import name -> why the check needs it
MODULES = {'torch': 'everything', 'transformers': 'everything', 'datasets': 'the trainers', 'accelerate': 'the trainers',
           'fastcore': 'social_align', 'safetensors': 'saving models', 'tokenizers': 'the tokenizer', 'peft': 'social_align.trainers',
           'yaml': 'social_align.trainers', 'httpx': 'social_align.generation', 'nbdev': 'the #| cuda cells (nbdev_test)',
           'execnb': 'the #| cuda cells (nbdev_test)', 'vllm': 'the vLLM generation', 'bitsandbytes': "30_trainer_base's 4-bit #| cuda cell",
           'trl': 'not needed here (bench_trainers.py compares against it)'}
REQUIRED = ('torch', 'transformers', 'datasets', 'accelerate', 'fastcore', 'safetensors', 'tokenizers', 'peft', 'yaml', 'httpx')


def emit(**rec):
    "One protocol line on stdout (the orchestrator reads these)."
    sys.stdout.write(MARK + json.dumps(rec, default=str) + '\n'); sys.stdout.flush()


def _device(cfg): return cfg['device']

def _quiet():
    warnings.filterwarnings('ignore')
    import datasets, transformers
    transformers.logging.set_verbosity_error(); datasets.disable_progress_bars()


@contextlib.contextmanager
def _peak_memory(cfg, out:dict):
    "Note the peak GPU memory the block allocated (GiB) in `out['peak_gpu_memory_gib']`."
    import torch
    cuda = _device(cfg) == 'cuda'
    if cuda: torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    try: yield
    finally:
        if cuda: out['peak_gpu_memory_gib'] = round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _sync(cfg):
    import torch
    if _device(cfg) == 'cuda': torch.cuda.synchronize()


# -- env -----------------------------------------------------------------------------------------------------
def part_env(cfg)->dict:
    "Versions, the device, and which modules are missing (without importing the optional ones)."
    missing = {m: why for m, why in MODULES.items() if importlib.util.find_spec(m) is None}
    out = dict(python=sys.version.split()[0], missing=missing)
    if 'torch' in missing or 'transformers' in missing:
        return dict(out, status='failed', error='torch and transformers must be importable: ' + ', '.join(sorted(missing)))
    import torch, transformers
    out.update(torch=torch.__version__, transformers=transformers.__version__, cuda_available=torch.cuda.is_available(),
               torch_cuda=torch.version.cuda)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count(),
                   bf16_supported=torch.cuda.is_bf16_supported())
    spec = importlib.util.find_spec('social_align')
    out['social_align'] = str(Path(spec.origin).parent) if spec else None
    problems = [f'{m} (needed by {MODULES[m]})' for m in REQUIRED if m in missing]
    if spec is None: problems.append('social_align is not importable (run from the repository root or set PYTHONPATH=.)')
    if _device(cfg) == 'cuda' and not torch.cuda.is_available(): problems.append('torch sees no CUDA device (use --cpu)')
    if problems: return dict(out, status='failed', error='missing: ' + '; '.join(problems))
    return dict(out, status='ok')


# -- the model -------------------------------------------------------------------------------------------------
def policy_dir(cfg)->Path: return Path(cfg['work_dir'])/'policy'

def _texts():
    from social_align.toyworld import toy_corpus
    return toy_corpus() + [s for s in SYSTEMS.values()]

SYSTEMS = dict(system='You are a helpful assistant.', p_system='Answer with warmth, honesty and respect.',
               n_system='Answer coldly and with contempt.')

def model_config(tok, arch:dict):
    "A Llama config of the check's size; `vocab` above the tokenizer's size pads the embedding (as Qwen's does)."
    from social_align.models import tiny_llama_config
    c = tiny_llama_config(tok, hidden_size=arch['hidden'], num_layers=arch['layers'], num_heads=arch['heads'],
                          intermediate_size=arch['intermediate'], max_position_embeddings=arch['max_position_embeddings'])
    c.vocab_size = max(len(tok), arch['vocab'])
    return c

def part_build(cfg)->dict:
    "Train the tokenizer and save it with a random-init policy (bf16 weights) in `work_dir/policy`."
    import torch
    from social_align.models import train_bpe_tokenizer, build_tiny_causal_lm, save_model
    arch = cfg['arch']
    tok = train_bpe_tokenizer(_texts(), vocab_size=arch['vocab'], model_max_length=arch['max_position_embeddings'])
    c = model_config(tok, arch)
    with torch.device(_device(cfg)): model = build_tiny_causal_lm(tok, config=c)
    n = sum(p.numel() for p in model.parameters())
    save_model(model.to(torch.bfloat16), tok, policy_dir(cfg))
    return dict(status='ok', parameters=n,
                matmul_parameters=n - model.get_input_embeddings().weight.numel(), tokenizer_size=len(tok), vocab_size=c.vocab_size,
                arch=dict(hidden=c.hidden_size, layers=c.num_hidden_layers, heads=c.num_attention_heads, intermediate=c.intermediate_size),
                path=str(policy_dir(cfg)))

def _tokenizer(cfg):
    from social_align.models import load_tokenizer
    return load_tokenizer(policy_dir(cfg))

def _fresh(cfg, reward:bool=False, seed:int=0):
    "A new fp32 model (bf16 autocast trains it) of the saved policy's config on the device: a causal LM or a reward model."
    import copy, torch
    from transformers import AutoConfig, LlamaForCausalLM, LlamaForSequenceClassification
    c = copy.deepcopy(AutoConfig.from_pretrained(policy_dir(cfg)))
    if reward: c.num_labels = 1
    torch.manual_seed(seed)
    with torch.device(_device(cfg)):
        m = (LlamaForSequenceClassification if reward else LlamaForCausalLM)(c)
    return m.float().eval()


# -- data ------------------------------------------------------------------------------------------------------
def _prefs(): from social_align.toyworld import toy_preferences; return toy_preferences()

def records(kind:str)->list:
    "The toy world's records in the shape each trainer reads."
    if kind == 'sft': return [{'prompt': r['prompt'], 'completion': r['chosen']} for r in _prefs()]
    if kind == 'ranked': from social_align.toyworld import toy_ranked; return toy_ranked()
    if kind == 'principled': return [dict(r, raw=r['rejected'], **SYSTEMS) for r in _prefs()]
    if kind == 'prompts': return [r['prompt'] for r in _prefs()]
    return _prefs()


# -- one bf16 step of each trainer -----------------------------------------------------------------------------
def _common(cfg, out_dir:str)->dict:
    return dict(output_dir=out_dir, per_device_train_batch_size=cfg['batch_size'], max_steps=cfg['steps'], learning_rate=1e-5,
                lr_scheduler_type='constant', logging_steps=1, save_strategy='no', report_to='none', disable_tqdm=True,
                bf16=True, use_cpu=_device(cfg) == 'cpu', dataloader_num_workers=0, seed=0, max_length=cfg['max_length'])

def _hf_trainer(cfg, name:str, out_dir:str):
    "The `AlignmentTrainer` of `name`, on a fresh model and its toy data."
    tok = _tokenizer(cfg)
    kw = _common(cfg, out_dir)
    if name == 'sft':
        from social_align.trainers.sft import SFTTrainer, SFTConfig
        return SFTTrainer(_fresh(cfg), SFTConfig(**kw), train_dataset=records('sft'), processing_class=tok)
    if name == 'reward':
        from social_align.trainers.reward import RewardModelTrainer, RewardConfig
        return RewardModelTrainer(_fresh(cfg, reward=True), RewardConfig(**kw), train_dataset=records('prefs'), processing_class=tok)
    if name == 'stable_alignment':
        from social_align.trainers.stable_alignment import StableAlignmentTrainer, StableAlignmentConfig
        return StableAlignmentTrainer(_fresh(cfg), StableAlignmentConfig(**kw), train_dataset=records('ranked'), processing_class=tok)
    if name == 'dpo':
        from social_align.trainers.dpo import PreferenceTrainer, PreferenceConfig
        return PreferenceTrainer(_fresh(cfg), PreferenceConfig(**kw), train_dataset=records('prefs'), processing_class=tok)
    if name == 'sso':
        from social_align.trainers.sso import SSOTrainer, SSOConfig
        return SSOTrainer(_fresh(cfg), SSOConfig(**kw), train_dataset=records('principled'), processing_class=tok)
    raise ValueError(f'unknown trainer {name!r}')

def _finite_losses(losses:list, name:str)->list:
    if not losses: raise RuntimeError(f'{name}: no loss was logged')
    bad = [x for x in losses if not math.isfinite(x)]
    if bad: raise RuntimeError(f'{name}: non-finite loss {bad[0]} in bf16')
    return losses

def part_hf_trainer(cfg, name:str)->dict:
    "`steps` bf16 optimizer steps of a `transformers.Trainer`-based trainer: setup and per-step times, the losses."
    from scripts.bench_trainers import StepClock
    out = {}
    with _peak_memory(cfg, out), tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        tr = _hf_trainer(cfg, name, d)
        clock = StepClock(); tr.add_callback(clock.callback)
        _sync(cfg); t1 = time.perf_counter()
        tr.train(); _sync(cfg)
        t = [t1] + clock.times
        losses = _finite_losses([h['loss'] for h in tr.state.log_history if 'loss' in h], name)
        mp = tr.accelerator.mixed_precision
        del tr
    return dict(out, status='ok', setup_s=round(t1 - t0, 3), first_step_s=round(t[1] - t[0], 3), step_s=round(t[-1] - t[-2], 3),
                steps=len(t) - 1, loss=losses[-1], mixed_precision=mp)

def part_rl(cfg, algorithm:str)->dict:
    """`steps` RL steps (sample, score, one PPO/RLOO update) with `RLTrainer`. It builds its own `Accelerator()`, which takes
    mixed precision from ACCELERATE_MIXED_PRECISION (what `accelerate launch --mixed_precision bf16` sets), set here."""
    from social_align.trainers.rl import RLTrainer, RLConfig
    os.environ['ACCELERATE_MIXED_PRECISION'] = 'bf16'
    out = {}
    with _peak_memory(cfg, out), tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        args = RLConfig(**_common(cfg, d), algorithm=algorithm, num_samples=1 if algorithm == 'ppo' else 2, ppo_epochs=1,
                        max_new_tokens=cfg['rl_new_tokens'], temperature=1.0)
        tr = RLTrainer(_fresh(cfg), args, train_dataset=records('prompts'), processing_class=_tokenizer(cfg),
                       reward_model=_fresh(cfg, reward=True, seed=1))
        _sync(cfg); t1 = time.perf_counter()
        r = tr.train(); _sync(cfg)
        hist = tr.state.log_history
        losses = _finite_losses([h['policy_loss'] for h in hist], algorithm)
        mp = tr.accelerator.mixed_precision
        del tr
    s = time.perf_counter() - t1
    return dict(out, status='ok', setup_s=round(t1 - t0, 3), step_s=round(s / len(hist), 3), steps=len(hist), policy_loss=losses[-1],
                score=r['score'], kl=r['kl'], mixed_precision=mp)

def part_raft(cfg)->dict:
    "One small RAFT iteration: sample k=2 responses to a few prompts (HF generate), score, keep the best, bf16 SFT on them."
    from social_align.trainers.raft import raft, RAFTConfig
    tok, out = _tokenizer(cfg), {}
    with _peak_memory(cfg, out), tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        rc = RAFTConfig(output_dir=d, iterations=1, prompts_per_iteration=2 * cfg['batch_size'], k=2, max_new_tokens=cfg['rl_new_tokens'],
                        per_device_train_batch_size=cfg['batch_size'], max_length=cfg['max_length'], bf16=True, min_chars=0,
                        bad_markers=[''], save_samples=False, verbose=False, temperature=1.0)
        recs = raft(_fresh(cfg), tok, _fresh(cfg, reward=True, seed=1), tok, records('prompts'), rc,
                    finetune_args={'use_cpu': True} if _device(cfg) == 'cpu' else None)
    r = recs[-1]
    if r['sft_loss'] is None or not math.isfinite(r['sft_loss']): raise RuntimeError(f"raft: finetuning loss {r['sft_loss']}")
    return dict(out, status='ok', iteration_s=round(time.perf_counter() - t0, 3), sample_s=r['sample_seconds'], kept=r['kept'],
                n_samples=r['n_samples'], reward_mean=r['reward_mean'], sft_loss=r['sft_loss'])


# -- generation ------------------------------------------------------------------------------------------------
def part_generation(cfg)->dict:
    "Sampled tokens/s of the saved policy: vLLM's offline engine on the GPU (`VLLMGenerator`), or HF generate (`--generator hf`)."
    from social_align.generation import VLLMGenerator, HFGenerator, vllm_available, VLLM_INSTALL_HINT
    g = cfg['generation']
    if g['backend'] == 'vllm' and not vllm_available(): return dict(status='skipped', backend='vllm', error=VLLM_INSTALL_HINT)
    t0 = time.perf_counter()
    if g['backend'] == 'vllm':
        gen = VLLMGenerator(policy_dir(cfg), dtype='bfloat16', gpu_memory_utilization=g['gpu_memory_utilization'],
                            max_model_len=cfg['arch']['max_position_embeddings'], enforce_eager=g['enforce_eager'])
    else: gen = HFGenerator(policy_dir(cfg), batch_size=g['prompts'] * g['n'], device=_device(cfg), dtype='bf16')
    try:
        t1 = time.perf_counter()
        prompts = (records('prompts') * (1 + g['prompts'] // 120))[:g['prompts']]
        gen.generate(prompts[:2], max_new_tokens=4)                       # warm-up, not timed
        _sync(cfg); t2 = time.perf_counter()
        comps = gen.generate(prompts, n=g['n'], temperature=1.0, max_new_tokens=g['max_new_tokens'], seed=0)
        _sync(cfg); s = time.perf_counter() - t2
    finally: gen.close()
    tokens = sum(len(c.token_ids or []) for cs in comps for c in cs)
    if not tokens: raise RuntimeError('no token was generated')
    return dict(status='ok', backend=g['backend'], engine_start_s=round(t1 - t0, 2), generate_s=round(s, 3), sequences=len(prompts) * g['n'],
                tokens=tokens, tokens_per_s=round(tokens / s, 1), enforce_eager=g['enforce_eager'] if g['backend'] == 'vllm' else None)


# -- MFU -------------------------------------------------------------------------------------------------------
def matmul_probe(cfg, seconds:float=1.0)->float:
    "Measured FLOP/s of a square bf16 matmul of `probe_size` on the device (the best of repeated timings)."
    import torch
    n, dev = cfg['mfu']['probe_size'], _device(cfg)
    a, b = (torch.randn(n, n, device=dev, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3): a @ b
    _sync(cfg)
    best, t_end = float('inf'), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(10): a @ b
        _sync(cfg); best = min(best, (time.perf_counter() - t0) / 10)
    return 2 * n**3 / best

def part_mfu(cfg)->dict:
    """bench_trainers.py's model FLOP/s (6 x matmul parameters x real tokens/s of social_align's DPO, its `timed_train`)
    in bf16 on the device, as a share of the measured bf16 matmul FLOP/s; probes and training runs interleaved."""
    import statistics
    from scripts.bench_trainers import timed_train
    from social_align.trainers.dpo import PreferenceTrainer, PreferenceConfig
    m, tok = cfg['mfu'], _tokenizer(cfg)
    probes, runs = [matmul_probe(cfg)], []
    for rep in range(m['repeats']):
        with tempfile.TemporaryDirectory() as d:
            kw = dict(_common(cfg, d), per_device_train_batch_size=m['batch_size'], max_steps=m['warmup'] + m['steps'])
            policy = _fresh(cfg)
            n_matmul = sum(p.numel() for p in policy.parameters()) - policy.get_input_embeddings().weight.numel()
            tr = PreferenceTrainer(policy, PreferenceConfig(**kw), train_dataset=records('prefs'), processing_class=tok)
            r = timed_train(tr, m['warmup'], m['steps']); del tr, policy
        r['model_flops_per_s'] = 6 * n_matmul * r['tokens_per_s']
        runs.append(r); probes.append(matmul_probe(cfg))
    best = max(runs, key=lambda r: r['tokens_per_s'])
    peak = statistics.median(probes)
    return dict(status='ok', matmul_flops_per_s=peak, matmul_probes=probes, probe_size=m['probe_size'], matmul_parameters=n_matmul,
                tokens_per_s=best['tokens_per_s'], steps_per_s=best['steps_per_s'], model_flops_per_s=best['model_flops_per_s'],
                mfu=best['model_flops_per_s'] / peak, mfu_with_reference=best['model_flops_per_s'] * 8 / 6 / peak,
                runs=[{k: r[k] for k in ('tokens_per_s', 'steps_per_s', 'model_flops_per_s', 'tokens')} for r in runs])


PARTS = {'env': part_env, 'build': part_build, 'generation': part_generation, 'mfu': part_mfu, 'raft': part_raft,
         **{n: (lambda cfg, n=n: part_hf_trainer(cfg, n)) for n in ('sft', 'reward', 'stable_alignment', 'dpo', 'sso')},
         **{n: (lambda cfg, n=n: part_rl(cfg, n)) for n in ('ppo', 'rloo')}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', required=True, help='the JSON settings run.py writes')
    p.add_argument('items', nargs='+', choices=sorted(PARTS))
    a = p.parse_args(argv)
    cfg = json.loads(Path(a.config).read_text())
    if cfg['device'] == 'cpu': os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
    if 'env' not in a.items or len(a.items) > 1: _quiet()
    for name in a.items:
        emit(event='start', name=name)
        t0 = time.perf_counter()
        if os.environ.get('GPU_CHECK_HANG') == name: time.sleep(10**6)   # the tests' stand-in for a hung part
        try: rec = PARTS[name](cfg)
        except Exception as e:
            traceback.print_exc()
            rec = dict(status='failed', error=f'{type(e).__name__}: {e}'[:2000])
        emit(**{**rec, 'event': 'result', 'name': name, 'seconds': round(time.perf_counter() - t0, 3)})


if __name__ == '__main__': main()

#!/usr/bin/env python
"""Training throughput of social_align's trainers against TRL's, on CPU, one tiny Llama, the same data; the levers
a user can switch on, each measured side by side with the plain path; and the share of the machine's matmul rate a
trainer step reaches.

Trainers (one row each, per thread count): SFT (vs trl.SFTTrainer), reward model (vs trl.RewardTrainer), stable
alignment (ours only), DPO and IPO (vs trl.DPOTrainer, loss_type sigmoid / ipo) and SSO (ours only: TRL has no SSO).
Same settings on both sides (batch size, max_length, optimizer, float32: TRL's configs default to bf16 autocast,
turned off here). Printed per row: optimizer steps/s, real (non-pad) tokens/s, the model FLOP/s — 6N per token for
the trained model (forward + backward) plus 2N for a reference forward (DPO, IPO, SSO; not with precomputed
reference log-probs), N the non-embedding parameters — and that FLOP/s as a share of the matmul probe; then ours ÷
TRL in tokens/s. Tokenization, model building and the first --warmup steps are not timed.

The matmul probe ([tokens of a step, hidden] @ [hidden, 4·hidden], float32, the same threads) runs between every two
model runs (probe, run, probe, run, ...), so a run's share is measured against the probes taken just before and
after it, on the same machine; the probe's spread over the run (min, median, max) is printed too: a wide spread
means the machine was busy and the shares are not to be trusted.

Levers (rows named after the lever, each next to its plain row of the same run, with the largest difference of the
logged loss from the plain row's over the steps: the lever must not change the loss beyond float rounding):
  fused         --optim adamw_torch_fused (torch's fused AdamW; on CPU since torch 2.4)
  foreach       torch.optim.AdamW(foreach=True) given as the trainer's optimizer (on CPU, torch's default is the
                per-parameter loop; transformers has no flag for foreach)
  precompute    precompute_ref_log_probs=True (DPO, IPO): the reference scores the data once, then is freed
  padding_free  padding_free=True (SFT, stable alignment, DPO, IPO, SSO): a batch's sequences packed first-fit in rows no longer than its longest
  compile       torch_compile=True (the model's forward and backward compiled by inductor; the first steps compile)
--levers picks them; fused, foreach and compile run on the trainers of --lever-kinds (default: all; --quick: dpo).

Long tail (--only long_tail, and part of every full run): DPO on pairs whose lengths are long-tailed like HH-RLHF's
(most short, one in eight near --max-length), padded vs padding_free: tokens/s and the share of pad tokens.

Profile (--profile): one DPO step at the benchmark's model under torch.profiler, its time split into matmuls,
attention, the LM head's log-softmax (our chunked log-prob kernel), other elementwise/reduction ops, the optimizer
and the rest (Python, data, autograd bookkeeping), printed and written to the JSON.
What the profile showed (the --quick model, hidden 64, vocab 400, batch 4, 1 thread, on a machine shared with other
busy processes: shares only, not rates; the lead's idle run at the default model is the one to quote): of a DPO step,
matmuls 18%, attention (sdpa, forward + backward) 14%, other elementwise and reductions (RMSNorm, SiLU, rotary,
masks, torch.where) 31%, Python / data / autograd bookkeeping 29%, copies 5%, our LM-head log-softmax 2%, the
optimizer (per-parameter AdamW loop) a few %. Closed: the log-prob kernel's backward no longer zero-fills the whole
[B·T, V] gradient before writing every row of it, nor allocates a masked copy of each block (masked in place). Left:
at this size the step is bound by per-op overhead (many small ops, high system time from page faults on fresh large
allocations), which torch_compile (fusing the elementwise ops) and the foreach/fused optimizers address; at the
default model the matmul share should dominate — measure it there.

    python scripts/bench_trainers.py                       # hidden 256, 4 layers, vocab 1000 (~4.7M parameters)
    python scripts/bench_trainers.py --threads 1 2 --json bench.json
    python scripts/bench_trainers.py --only dpo --levers padding_free compile --profile
    python scripts/bench_trainers.py --quick               # a smoke run of a few steps on a smaller model
    python scripts/bench_trainers.py --only memory         # only the memory of DPO's three kinds of reference

Memory (--only memory, and part of every full run): social_align's DPO with its three kinds of reference, side by
side, on the same model, data and steps: a separate frozen copy of the policy (the default), reference log-probs
precomputed before training (precompute_ref_log_probs, the copy freed), and LoRA (peft_config, r=--lora-r on every
linear layer) whose reference is the policy with its adapter disabled (no copy). Each runs in a fresh child process,
since a process's peak RSS only grows: the child builds the model and data, resets its peak RSS to its current RSS
(Linux: /proc/self/clear_refs; where that is refused, the peak so far stands), notes it, builds the trainer and trains
--warmup + --steps steps, and reports its peak RSS (VmHWM), the rise over the note (what the trainer added: reference, optimizer state, activations, tokenized data), the exact bytes of
the weights it holds (policy + reference) and of the optimizer state, and the median step time. (tracemalloc does not
see torch's allocations, and CPU torch keeps no allocator statistics, so RSS is the measure of the process; the byte
counts are exact but leave out activations.) LoRA also trains fewer weights, so its optimizer state is smaller too:
the weight and optimizer columns show what comes from the reference and what from the adapter.

Measure on an idle machine: on a CPU shared with other busy processes more than one OpenMP thread per process makes
every step many times slower and the timings swing from run to run (the probe's spread shows it).
"""
from __future__ import annotations
import argparse, copy, json, statistics, sys, tempfile, time, warnings

KINDS = ('sft', 'reward', 'stable_alignment', 'dpo', 'ipo', 'sso')
TRL_KINDS = ('sft', 'reward', 'dpo', 'ipo')            # the trainers TRL has an equivalent of
REFERENCE_KINDS = ('dpo', 'ipo', 'sso')                # a reference forward per step: + 2N FLOPs per token
LEVERS = ('fused', 'foreach', 'precompute', 'padding_free', 'compile')
COMPILE_WARMUP = 2   # extra untimed steps of the compile row: dynamo compiles the first shape, then once more with dynamic shapes
LEVER_KINDS = {'precompute': ('dpo', 'ipo'), 'padding_free': ('sft', 'stable_alignment', 'dpo', 'ipo', 'sso')}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--steps', type=int, default=20, help='timed optimizer steps per trainer (default 20)')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps before timing starts, at least 1 (default 3)')
    p.add_argument('--batch-size', type=int, default=8, help='examples (pairs, queries, SSO records) per step (default 8)')
    p.add_argument('--max-length', type=int, default=256, help='max tokens of prompt + response (default 256; the toy data fits untruncated)')
    p.add_argument('--hidden', type=int, default=256, help='model hidden size (default 256)')
    p.add_argument('--layers', type=int, default=4, help='model layers (default 4)')
    p.add_argument('--vocab', type=int, default=1000, help='BPE vocabulary size (default 1000)')
    p.add_argument('--threads', type=int, nargs='+', default=None, help='torch thread counts, each measured in turn (default: torch.get_num_threads())')
    p.add_argument('--only', choices=[*KINDS, 'long_tail', 'memory'], action='append', default=None,
                   help='run only this part (repeatable; default: every trainer, the long tail and memory)')
    p.add_argument('--levers', choices=LEVERS, nargs='*', default=None, help=f'levers to measure (default: all of {", ".join(LEVERS)})')
    p.add_argument('--lever-kinds', choices=KINDS, nargs='*', default=None, help='trainers that get the fused, foreach and compile rows (default: all; --quick: dpo)')
    p.add_argument('--profile', action='store_true', help='profile one DPO step (torch.profiler) and print where its time goes')
    p.add_argument('--lora-r', type=int, default=16, help='LoRA rank of the adapter-off reference run of the memory comparison (default 16)')
    p.add_argument('--memory-child', default=None, help=argparse.SUPPRESS)   # one variant of the memory comparison, in a child process
    p.add_argument('--probe-seconds', type=float, default=1.0, help='length of each matmul probe (default 1.0; --quick 0.2)')
    p.add_argument('--quick', action='store_true', help='smoke run: hidden 64, 2 layers, vocab 400, 1 warm-up + 3 timed steps, batch 4, 1 thread')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    args = p.parse_args(argv)
    if args.quick:
        args.hidden, args.layers, args.vocab, args.warmup, args.steps, args.batch_size = 64, 2, 400, 1, 3, 4
        args.threads = args.threads or [1]   # a tiny model gains nothing from more, and a busy shared CPU punishes them
        args.probe_seconds = min(args.probe_seconds, 0.2)
        if args.lever_kinds is None: args.lever_kinds = ['dpo']
    for k in ('steps', 'warmup', 'batch_size', 'hidden', 'layers', 'vocab'):
        if getattr(args, k) < 1: p.error(f'--{k.replace("_", "-")} must be positive, got {getattr(args, k)}')
    if args.threads and any(t < 1 for t in args.threads): p.error(f'--threads must be positive, got {args.threads}')
    if args.levers is None: args.levers = list(LEVERS)
    if args.lever_kinds is None: args.lever_kinds = list(KINDS)
    return args


class StepClock:
    "A `TrainerCallback` that notes the time at the end of every optimizer step."
    def __init__(self):
        from transformers import TrainerCallback
        clock = self
        class _CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kw): clock.times.append(time.perf_counter())
        self.times, self.callback = [], _CB()


class TokenCounter:
    "Wraps a data collator and notes the real tokens and the padded size (tokens + pad) of every batch it makes, in order."
    def __init__(self, collator): self.collator, self.tokens, self.slots = collator, [], []
    def __call__(self, features):
        batch = self.collator(features)
        ids = batch['input_ids']
        self.tokens.append(int(batch['attention_mask'].sum()) if 'attention_mask' in batch else int(batch['sequence_lengths'].sum()))   # packed: the ends of rows that are not full are pad
        self.slots.append(ids.numel())
        return batch


def timed_train(trainer, warmup:int, steps:int)->dict:
    """Train `warmup + steps` steps; steps/s and tokens/s of the last `steps`: overall (total time) and typical (the
    median step, robust to other processes stealing the CPU for a moment); the logged loss of every step."""
    from transformers import PrinterCallback
    clock, counter = StepClock(), TokenCounter(trainer.data_collator)
    trainer.remove_callback(PrinterCallback)      # no log lines in the output
    trainer.add_callback(clock.callback)
    trainer.data_collator = counter              # used by get_train_dataloader() inside train()
    trainer.train()
    t = clock.times
    assert len(t) == warmup + steps, f'expected {warmup + steps} steps, got {len(t)}'
    seconds = t[-1] - t[warmup - 1]              # from the end of the last warm-up step
    step_s = [b - a for a, b in zip(t[warmup - 1:], t[warmup:])]
    step_tokens = counter.tokens[warmup:warmup + steps]    # one batch per step (no gradient accumulation)
    tokens, slots = sum(step_tokens), sum(counter.slots[warmup:warmup + steps])
    losses = [h['loss'] for h in trainer.state.log_history if 'loss' in h]
    return dict(steps=steps, seconds=round(seconds, 4), steps_per_s=steps / seconds, tokens=tokens, tokens_per_s=tokens / seconds,
                pad_share=1 - tokens / slots, median_steps_per_s=1 / statistics.median(step_s),
                median_tokens_per_s=statistics.median(n / dt for n, dt in zip(step_tokens, step_s)), losses=losses)


def matmul_flops(m:int, k:int, n:int, seconds:float=1.0)->float:
    "Measured FLOP/s of an `[m, k] @ [k, n]` float32 matmul (the best of repeated timings)."
    import torch
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3): a @ b
    best, t_end = float('inf'), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(5): a @ b
        best = min(best, (time.perf_counter() - t0) / 5)
    return 2 * m * k * n / best


def loss_delta(losses:list[float], plain:list[float])->float:
    "The largest relative difference of a lever's logged losses from the plain run's, step by step."
    if not losses or not plain: return float('inf')
    return max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(losses, plain))   # the steps both ran (compile runs more)


def long_tail_pairs(prefs:list[dict], tok, max_length:int, seed:int=0)->list[dict]:
    "Preference pairs with HH-RLHF-like lengths: most as they are (short), one in eight with both responses grown to about `max_length` tokens."
    import random
    rng, out = random.Random(seed), []
    for i, r in enumerate(prefs):
        r = dict(r)
        if i % 8 == 7:
            for g in ('chosen', 'rejected'):
                base, text = r[g], r[g]
                while len(tok(r['prompt'] + ' ' + text)['input_ids']) < 0.9 * max_length: text += ' ' + base
                r[g] = text
        out.append(r)
    rng.shuffle(out)
    return out


PROFILE_CATEGORIES = (   # (category, substrings of aten op names), the first match wins
    ('matmul', ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::matmul', 'aten::linear', 'aten::baddbmm')),
    ('attention', ('scaled_dot_product', 'flash_attention', 'aten::_efficient_attention')),
    ('log-softmax (LM head)', ('logsumexp', 'aten::exp', 'aten::gather', 'aten::scatter_add')),
    ('copies', ('aten::copy_', 'aten::clone', 'aten::contiguous', 'aten::cat', 'aten::index', 'aten::to', 'aten::_to_copy')),
)


def profile_dpo_step(make_trainer, batch_size:int)->dict:
    """One DPO training step at the benchmark's model: the forward and backward under torch.profiler (its ops' own CPU
    time by category; the rest of its wall time is Python, data collation and autograd bookkeeping), and the optimizer
    step timed on its own. Milliseconds and shares of the whole step."""
    from torch.profiler import profile, ProfilerActivity
    tr = make_trainer()
    tr.create_optimizer_and_scheduler(num_training_steps=10)
    tr.current_gradient_accumulation_steps = 1       # set by train()'s loop, read by training_step
    feats = [tr.train_dataset[i] for i in range(batch_size)]
    model = tr.model.train()
    fwd_bwd = lambda: tr.training_step(model, tr._prepare_inputs(tr.data_collator(feats)))
    def opt(): tr.optimizer.step(); tr.optimizer.zero_grad()
    for _ in range(2): fwd_bwd(); opt()              # warm-up: the optimizer state exists, caches are warm
    def timed(fn):
        t0 = time.perf_counter(); fn(); return time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof: fb_s = timed(fwd_bwd)
    opt_times = []
    for _ in range(3):                               # each optimizer step after a backward (zero_grad leaves no gradient to step on)
        fwd_bwd(); opt_times.append(timed(opt))
    opt_s = statistics.median(opt_times)
    ms = {c: 0.0 for c, _ in PROFILE_CATEGORIES}
    ms['other elementwise/reduction'] = 0.0
    ops = [e for e in prof.key_averages() if e.key.startswith('aten::')]
    for e in ops:
        t = e.self_cpu_time_total / 1e3
        for c, keys in PROFILE_CATEGORIES:
            if any(k in e.key for k in keys): ms[c] += t; break
        else: ms['other elementwise/reduction'] += t
    ms['python, data, autograd (the rest)'] = max(0.0, fb_s * 1e3 - sum(ms.values()))
    ms['optimizer'] = opt_s * 1e3
    total = fb_s * 1e3 + ms['optimizer']
    top = sorted(((e.key, round(e.self_cpu_time_total / 1e3, 3)) for e in ops), key=lambda x: -x[1])[:12]
    return dict(step_ms=total, ms=ms, shares={k: v / total for k, v in ms.items()}, top_ops=top)


MEMORY_VARIANTS = {'separate': 'separate reference (a frozen copy)', 'precomputed': 'precomputed reference log-probs',
                   'adapter_off': 'LoRA, adapter-off reference'}


def rss_mb(key:str='VmHWM')->float:
    "This process's resident set size (VmRSS) or its peak (VmHWM) from /proc/self/status, in MiB; ru_maxrss where there is no /proc."
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'): return int(line.split()[1]) / 1024
    except OSError: pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux; the peak only


def reset_peak_rss()->bool:
    "Reset this process's peak RSS (VmHWM) to its current RSS (Linux: write 5 to /proc/self/clear_refs); False if it cannot."
    try:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        return True
    except OSError: return False


def tensor_mb(tensors)->float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def memory_child(args, variant:str)->dict:
    "Train DPO with one kind of reference in this (fresh) process; its peak memory and step time."
    import gc, statistics, torch, datasets, transformers
    warnings.filterwarnings('ignore')
    transformers.logging.set_verbosity_error(); datasets.disable_progress_bars()
    if args.threads: torch.set_num_threads(args.threads[0])
    from social_align.models import train_bpe_tokenizer, build_tiny_causal_lm
    from social_align.toyworld import toy_preferences, toy_corpus
    from social_align.trainers.dpo import PreferenceTrainer, PreferenceConfig
    tok = train_bpe_tokenizer(toy_corpus(), vocab_size=args.vocab, chat_template=None)
    policy = build_tiny_causal_lm(tok, seed=args.seed, hidden_size=args.hidden, num_layers=args.layers,
                                  num_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden)
    prefs = toy_preferences(seed=args.seed)
    gc.collect(); reset = reset_peak_rss(); before = rss_mb('VmRSS' if reset else 'VmHWM')   # building the tokenizer peaks higher
    cfg = PreferenceConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps,
                           learning_rate=1e-5, optim='adamw_torch', lr_scheduler_type='constant', save_strategy='no', report_to='none',
                           seed=args.seed, disable_tqdm=True, use_cpu=True, bf16=False, dataloader_num_workers=0, max_length=args.max_length,
                           logging_steps=args.warmup + args.steps, precompute_ref_log_probs=variant == 'precomputed')
    kw = {}
    if variant == 'adapter_off':
        from peft import LoraConfig
        kw['peft_config'] = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules='all-linear', task_type='CAUSAL_LM')
    trainer = PreferenceTrainer(policy, cfg, train_dataset=prefs, processing_class=tok, **kw)
    held = [*trainer.model.parameters(), *(trainer.ref_model.parameters() if trainer.ref_model is not None else [])]
    r = timed_train(trainer, args.warmup, args.steps)
    opt = [v for st in trainer.optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
    peak = rss_mb('VmHWM')
    return dict(variant=variant, peak_rss_mb=peak, rss_before_trainer_mb=before, rss_rise_mb=peak - before, peak_reset=reset,
                weights_mb=tensor_mb(held), reference_copy=trainer.ref_model is not None, optimizer_state_mb=tensor_mb(opt),
                trainable=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
                median_step_s=1 / r['median_steps_per_s'], steps_per_s=r['steps_per_s'])


def memory_comparison(args, argv)->dict:
    "Run each DPO reference variant in its own child process and print the table."
    import subprocess
    out = {}
    for v, label in MEMORY_VARIANTS.items():
        p = subprocess.run([sys.executable, __file__, *argv, '--memory-child', v], capture_output=True, text=True)
        if p.returncode != 0: raise RuntimeError(f'the {v} memory run failed:\n{p.stderr[-3000:]}')
        out[v] = json.loads(p.stdout.strip().splitlines()[-1])
    print(f'\nmemory of DPO by kind of reference (each in a fresh process; peak RSS while the trainer is built and trains, and its rise '
          f'over the RSS before; weights and optimizer state: exact bytes):')
    print(f'{"":43s} {"peak RSS":>10s} {"rise":>9s} {"weights":>9s} {"optimizer":>10s} {"trainable":>10s} {"step":>9s}')
    for v, label in MEMORY_VARIANTS.items():
        m = out[v]
        print(f'memory {label:36s} {m["peak_rss_mb"]:7.1f} MiB {m["rss_rise_mb"]:6.1f} MiB {m["weights_mb"]:6.2f} MiB '
              f'{m["optimizer_state_mb"]:7.2f} MiB {m["trainable"]:10d} {m["median_step_s"]*1000:6.1f} ms'
              + ('' if v != 'adapter_off' or not m['reference_copy'] else '  (this PreferenceTrainer still copies the reference)'))
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args, args.memory_child)))
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    import torch, datasets, transformers
    warnings.filterwarnings('ignore')
    transformers.logging.set_verbosity_error(); datasets.disable_progress_bars()
    import trl
    from social_align.models import train_bpe_tokenizer, build_tiny_causal_lm, build_tiny_reward_model, TINY_CHAT_TEMPLATE
    from social_align.toyworld import toy_preferences, toy_corpus, toy_ranked
    from social_align.trainers.dpo import PreferenceTrainer, PreferenceConfig
    from social_align.trainers.sft import SFTTrainer, SFTConfig
    from social_align.trainers.reward import RewardModelTrainer, RewardConfig
    from social_align.trainers.stable_alignment import StableAlignmentTrainer, StableAlignmentConfig
    from social_align.trainers.sso import SSOTrainer, SSOConfig

    threads_list = args.threads or [torch.get_num_threads()]
    tok = train_bpe_tokenizer(toy_corpus(), vocab_size=args.vocab, chat_template=None)
    chat_tok = copy.deepcopy(tok); chat_tok.chat_template = TINY_CHAT_TEMPLATE     # SSO's prompts are chats
    arch = dict(hidden_size=args.hidden, num_layers=args.layers, num_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden)
    policy = build_tiny_causal_lm(tok, seed=args.seed, **arch)
    rm = build_tiny_reward_model(tok, seed=args.seed, **arch)
    n_params = sum(p.numel() for p in policy.parameters())
    n_matmul = n_params - policy.get_input_embeddings().weight.numel()        # the embedding lookup is not a matmul
    n_rm = sum(p.numel() for p in rm.parameters()) - rm.get_input_embeddings().weight.numel()
    prefs = toy_preferences(seed=args.seed)
    sft_recs = [{'prompt': r['prompt'], 'completion': r['chosen']} for r in prefs]
    ranked = toy_ranked(n_responses=3, seed=args.seed)
    sso_recs = [{'prompt': r['prompt'], 'chosen': r['chosen'], 'rejected': r['rejected'], 'raw': r['rejected'], 'system': 'You are an assistant.',
                 'p_system': 'Be kind and helpful.', 'n_system': 'Be rude and unhelpful.'} for r in prefs]
    trl_prefs = datasets.Dataset.from_list([{'prompt': r['prompt'], 'chosen': ' ' + r['chosen'], 'rejected': ' ' + r['rejected']} for r in prefs])
    trl_sft = datasets.Dataset.from_list([{'prompt': r['prompt'], 'completion': ' ' + r['completion']} for r in sft_recs])
    common = dict(per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps, learning_rate=1e-5,
                  optim='adamw_torch', lr_scheduler_type='constant', logging_steps=1, save_strategy='no',
                  report_to='none', seed=args.seed, disable_tqdm=True, use_cpu=True, bf16=False, dataloader_num_workers=0)
    out_dir = tempfile.mkdtemp()
    mean_pair = statistics.mean(len(tok(r['prompt'] + ' ' + r['chosen'])['input_ids']) for r in prefs[:64])
    probe_shape = (int(2 * args.batch_size * mean_pair), args.hidden, 4 * args.hidden)   # a DPO step's tokens through the MLP's up-projection
    print(f'model: Llama hidden {args.hidden}, {args.layers} layers, vocab {len(tok)}: {n_params/1e6:.2f}M parameters '
          f'({n_matmul/1e6:.2f}M in matmuls); {len(prefs)} toy preference pairs; batch {args.batch_size}; max_length {args.max_length}; '
          f'torch {torch.__version__}, threads {threads_list}; {args.warmup} warm-up + {args.steps} timed steps', flush=True)

    # -- one factory per (trainer, variant): a fresh trainer from the same initial weights each time ------------------
    def ours(kind, lever=None):
        kw = dict(max_length=args.max_length, **common)
        if lever == 'fused': kw['optim'] = 'adamw_torch_fused'
        if lever == 'precompute': kw['precompute_ref_log_probs'] = True
        if lever == 'padding_free': kw['padding_free'] = True
        if lever == 'compile': kw.update(torch_compile=True, max_steps=common['max_steps'] + COMPILE_WARMUP)   # its warm-up covers the recompiles
        m = lambda: copy.deepcopy(policy)
        if kind == 'sft': t = SFTTrainer(m(), SFTConfig(output_dir=out_dir, **kw), train_dataset=sft_recs, processing_class=tok)
        elif kind == 'reward': t = RewardModelTrainer(copy.deepcopy(rm), args=RewardConfig(output_dir=out_dir, **kw), train_dataset=prefs, processing_class=tok)
        elif kind == 'stable_alignment':
            t = StableAlignmentTrainer(m(), StableAlignmentConfig(output_dir=out_dir, num_comp=3, **kw), train_dataset=ranked, processing_class=tok)
        elif kind in ('dpo', 'ipo'):
            t = PreferenceTrainer(m(), PreferenceConfig(output_dir=out_dir, loss_type='sigmoid' if kind == 'dpo' else 'ipo', **kw),
                                  train_dataset=prefs, processing_class=tok)
        elif kind == 'sso': t = SSOTrainer(m(), SSOConfig(output_dir=out_dir, **kw), train_dataset=sso_recs, processing_class=chat_tok)
        if lever == 'foreach':     # transformers has no flag for it: the optimizer is given to the trainer
            t.optimizer = torch.optim.AdamW(t.model.parameters(), lr=common['learning_rate'], weight_decay=t.args.weight_decay, foreach=True)
        return t
    rm_ids = None
    def theirs(kind):
        nonlocal rm_ids
        kw = dict(output_dir=out_dir, max_length=args.max_length, **common)
        if kind == 'sft':
            return trl.SFTTrainer(model=copy.deepcopy(policy), train_dataset=trl_sft, processing_class=tok,
                                  args=trl.SFTConfig(completion_only_loss=True, packing=False, **kw))
        if kind == 'reward':        # TRL gets exactly our token ids (its RewardTrainer takes pre-tokenized chosen_ids / rejected_ids)
            if rm_ids is None:
                d = ours('reward').train_dataset
                rm_ids = datasets.Dataset.from_dict({'chosen_ids': d['chosen_input_ids'], 'rejected_ids': d['rejected_input_ids']})
            return trl.RewardTrainer(model=copy.deepcopy(rm), train_dataset=rm_ids, processing_class=tok, args=trl.RewardConfig(**kw))
        return trl.DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(policy), train_dataset=trl_prefs, processing_class=tok,
                              args=trl.DPOConfig(loss_type=['sigmoid' if kind == 'dpo' else 'ipo'], **kw))
    def flops_per_token(kind, lever=None):
        n = n_rm if kind == 'reward' else n_matmul
        return (6 + (2 if kind in REFERENCE_KINDS and lever != 'precompute' else 0)) * n

    wanted = args.only or [*KINDS, 'long_tail', 'memory']
    kinds = [k for k in KINDS if k in wanted]
    plan = []        # (kind, variant, factory, flops per token)
    for k in kinds:
        plan.append((k, 'social_align', lambda k=k: ours(k), flops_per_token(k)))
        if k in TRL_KINDS: plan.append((k, 'trl', lambda k=k: theirs(k), flops_per_token(k)))
        for lever in args.levers:
            if k in LEVER_KINDS.get(lever, args.lever_kinds):
                plan.append((k, lever, lambda k=k, lever=lever: ours(k, lever), flops_per_token(k, lever)))
    if 'long_tail' in wanted:
        lt = long_tail_pairs(prefs, tok, args.max_length, args.seed)
        def lt_make(pf):
            return PreferenceTrainer(copy.deepcopy(policy), PreferenceConfig(output_dir=out_dir, max_length=args.max_length, padding_free=pf, **common),
                                     train_dataset=lt, processing_class=tok)
        plan += [('long_tail dpo', 'padded', lambda: lt_make(False), flops_per_token('dpo')),
                 ('long_tail dpo', 'padding_free', lambda: lt_make(True), flops_per_token('dpo'))]

    rows, probes = [], {}
    for threads in threads_list:
        torch.set_num_threads(threads)
        probe = lambda: matmul_flops(*probe_shape, seconds=args.probe_seconds)
        ps = [probe()]
        print(f'\n-- {threads} thread(s) --', flush=True)
        for kind, variant, make, fpt in plan:
            trainer = make()
            t_start = time.perf_counter()
            r = timed_train(trainer, args.warmup + (COMPILE_WARMUP if variant == 'compile' else 0), args.steps)
            r['wall_s'] = time.perf_counter() - t_start       # with the warm-up (for compile: the compiling)
            del trainer
            ps.append(probe())
            r.update(kind=kind, variant=variant, threads=threads, model_flops_per_s=fpt * r['tokens_per_s'], probe_flops_per_s=(ps[-2] + ps[-1]) / 2)
            r['share_of_matmul_flops'] = r['model_flops_per_s'] / r['probe_flops_per_s']
            plain = next((x for x in rows if x['threads'] == threads and x['kind'] == kind and x['variant'] in ('social_align', 'padded')), None)
            r['loss_delta'] = None if plain is None or variant in ('social_align', 'padded', 'trl') else loss_delta(r['losses'], plain['losses'])
            rows.append(r)
            print(f'{kind:16s} {variant:13s} {r["steps_per_s"]:7.3f} steps/s {r["tokens_per_s"]:9.1f} tokens/s '
                  f'{r["model_flops_per_s"]/1e9:7.2f} GFLOP/s = {r["share_of_matmul_flops"]:6.1%} of matmul'
                  + (f'  pad {r["pad_share"]:5.1%}' if kind.startswith('long_tail') else '')
                  + ('' if r['loss_delta'] is None else f'  loss vs plain: {r["loss_delta"]:.1e}')
                  + (f'  (untimed warm-up incl. compiling: {r["wall_s"] - r["seconds"]:.0f} s)' if variant == 'compile' else ''), flush=True)
        probes[threads] = ps
        print(f'matmul probe [{probe_shape[0]} x {probe_shape[1]}] @ [{probe_shape[1]} x {probe_shape[2]}] on {threads} thread(s), '
              f'{len(ps)} probes: median {statistics.median(ps)/1e9:.2f} GFLOP/s, spread {min(ps)/1e9:.2f}-{max(ps)/1e9:.2f} '
              f'({(max(ps) - min(ps)) / statistics.median(ps):.0%} of the median)', flush=True)

    ratios = {}
    if rows: print('\nratios ours / TRL in tokens/s (target >= 1.3 for DPO, IPO, RM):')
    for threads in threads_list:
        for k in kinds:
            if k not in TRL_KINDS: continue
            a, b = (next(x for x in rows if (x['threads'], x['kind'], x['variant']) == (threads, k, v)) for v in ('social_align', 'trl'))
            ratios[f'{k} {threads}t'] = rt = {key: a[key] / b[key] for key in ('steps_per_s', 'tokens_per_s', 'median_tokens_per_s')}
            print(f'ratio {k:6s} {threads} thread(s) tokens/s {rt["tokens_per_s"]:.2f}  steps/s {rt["steps_per_s"]:.2f}  (median step: tokens/s {rt["median_tokens_per_s"]:.2f})')
        for kind in {r['kind'] for r in rows if r['kind'].startswith('long_tail')}:
            a, b = (next(x for x in rows if (x['threads'], x['kind'], x['variant']) == (threads, kind, v)) for v in ('padded', 'padding_free'))
            print(f'long tail {threads} thread(s): pad share padded {a["pad_share"]:.1%} vs packed {b["pad_share"]:.1%}; '
                  f'tokens/s packed / padded {b["tokens_per_s"] / a["tokens_per_s"]:.2f}')

    prof = None
    if args.profile:
        torch.set_num_threads(threads_list[0])
        prof = profile_dpo_step(lambda: ours('dpo'), args.batch_size)
        print(f'\nprofile of one DPO step ({threads_list[0]} thread(s), batch {args.batch_size}): {prof["step_ms"]:.1f} ms')
        for k, v in sorted(prof['ms'].items(), key=lambda kv: -kv[1]): print(f'profile {k:36s} {v:8.1f} ms {prof["shares"][k]:6.1%}')
        print('top ops (self CPU ms): ' + ', '.join(f'{k} {v:.1f}' for k, v in prof['top_ops'][:8]))
    memory = memory_comparison(args, [a for a in argv if a != '--json' and a != args.json]) if 'memory' in wanted else None
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(config=vars(args), threads=threads_list, params=n_params, matmul_params=n_matmul, probe_shape=probe_shape,
                           probes=probes, results=rows, ratios=ratios, profile=prof, memory=memory), f, indent=1)

if __name__ == '__main__': main()

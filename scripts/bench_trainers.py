#!/usr/bin/env python
"""Training throughput of social_align's trainers against TRL's, on CPU, one tiny Llama, the same data.

Compares, step for step with the same settings (batch size, max_length, optimizer, threads, float32 — TRL's configs
default to bf16 autocast, turned off here):

  * DPO   (loss_type sigmoid): social_align PreferenceTrainer  vs  trl.DPOTrainer
  * IPO   (loss_type ipo):     social_align PreferenceTrainer  vs  trl.DPOTrainer
  * reward model:              social_align RewardModelTrainer vs  trl.RewardTrainer

and prints optimizer steps/s, real (non-pad) tokens/s and the ratio ours/TRL for each (target >= 1.0). Also the
model FLOP/s, 6 x (non-embedding parameters) x tokens/s (the policy's forward + backward; DPO's reference forward adds
2 x params x tokens/s, shown separately), as a share of this machine's matmul FLOP/s measured with torch on matrices
of the model's shapes and the same thread count. Tokenization, model building and the first --warmup steps are not
timed. The models are built here (no downloads): a Llama of --hidden/--layers with a BPE vocabulary of --vocab tokens
trained on the toy world's text.

    python scripts/bench_trainers.py                       # hidden 256, 4 layers, vocab 1000 (~4.7M parameters)
    python scripts/bench_trainers.py --steps 40 --batch-size 16 --threads 2 --json bench.json
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

On a CPU shared with other busy processes, use --threads 1 and --repeats 2 or more: more than one OpenMP thread
per process then makes every step many times slower and the timings swing from run to run.
"""
from __future__ import annotations
import argparse, copy, json, sys, tempfile, time, warnings


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--steps', type=int, default=20, help='timed optimizer steps per trainer (default 20)')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps before timing starts, at least 1 (default 3)')
    p.add_argument('--batch-size', type=int, default=8, help='preference pairs per step (default 8)')
    p.add_argument('--max-length', type=int, default=256, help='max tokens of prompt + response (default 256; the toy data fits untruncated)')
    p.add_argument('--hidden', type=int, default=256, help='model hidden size (default 256)')
    p.add_argument('--layers', type=int, default=4, help='model layers (default 4)')
    p.add_argument('--vocab', type=int, default=1000, help='BPE vocabulary size (default 1000)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch.get_num_threads())')
    p.add_argument('--only', choices=['dpo', 'ipo', 'reward', 'memory'], action='append', default=None,
                   help='run only this comparison (repeatable; default: all four)')
    p.add_argument('--lora-r', type=int, default=16, help='LoRA rank of the adapter-off reference run of the memory comparison (default 16)')
    p.add_argument('--memory-child', default=None, help=argparse.SUPPRESS)   # one variant of the memory comparison, in a child process
    p.add_argument('--repeats', type=int, default=1, help='runs of each trainer, alternating which goes first; the best run counts (default 1)')
    p.add_argument('--quick', action='store_true', help='smoke run: hidden 64, 2 layers, vocab 400, 1 warm-up + 3 timed steps, batch 4, 1 thread')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    args = p.parse_args(argv)
    if args.quick:
        args.hidden, args.layers, args.vocab, args.warmup, args.steps, args.batch_size = 64, 2, 400, 1, 3, 4
        args.threads = args.threads or 1   # a tiny model gains nothing from more, and a busy shared CPU punishes them
    for k in ('steps', 'warmup', 'batch_size', 'hidden', 'layers', 'vocab', 'repeats'):
        if getattr(args, k) < 1: p.error(f'--{k.replace("_", "-")} must be positive, got {getattr(args, k)}')
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
    "Wraps a data collator and notes the real (attention-mask) tokens of every batch it makes, in order."
    def __init__(self, collator): self.collator, self.tokens = collator, []
    def __call__(self, features):
        batch = self.collator(features)
        self.tokens.append(int(batch['attention_mask'].sum()))
        return batch


def timed_train(trainer, warmup:int, steps:int)->dict:
    """Train `warmup + steps` steps; steps/s and tokens/s of the last `steps`: overall (total time) and typical (the
    median step, robust to other processes stealing the CPU for a moment)."""
    import statistics
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
    tokens = sum(step_tokens)
    return dict(steps=steps, seconds=round(seconds, 4), steps_per_s=steps / seconds, tokens=tokens, tokens_per_s=tokens / seconds,
                median_steps_per_s=1 / statistics.median(step_s),
                median_tokens_per_s=statistics.median(n / dt for n, dt in zip(step_tokens, step_s)))


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
    if args.threads: torch.set_num_threads(args.threads)
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
    if args.threads: torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    import trl
    from social_align.models import train_bpe_tokenizer, build_tiny_causal_lm, build_tiny_reward_model
    from social_align.toyworld import toy_preferences, toy_corpus
    from social_align.trainers.dpo import PreferenceTrainer, PreferenceConfig

    tok = train_bpe_tokenizer(toy_corpus(), vocab_size=args.vocab, chat_template=None)
    arch = dict(hidden_size=args.hidden, num_layers=args.layers, num_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden)
    policy = build_tiny_causal_lm(tok, seed=args.seed, **arch)
    n_params = sum(p.numel() for p in policy.parameters())
    n_matmul = n_params - policy.get_input_embeddings().weight.numel()        # the embedding lookup is not a matmul
    prefs = toy_preferences(seed=args.seed)
    trl_prefs = datasets.Dataset.from_list([{'prompt': r['prompt'], 'chosen': ' ' + r['chosen'], 'rejected': ' ' + r['rejected']} for r in prefs])
    common = dict(per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps, learning_rate=1e-5,
                  optim='adamw_torch', lr_scheduler_type='constant', logging_steps=args.warmup + args.steps, save_strategy='no',
                  report_to='none', seed=args.seed, disable_tqdm=True, use_cpu=True, bf16=False, dataloader_num_workers=0)
    out_dir = tempfile.mkdtemp()
    print(f'model: Llama hidden {args.hidden}, {args.layers} layers, vocab {len(tok)}: {n_params/1e6:.2f}M parameters '
          f'({n_matmul/1e6:.2f}M in matmuls); {len(prefs)} toy preference pairs; batch {args.batch_size} pairs; '
          f'max_length {args.max_length}; torch threads {threads}; {args.warmup} warm-up + {args.steps} timed steps', flush=True)

    results, ratios = {}, {}
    keys = ('steps_per_s', 'tokens_per_s', 'median_steps_per_s', 'median_tokens_per_s')
    def report(name, r, flops_per_token, rep):
        r['model_flops_per_s'] = flops_per_token * r['tokens_per_s']
        tag = f' (run {rep + 1})' if args.repeats > 1 else ''
        print(f'{name + tag:28s} {r["steps_per_s"]:7.3f} steps/s  {r["tokens_per_s"]:9.1f} tokens/s  '
              f'{r["model_flops_per_s"]/1e9:7.2f} GFLOP/s (6N)   median step: {r["median_steps_per_s"]:7.3f} steps/s '
              f'{r["median_tokens_per_s"]:9.1f} tokens/s', flush=True)
        if name not in results or r['steps_per_s'] > results[name]['steps_per_s']: results[name] = r   # best of the runs

    # one factory per (comparison, side): a fresh trainer from the same initial weights each time
    def dpo_pair(loss_type):
        ours = lambda: PreferenceTrainer(copy.deepcopy(policy), PreferenceConfig(output_dir=out_dir, loss_type=loss_type,
                                         max_length=args.max_length, **common), train_dataset=prefs, processing_class=tok)
        theirs = lambda: trl.DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(policy), train_dataset=trl_prefs,
                                        processing_class=tok, args=trl.DPOConfig(output_dir=out_dir, loss_type=[loss_type],
                                        max_length=args.max_length, **common))
        return ours, theirs, 6 * n_matmul
    def reward_pair():
        from social_align.trainers.reward import RewardModelTrainer, RewardConfig
        rm = build_tiny_reward_model(tok, seed=args.seed, **arch)
        ours = lambda: RewardModelTrainer(copy.deepcopy(rm), args=RewardConfig(output_dir=out_dir, max_length=args.max_length, **common),
                                          train_dataset=prefs, processing_class=tok)
        # TRL gets exactly our token ids (its RewardTrainer takes pre-tokenized chosen_ids / rejected_ids)
        tokenized = ours().train_dataset
        ids = datasets.Dataset.from_dict({'chosen_ids': tokenized['chosen_input_ids'], 'rejected_ids': tokenized['rejected_input_ids']})
        theirs = lambda: trl.RewardTrainer(model=copy.deepcopy(rm), train_dataset=ids, processing_class=tok,
                                           args=trl.RewardConfig(output_dir=out_dir, max_length=args.max_length, **common))
        return ours, theirs, 6 * (sum(p.numel() for p in rm.parameters()) - rm.get_input_embeddings().weight.numel())

    wanted = args.only or ['dpo', 'ipo', 'reward', 'memory']
    pairs = {label: (dpo_pair(lt) if label != 'reward' else reward_pair())
             for label, lt in (('dpo', 'sigmoid'), ('ipo', 'ipo'), ('reward', None)) if label in wanted}
    for label, (ours, theirs, flops_per_token) in pairs.items():
        for rep in range(args.repeats):          # alternate who goes first, so a slow spell of the machine hits both
            order = [('social_align', ours), ('trl', theirs)]
            for side, make in (order if rep % 2 == 0 else order[::-1]):
                trainer = make()
                report(f'{label} {side}', timed_train(trainer, args.warmup, args.steps), flops_per_token, rep)
                del trainer
        ratios[label] = {k: results[f'{label} social_align'][k] / results[f'{label} trl'][k] for k in keys}
    if args.repeats > 1: print(f'(best of {args.repeats} runs below)')

    peak = None
    if results:   # the machine's matmul speed on the model's own shapes: [tokens of a step, hidden] @ [hidden, 4*hidden]
        step_tokens = int(next(iter(results.values()))['tokens'] / args.steps)
        peak = matmul_flops(step_tokens, args.hidden, 4 * args.hidden)
        print(f'\nmatmul [{step_tokens} x {args.hidden}] @ [{args.hidden} x {4*args.hidden}] on {threads} thread(s): {peak/1e9:.2f} GFLOP/s')
        for name, r in results.items():
            r['share_of_matmul_flops'] = r['model_flops_per_s'] / peak
            ref = ' (+2N reference forward: {:.1%})'.format(r['share_of_matmul_flops'] / 3) if not name.startswith('reward') else ''
            print(f'{name:22s} model FLOP/s = {r["share_of_matmul_flops"]:.1%} of matmul FLOP/s{ref}')
        print('\nratios ours / TRL (target >= 1.0):')
        for label, rt in ratios.items():
            print(f'ratio {label:7s} steps/s {rt["steps_per_s"]:.2f}  tokens/s {rt["tokens_per_s"]:.2f}   '
                  f'(median step: steps/s {rt["median_steps_per_s"]:.2f}  tokens/s {rt["median_tokens_per_s"]:.2f})')
    memory = memory_comparison(args, [a for a in argv if a != '--json' and a != args.json]) if 'memory' in wanted else None
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(config=vars(args), threads=threads, params=n_params, matmul_params=n_matmul, matmul_flops_per_s=peak,
                           results=results, ratios=ratios, memory=memory), f, indent=1)

if __name__ == '__main__': main()

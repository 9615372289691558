#!/usr/bin/env python
"""Speed of one Sandbox round (social_align.sandbox).

Against an OpenAI-compatible server (the default): a small real server on 127.0.0.1 (`toy_openai_server`) that takes
--latency seconds per request, and one round of --size x --size agents (default 16), sent one prompt per request
(before issue 18) and in as few requests as the completions endpoint allows (`prompts_per_request`, the default now),
side by side: requests per round, round time / latency, and whether both wrote the same records. With --vllm, the
same two runs against a real `vllm serve` of a tiny model (latency: the server's own).

    python scripts/bench_sandbox.py                       # toy server, L = 0.2 s, 16 agents
    python scripts/bench_sandbox.py --latency 0.5 --vllm  # and against vllm serve

With --hf: phase-batched vs agent-by-agent on one tiny HF model (every agent its own HFGenerator with batch size 1,
what the original's one-API-call-per-agent loop did). Model and embedder loading are not timed.
"""
from __future__ import annotations
import argparse, contextlib, json, tempfile, time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', type=int, default=4, help='grid side: size*size agents (default 4 = 16 agents)')
    p.add_argument('--rounds', type=int, default=1, help='rounds per run (default 1)')
    p.add_argument('--latency', type=float, default=0.2, help='toy server: seconds per request (default 0.2)')
    p.add_argument('--max_concurrency', '--max-concurrency', type=int, default=8, help='requests in flight at once (default 8, the default)')
    p.add_argument('--vllm', action='store_true', help='also run against a real `vllm serve` of a tiny model')
    p.add_argument('--hf', action='store_true', help='instead: phase-batched vs agent-by-agent on one tiny HF model')
    p.add_argument('--max_new_tokens', '--max-new-tokens', type=int, default=32, help='tokens per generation (default 32)')
    p.add_argument('--batch_size', '--batch-size', type=int, default=128, help='--hf batched run: sequences per generate call (default 128)')
    p.add_argument('--hidden_size', '--hidden-size', type=int, default=64, help='tiny model width (default 64)')
    p.add_argument('--model_name_or_path', '--model', default=None, help='a local causal LM folder (default: a tiny random Llama built here)')
    p.add_argument('--quick', action='store_true', help='small settings for a fast check (16 new tokens, 2x2 agents with --hf)')
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    return p.parse_args(argv)


def tiny_model(args):
    from social_align.models import tiny_tokenizer, build_tiny_causal_lm, load_causal_lm, load_tokenizer
    if args.model_name_or_path: return load_causal_lm(args.model_name_or_path, dtype='fp32', device='cpu'), load_tokenizer(args.model_name_or_path)
    tok = tiny_tokenizer()
    return build_tiny_causal_lm(tok, seed=0, hidden_size=args.hidden_size, num_layers=2, num_heads=2, intermediate_size=2*args.hidden_size), tok


def server_round(url, args, emb, tmp, name, prompts_per_request, latency):
    "One run of `run_sandbox` on the server at `url`: its requests per round, round seconds, and records."
    from social_align.generation import OpenAIGenerator
    from social_align.sandbox import SandboxConfig, LMJudge, run_sandbox
    g = OpenAIGenerator(url, max_concurrency=args.max_concurrency, prompts_per_request=prompts_per_request, timeout=600)
    cfg = SandboxConfig(size=args.size, rounds=args.rounds, max_new_tokens=args.max_new_tokens, retries=0,
                        output_dir=str(Path(tmp)/name))
    path = run_sandbox(cfg, g, LMJudge(g, retries=0, max_new_tokens=args.max_new_tokens), embedder=emb, progress=False)
    stats = [json.loads(l) for l in Path(cfg.output_dir, 'stats.jsonl').read_text().splitlines()]
    secs = sum(s['seconds'] for s in stats)/len(stats)
    res = {'requests_per_round': g.requests_total/args.rounds, 'round_s': secs,
           'round_over_latency': secs/latency if latency else None, 'records': path.read_text()}
    g.close()
    return res


def side_by_side(title, before, after, latency):
    same = before.pop('records') == after.pop('records')
    print(f'{title} (latency L = {latency:.3g} s)' if latency else title)
    print(f'  {"":<28}{"requests/round":>16}{"round s":>10}{"round / L":>11}')
    for name, r in (('one prompt per request', before), ('a phase in few requests', after)):
        ratio = f'{r["round_over_latency"]:.1f}' if r['round_over_latency'] is not None else '-'
        print(f'  {name:<28}{r["requests_per_round"]:>16.0f}{r["round_s"]:>10.2f}{ratio:>11}')
    print(f'  same records: {same}; speed-up {before["round_s"]/after["round_s"]:.1f}x')
    return {'before': before, 'after': after, 'same_records': same}


def main_server(args):
    from social_align.generation import toy_openai_server, vllm_server, vllm_available
    from social_align.models import Embedder, save_model
    emb, n, out = Embedder(), args.size**2, {}
    print(f'{n} agents, {args.rounds} round(s), max_concurrency {args.max_concurrency}, {args.max_new_tokens} new tokens')
    with tempfile.TemporaryDirectory() as tmp:
        with toy_openai_server(latency=args.latency) as srv:
            runs = [server_round(srv.url, args, emb, tmp, f'toy{k}', k, args.latency) for k in (1, 64)]
            out['toy'] = side_by_side(f'toy server on 127.0.0.1, {n} agents', *runs, args.latency)
        if args.vllm:
            if not vllm_available(): raise SystemExit('--vllm: vLLM is not installed here')
            lm, tok = tiny_model(args)
            model_dir = save_model(lm, tok, Path(tmp)/'tiny')
            with vllm_server(model_dir, dtype='fp32', max_model_len=1024, enforce_eager=True) as url:
                from social_align.generation import OpenAIGenerator
                probe = OpenAIGenerator(url, prompts_per_request=1)     # the server's own latency: one short request
                probe.generate(['Hello'], max_new_tokens=args.max_new_tokens, temperature=0)
                t0 = time.perf_counter(); probe.generate(['Hello'], max_new_tokens=args.max_new_tokens, temperature=0)
                lat = time.perf_counter() - t0; probe.close()
                runs = [server_round(url, args, emb, tmp, f'vllm{k}', k, lat) for k in (1, 64)]
                out['vllm'] = side_by_side(f'vllm serve of a tiny model, {n} agents', *runs, lat)
    if args.json: Path(args.json).write_text(json.dumps(out, indent=2))
    return out


def main_hf(args):
    import torch
    from social_align.generation import HFGenerator
    from social_align.models import Embedder
    from social_align.sandbox import SandboxConfig, LMJudge, run_sandbox
    lm, tok = tiny_model(args)
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


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.max_new_tokens = min(args.max_new_tokens, 16)
        if args.hf: args.size = min(args.size, 2)
    return main_hf(args) if args.hf else main_server(args)


if __name__ == '__main__': main()

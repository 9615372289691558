"""Evaluate reward models and policies (social_align.evaluation) and write the results as JSON; or build a run report.

Tasks (--task) and what they read:
  rm_accuracy      --model_name_or_path RM --data_path prefs.jsonl   accuracy (r_chosen > r_rejected, ties wrong), loss, margin
  implicit_reward  --model_name_or_path POLICY --ref_model_name_or_path REF --data_path prefs.jsonl [--beta 0.1 --average False]
                   (--average True for IPO/SSO per-token-averaged log-probs)
                   (prefs.jsonl: preference records, or HH-RLHF's {chosen, rejected} dialogues and UltraFeedback's records as published)
  ab               --model_name_or_path LM [--data_path ab.jsonl]    A/B choice in both orders (default: packaged toy-world items);
                   or --data_path hhh_alignment/ (BIG-bench's HHH task folder, or one task.json): accuracy per category
  mc1              --model_name_or_path LM [--data_path mc1.jsonl]   MC1 (default: packaged toy-world items); or TruthfulQA's mc_task.json
  win_rate         --data_path pairs.jsonl with {prompt, response_a, response_b}, or {prompt} plus --model_name_or_path (A)
                   and --model_b_name_or_path (B) to generate greedily; judged by --reward_model_name_or_path, or by
                   --judge_model_name_or_path (an LM asked in both orders); ties count half
  gen_stats        --data_path samples.jsonl with {prompt, response}, or {prompt} plus --model_name_or_path to sample;
                   reward with --reward_model_name_or_path, KL with --model_name_or_path and --ref_model_name_or_path
  report           --run_dir RUN --report_dir OUT                    report.md + report.html (figures embedded)

    python scripts/evaluate.py --task rm_accuracy --model_name_or_path runs/rm --data_path data/prefs_eval.jsonl --output eval/rm.json

Sampling (win_rate and gen_stats from {prompt} records, an LM judge's votes) runs in chunks of --chunk_size prompts,
chunk k seeded from --seed and its place; under accelerate launch (or torchrun) the chunks are split across the
processes, each on its own device, and gathered in prompt order, so N processes sample exactly what one samples.
The scoring and every other task run on the main process, which alone prints and writes --output. --save_samples
keeps what was generated as the JSONL the task reads ({prompt, response} or {prompt, response_a, response_b}):

    accelerate launch --num_processes 8 scripts/evaluate.py --task gen_stats --model_name_or_path runs/dpo \\
        --data_path data/prompts.jsonl --n_samples 4 --reward_model_name_or_path runs/rm --save_samples eval/samples.jsonl
"""
import json, os, sys
from dataclasses import dataclass, field

from social_align.trainers.command_line import parse_cli, use_cpu_ranks_without_accelerator

TASKS = ('rm_accuracy', 'implicit_reward', 'ab', 'mc1', 'win_rate', 'gen_stats', 'report')


@dataclass
class EvalArguments:
    "Flags of scripts/evaluate.py."
    task: str = field(metadata={'help': 'what to evaluate: ' + ', '.join(TASKS)})
    model_name_or_path: str | None = field(default=None, metadata={'help': 'the model evaluated (reward model for rm_accuracy; policy / policy A otherwise)'})
    ref_model_name_or_path: str | None = field(default=None, metadata={'help': 'the reference policy (implicit_reward, gen_stats KL)'})
    model_b_name_or_path: str | None = field(default=None, metadata={'help': 'policy B of win_rate, when responses are generated'})
    reward_model_name_or_path: str | None = field(default=None, metadata={'help': 'reward model judging win_rate / scoring gen_stats', 'aliases': ['--reward_model_path']})
    judge_model_name_or_path: str | None = field(default=None, metadata={'help': 'causal LM judging win_rate in both answer orders'})
    data_path: str | None = field(default=None, metadata={'help': 'the evaluation data (.jsonl; see the task list)'})
    output: str | None = field(default=None, metadata={'help': 'write the JSON results here (default: print only)'})
    name: str | None = field(default=None, metadata={'help': 'name of this result in reports (default: the task)'})
    beta: float = field(default=0.1, metadata={'help': 'β of the implicit reward'})
    average: bool = field(default=False, metadata={'help': 'implicit_reward: per-token-averaged log-probs (IPO/SSO) instead of sums (DPO)'})
    batch_size: int = field(default=16, metadata={'help': 'sequences per forward'})
    dialogue_format: str | None = field(default=None, metadata={'help': "rm_accuracy / implicit_reward: how HH-RLHF-shaped pairs are split: None (the record's own form), 'text', 'messages' or 'lmflow' (as the trainers' --dialogue_format)", 'choices': [None, 'text', 'messages', 'lmflow']})
    max_new_tokens: int = field(default=64, metadata={'help': 'generation length (win_rate / gen_stats when generating)'})
    n_samples: int = field(default=1, metadata={'help': 'gen_stats: samples per prompt when generating'})
    temperature: float = field(default=1.0, metadata={'help': 'gen_stats sampling temperature (win_rate generates greedily)'})
    chunk_size: int = field(default=64, metadata={'help': 'prompts per generate call when sampling, each chunk seeded from --seed and its place (the unit split across processes)'})
    seed: int = field(default=0, metadata={'help': 'sampling seed (each chunk samples with a seed derived from it and the chunk\'s first prompt)'})
    save_samples: str | None = field(default=None, metadata={'help': 'win_rate / gen_stats: write the generated responses here as JSONL (the records the task reads)'})
    max_examples: int | None = field(default=None, metadata={'help': 'use only the first N records'})
    run_dir: str | None = field(default=None, metadata={'help': 'report: the run folder to report on'})
    report_dir: str | None = field(default=None, metadata={'help': 'report: where report.md / report.html go (default: RUN/report)'})
    title: str | None = field(default=None, metadata={'help': 'report title'})
    device: str | None = field(default=None, metadata={'help': "'cpu', 'cuda', ... (default: the best available; under a multi-process launch, the process's own)"})


def parse_args(argv=None):
    use_cpu_ranks_without_accelerator()                               # a launch on a machine with no GPU: gloo between CPU ranks
    (args,) = parse_cli((EvalArguments,), argv, description=__doc__.split('\n\n')[0])
    if args.task not in TASKS: sys.exit(f'evaluate.py: error: --task must be one of {", ".join(TASKS)}, got {args.task!r}')
    if args.chunk_size < 1: sys.exit(f'evaluate.py: error: --chunk_size must be >= 1, got {args.chunk_size}')
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:                       # join the launch's processes (gloo on CPU ranks)
        from social_align.core import distributed_state
        state = distributed_state()
        if args.device is None: args.device = str(state.device)          # every process on its own device
    return args


def is_main()->bool:
    from social_align.core import process_info
    return process_info()[0] == 0


def need(args, *names):
    miss = [n for n in names if getattr(args, n) is None]
    if miss: sys.exit(f'evaluate.py: error: --task {args.task} needs ' + ', '.join('--' + m for m in miss))


def records(args, schema=None):
    "The --data_path records (with `schema`: validated by `load_records`, HH-RLHF's implicit prompt split); the first --max_examples."
    if schema is not None:
        from social_align.data import load_records
        recs = load_records(args.data_path, schema, dialogue_format=args.dialogue_format)
    else:
        from social_align.core import read_jsonl
        recs = read_jsonl(args.data_path)
    return recs[:args.max_examples] if args.max_examples else recs


def lm(path, args):
    from social_align.models import load_causal_lm, load_tokenizer
    return load_causal_lm(path, device=args.device), load_tokenizer(path)


def generate(path, prompts, args, n=1, temperature=0.0):
    "Every prompt's samples, in prompt order, on every process (the chunks split across a launch's processes)."
    from social_align.evaluation import sample_chunks
    from social_align.generation import HFGenerator
    model, tok = lm(path, args)
    gen = HFGenerator(model, tok, batch_size=args.batch_size)
    return sample_chunks(gen, prompts, args.chunk_size, args.seed, n=n, temperature=temperature, max_new_tokens=args.max_new_tokens)


def save_samples(args, recs):
    if args.save_samples and is_main():
        from social_align.core import write_jsonl
        write_jsonl(args.save_samples, recs)


def run_task(args)->dict|None:
    "The task's results on the main process; None on the others (they only share the sampling)."
    from social_align import evaluation as E
    from social_align.models import load_reward_model, load_tokenizer
    t = args.task
    if t not in ('win_rate', 'gen_stats') and not is_main(): return None
    if t == 'report':
        need(args, 'run_dir')
        from pathlib import Path
        from social_align.report import write_report
        rep = write_report(args.run_dir, args.report_dir or Path(args.run_dir)/'report', title=args.title)
        return {k: [str(p) for p in v] if isinstance(v, list) else str(v) for k, v in rep.items()}
    if t == 'rm_accuracy':
        need(args, 'model_name_or_path', 'data_path')
        tok = load_tokenizer(args.model_name_or_path)
        rm = load_reward_model(args.model_name_or_path, device=args.device, tokenizer=tok)
        return E.rm_accuracy(rm, tok, records(args, 'preference'), batch_size=args.batch_size)
    if t == 'implicit_reward':
        need(args, 'model_name_or_path', 'ref_model_name_or_path', 'data_path')
        pol, tok = lm(args.model_name_or_path, args)
        ref, _ = lm(args.ref_model_name_or_path, args)
        return E.implicit_reward_accuracy(pol, ref, tok, records(args, 'preference'), beta=args.beta, average=args.average, batch_size=args.batch_size)
    if t in ('ab', 'mc1'):
        need(args, 'model_name_or_path')
        model, tok = lm(args.model_name_or_path, args)
        if t == 'ab':
            items = E.load_ab_items(args.data_path or E.eval_asset('ab_toyworld.jsonl'))
            return E.ab_accuracy(model, tok, items[:args.max_examples] if args.max_examples else items, batch_size=args.batch_size)
        items = E.load_mc1_items(args.data_path or E.eval_asset('mc1_toyworld.jsonl'))
        return E.mc1_accuracy(model, tok, items[:args.max_examples] if args.max_examples else items, batch_size=args.batch_size)
    need(args, 'data_path')
    recs = records(args)
    prompts = [r['prompt'] for r in recs]
    if t == 'win_rate':
        if all('response_a' in r and 'response_b' in r for r in recs):
            ya, yb = [r['response_a'] for r in recs], [r['response_b'] for r in recs]
        else:
            need(args, 'model_name_or_path', 'model_b_name_or_path')
            ya = [o[0] for o in generate(args.model_name_or_path, prompts, args)]
            yb = [o[0] for o in generate(args.model_b_name_or_path, prompts, args)]
            save_samples(args, [{'prompt': p, 'response_a': a, 'response_b': b} for p, a, b in zip(prompts, ya, yb)])
        if args.reward_model_name_or_path:
            if not is_main(): return None
            tok = load_tokenizer(args.reward_model_name_or_path)
            rm = load_reward_model(args.reward_model_name_or_path, device=args.device, tokenizer=tok)
            return {'judge': 'reward_model', **E.reward_win_rate(rm, tok, prompts, ya, yb, batch_size=args.batch_size)}
        if args.judge_model_name_or_path:
            from social_align.generation import HFGenerator
            model, tok = lm(args.judge_model_name_or_path, args)
            res = E.judge_win_rate(HFGenerator(model, tok, batch_size=args.batch_size), prompts, ya, yb, chunk_size=args.chunk_size)
            return {'judge': 'lm', **res} if is_main() else None
        sys.exit('evaluate.py: error: --task win_rate needs --reward_model_name_or_path or --judge_model_name_or_path')
    # gen_stats
    if all('response' in r for r in recs): ys = [r['response'] for r in recs]
    else:
        need(args, 'model_name_or_path')
        outs = generate(args.model_name_or_path, prompts, args, n=args.n_samples, temperature=args.temperature)
        prompts, ys = [p for p, o in zip(prompts, outs) for _ in o], [y for o in outs for y in o]
        save_samples(args, [{'prompt': p, 'response': y} for p, y in zip(prompts, ys)])
    if not is_main(): return None
    rewards = pol_lp = ref_lp = None
    if args.reward_model_name_or_path:
        tok = load_tokenizer(args.reward_model_name_or_path)
        rm = load_reward_model(args.reward_model_name_or_path, device=args.device, tokenizer=tok)
        rewards = E.reward_scores(rm, tok, prompts, ys, batch_size=args.batch_size)
    if args.ref_model_name_or_path:
        need(args, 'model_name_or_path')
        pol, tok = lm(args.model_name_or_path, args)
        ref, _ = lm(args.ref_model_name_or_path, args)
        kl = E.sample_kl(pol, ref, tok, prompts, ys, batch_size=args.batch_size)
        pol_lp, ref_lp = kl['policy_logps'], kl['ref_logps']
    return E.generation_stats(ys, rewards, pol_lp, ref_lp)


def main(argv=None):
    args = parse_args(argv)
    from social_align.core import DataError
    try: results = run_task(args)
    except (DataError, ValueError, FileNotFoundError, KeyError) as e: sys.exit(f'evaluate.py: error: {type(e).__name__}: {e}')
    if results is None: return                                          # a process of a launch other than the main one
    out = {'task': args.task, 'name': args.name or args.task, 'results': results}
    text = json.dumps(out, indent=2, default=str)
    if args.output:
        from pathlib import Path
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    print(text)


if __name__ == '__main__':
    main()
    from social_align.core import finish_processes
    finish_processes()   # every process waits for the others, then leaves the launch's process group

"""Throughput of online RL, ours against TRL's, side by side in one run: samples per second of RLTrainer's GRPO and
TRL's GRPOTrainer, and of RLTrainer's RLOO and TRL's RLOOTrainer, on the same model, prompts, reward function and
settings (transformers generation, the same max_new_tokens / max_completion_length, num_generations, prompts per step,
one pass over each rollout, learning rate, temperature, beta), printing the ratios ours / TRL's (target >= 1.0).

    python scripts/bench_rl.py                                    # a tiny random Llama built from a config
    python scripts/bench_rl.py --model_name_or_path runs/sft --steps 20 --prompts_per_step 8 --num_generations 8 \\
        --max_new_tokens 128 --json bench_rl.json

A sample is one prompt + completion; samples/s = steps x prompts_per_step x num_generations / the trainer's
train_runtime (which includes its first step). Numbers from a shared or loaded machine are not comparable: measure on
an idle one.
"""
import argparse, json, os, sys, tempfile, time, warnings
from pathlib import Path

PROMPTS = ['What is kind?', 'Tell me about Paris.', 'How do I sleep well?', 'Help me cook.', 'What is safe online?',
           'Write a note.', 'Be honest.', 'Who are you?']


def vowel_share(text:str)->float:
    "The reward of every trainer here: the share of vowels among a completion's letters."
    letters = [c for c in text.lower() if c.isalpha()]
    return sum(c in 'aeiou' for c in letters) / max(len(letters), 1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model_name_or_path', default=None, help='a causal LM folder or hub name (default: a tiny random Llama)')
    p.add_argument('--steps', type=int, default=4, help='RL steps of each trainer')
    p.add_argument('--prompts_per_step', type=int, default=4)
    p.add_argument('--num_generations', type=int, default=4, help='completions per prompt (our num_samples)')
    p.add_argument('--max_new_tokens', type=int, default=16, help="our max_new_tokens = TRL's max_completion_length")
    p.add_argument('--learning_rate', type=float, default=1e-5)
    p.add_argument('--temperature', type=float, default=1.0)
    p.add_argument('--beta', type=float, default=0.0, help='KL coefficient of every trainer')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--only', choices=['grpo', 'rloo'], default=None, help='run one pair only')
    p.add_argument('--json', default=None, help='also write the results here')
    a = p.parse_args(argv)
    for k in ('steps', 'prompts_per_step', 'max_new_tokens'):
        if getattr(a, k) < 1: p.error(f'--{k} must be >= 1')
    if a.num_generations < 2: p.error('--num_generations must be >= 2 (GRPO and RLOO compare samples of one prompt)')
    return a


def model_folder(a, root:Path)->str:
    if a.model_name_or_path: return a.model_name_or_path
    from social_align.models import tiny_tokenizer, build_tiny_causal_lm, save_model
    tok = tiny_tokenizer(vocab_size=300, chat_template=None)
    save_model(build_tiny_causal_lm(tok, seed=a.seed, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128), tok, root/'policy')
    return str(root/'policy')


def ours(algorithm:str, a, model:str, out:Path)->float:
    "Samples/s of RLTrainer."
    from social_align.trainers.rl import RLConfig, RLTrainer
    cfg = RLConfig(output_dir=str(out), algorithm=algorithm, num_samples=a.num_generations, max_new_tokens=a.max_new_tokens,
                   per_device_train_batch_size=a.prompts_per_step, max_steps=a.steps, ppo_epochs=1, num_mini_batches=1,
                   learning_rate=a.learning_rate, temperature=a.temperature, kl_coef=a.beta, seed=a.seed,
                   report_to='none', disable_tqdm=True, save_strategy='no')
    tr = RLTrainer(model, cfg, PROMPTS, reward_funcs=vowel_share)
    m = tr.train(); tr.close()
    return a.steps * a.prompts_per_step * a.num_generations / m['train_runtime']


def trl(algorithm:str, a, model:str, out:Path)->float:
    "Samples/s of TRL's GRPOTrainer or RLOOTrainer."
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if algorithm == 'grpo' else (RLOOConfig, RLOOTrainer)
    def reward(completions, **_): return [vowel_share(c) for c in completions]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        cfg = config_cls(output_dir=str(out), num_generations=a.num_generations, max_completion_length=a.max_new_tokens,
                         per_device_train_batch_size=a.prompts_per_step * a.num_generations, max_steps=a.steps,
                         learning_rate=a.learning_rate, temperature=a.temperature, beta=a.beta, seed=a.seed,
                         report_to='none', disable_tqdm=True, save_strategy='no', logging_steps=a.steps, use_cpu=not _cuda())
        tr = trainer_cls(model=model, reward_funcs=reward, args=cfg, train_dataset=Dataset.from_list([{'prompt': p} for p in PROMPTS]))
        m = tr.train().metrics
    return a.steps * a.prompts_per_step * a.num_generations / m['train_runtime']


def _cuda()->bool:
    import torch
    return torch.cuda.is_available()


def main(argv=None):
    a = parse_args(argv)
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    import transformers; transformers.utils.logging.set_verbosity_error(); transformers.utils.logging.disable_progress_bar()
    results = {'settings': vars(a)}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d); model = model_folder(a, root)
        for alg in ([a.only] if a.only else ['grpo', 'rloo']):
            s_ours = ours(alg, a, model, root/f'ours-{alg}')
            s_trl = trl(alg, a, model, root/f'trl-{alg}')
            name = 'GRPOTrainer' if alg == 'grpo' else 'RLOOTrainer'
            results[alg] = {'ours_samples_per_s': round(s_ours, 3), 'trl_samples_per_s': round(s_trl, 3), 'ratio': round(s_ours / s_trl, 3)}
            print(f'{alg}: ours {s_ours:.2f} samples/s, TRL {name} {s_trl:.2f} samples/s; ours / TRL {name} = {s_ours / s_trl:.2f}', flush=True)
    if a.json: Path(a.json).write_text(json.dumps(results, indent=1) + '\n')
    return results


if __name__ == '__main__': main()

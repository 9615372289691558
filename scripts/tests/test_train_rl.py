"End-to-end runs of scripts/train_rl.py as real subprocesses: RLOO in one process, PPO in two data-parallel CPU processes."
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

SCRIPTS = Path(__file__).parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}
FLAGS = ['--per_device_train_batch_size', '2', '--max_new_tokens', '6', '--learning_rate', '3e-3', '--temperature', '1.0',
         '--report_to', 'none', '--disable_tqdm', 'True', '--seed', '0', '--ppo_epochs', '2']
LAUNCH2 = (sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(SCRIPTS/'configs'/'cpu.yaml'), '--num_processes', '2')

def write_jsonl(path, recs):
    path.write_text(''.join(json.dumps(r) + '\n' for r in recs))
    return path

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny Llama policy and a tiny reward model (same tokenizer) saved to folders, and prompt records."
    from social_align.models import tiny_tokenizer, build_tiny_causal_lm, build_tiny_reward_model, save_model
    root = tmp_path_factory.mktemp('tiny')
    tok = tiny_tokenizer(vocab_size=300, chat_template=None)
    kw = dict(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128)
    save_model(build_tiny_causal_lm(tok, seed=0, **kw), tok, root/'policy')
    save_model(build_tiny_reward_model(tok, seed=1, **kw), tok, root/'rm')
    qs = ['What is kind?', 'Tell me about Paris.', 'How do I sleep well?', 'Help me cook.', 'Be honest.', 'Who are you?']
    data = write_jsonl(root/'prompts.jsonl', [{'prompt': f'Query: {q}'} for q in qs] + [{'prompt': [{'role': 'user', 'content': 'Hello?'}]}])
    return dict(policy=root/'policy', rm=root/'rm', data=data)

def run(*args, launcher=(sys.executable,)):
    return subprocess.run([*launcher, str(SCRIPTS/'train_rl.py'), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=ENV)

def history(out): return json.loads((out/'trainer_state.json').read_text())['log_history']

def check_outputs(out, steps):
    assert (out/'model.safetensors').exists() and not list(out.glob('*.bin'))
    assert (out/'tokenizer.json').exists() and (out/'training_args.json').exists() and (out/'rl.png').exists()
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(out)                  # loads in plain transformers
    h = history(out)
    assert [r['step'] for r in h] == list(range(1, steps + 1))
    for k in ('score', 'reward', 'kl', 'response_length', 'entropy', 'policy_loss', 'clip_fraction', 'kl_coef', 'num_samples'):
        assert k in h[0], h[0]
    assert json.loads((out/'train_results.json').read_text())['global_step'] == steps
    return h

def test_rloo_single_process(tiny, tmp_path):
    out = tmp_path/'rloo'
    r = run('--model_name_or_path', tiny['policy'], '--reward_model_path', tiny['rm'], '--data_path', tiny['data'],
            '--output_dir', out, '--algorithm', 'rloo', '--num_samples', '3', '--max_steps', '3', '--kl_coef', '0.1', *FLAGS)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'rloo training: 3 RL steps on 1 process(es), 6 samples per step' in r.stdout, r.stdout[-2000:]
    h = check_outputs(out, 3)
    assert {x['num_samples'] for x in h} == {6} and 'value_loss' not in h[0]
    assert abs(h[0]['kl']) < 1e-4                              # the first samples come from the reference itself
    assert not (out/'value_model').exists()
    assert json.loads((out/'training_args.json').read_text())['num_samples'] == 3

def test_ppo_two_processes(tiny, tmp_path):
    "A real 2-process data-parallel PPO run (gloo): each rank samples its own prompts, and the step logs both ranks' samples."
    out = tmp_path/'ppo'
    r = run('--model_name_or_path', tiny['policy'], '--reward_model_path', tiny['rm'], '--data_path', tiny['data'],
            '--output_dir', out, '--algorithm', 'ppo', '--max_steps', '3', '--num_mini_batches', '2', *FLAGS, launcher=LAUNCH2)
    assert r.returncode == 0, r.stderr[-4000:]
    assert 'ppo training: 3 RL steps on 2 process(es), 4 samples per step' in r.stdout, r.stdout[-2000:]
    h = check_outputs(out, 3)
    assert {x['num_samples'] for x in h} == {4}                # 2 processes x 2 prompts x 1 sample
    assert all('value_loss' in x for x in h)
    from transformers import AutoModelForSequenceClassification
    AutoModelForSequenceClassification.from_pretrained(out/'value_model')

GRPO_FLAGS = ['--algorithm', 'grpo', '--num_generations', '2', '--beta', '0.1', '--scale_rewards', 'batch', '--loss_type', 'dapo',
              '--seed_per_prompt', 'True', '--max_steps', '2', *FLAGS, '--num_iterations', '2']
EQUAL_FLAGS = {   # per algorithm: its flags, and which logged quantities must agree at which steps
    'grpo': (GRPO_FLAGS, ('score', 'reward', 'kl', 'policy_loss'), 2),
    'rloo': (['--algorithm', 'rloo', '--num_samples', '2', '--kl_coef', '0.1', '--seed_per_prompt', 'True', '--max_steps', '2', *FLAGS],
             ('score', 'reward', 'kl', 'policy_loss'), 2),
    'ppo':  (['--algorithm', 'ppo', '--kl_coef', '0.1', '--seed_per_prompt', 'True', '--max_steps', '1', *FLAGS], ('score', 'reward', 'kl'), 1)}

@pytest.mark.parametrize('algorithm', list(EQUAL_FLAGS))
def test_two_processes_equal_one(algorithm, tiny, tmp_path):
    """1 process with 4 prompts a step and 2 processes with 2 each (TRL's flag names): with per-prompt seeded sampling both
    draw the same responses for the same prompts, so everything that is a function of the global batch agrees.
    grpo: the scores, the KL, the 'batch'-scaled advantages (global std) and the 'dapo' loss (global token normaliser), hence
    the gradients, the updated weights and step 2's rollout and loss (the second pass of each step depends on the update).
    rloo: the scores, the KL, the advantages (leave-one-out within a prompt's samples, whitened with the global batch's
    mean and std) and the loss (a mean over sequences, equal counts on both processes, which DDP's gradient mean keeps), so
    step 2 too. ppo: the rollout's scores, KL and rewards (and the globally whitened advantages); its policy and value
    losses are token means of each process's own tokens, which DDP averages per process, so they (and what follows the
    update) need not agree when the processes' responses differ in length."""
    flags, same, steps = EQUAL_FLAGS[algorithm]
    one, two = tmp_path/'one', tmp_path/'two'
    base = ['--model_name_or_path', tiny['policy'], '--reward_model_name_or_path', tiny['rm'], '--data_path', tiny['data']]
    r1 = run(*base, '--output_dir', one, *flags, '--per_device_train_batch_size', '4')
    assert r1.returncode == 0, r1.stderr[-3000:]
    k = 1 if algorithm == 'ppo' else 2
    assert f'{algorithm} training: {steps} RL steps on 1 process(es), {4 * k} samples per step' in r1.stdout, r1.stdout[-2000:]
    r2 = run(*base, '--output_dir', two, *flags, '--per_device_train_batch_size', '2', launcher=LAUNCH2)
    assert r2.returncode == 0, r2.stderr[-4000:]
    h1, h2 = check_outputs(one, steps), check_outputs(two, steps)
    for a, b in zip(h1, h2):
        for key in same: assert abs(a[key] - b[key]) < 1e-4, (key, a, b)
    assert abs(h1[0]['kl']) < 1e-4                                  # the first rollout comes from the reference
    if algorithm == 'grpo':
        assert 'value_loss' not in h1[0] and not (one/'value_model').exists()
        args = json.loads((one/'training_args.json').read_text())
        assert (args['num_samples'], args['kl_coef'], args['ppo_epochs'], args['scale_rewards']) == (2, 0.1, 2, 'batch')
    if steps > 1: assert abs(h1[1]['kl']) > 1e-4                    # the update moved the policy, and step 2 agrees all the same

def test_rloo_two_processes_vllm(tiny, tmp_path):
    "RLOO sampling with an in-process vLLM engine on each of 2 processes (where vLLM is installed; else a clear error)."
    from social_align.generation import vllm_available
    out = tmp_path/'vllm'
    r = run('--model_name_or_path', tiny['policy'], '--reward_model_path', tiny['rm'], '--data_path', tiny['data'],
            '--output_dir', out, '--algorithm', 'rloo', '--num_samples', '2', '--max_steps', '2', '--generation_backend', 'vllm',
            *FLAGS, launcher=LAUNCH2)
    if not vllm_available():
        assert r.returncode != 0 and 'vLLM is not installed' in r.stderr, r.stderr[-2000:]
        return
    assert r.returncode == 0, r.stderr[-4000:]
    assert 'rloo training: 2 RL steps on 2 process(es), 8 samples per step' in r.stdout, r.stdout[-2000:]
    h = check_outputs(out, 2)
    assert abs(h[0]['kl']) < 1e-3                              # vLLM sampled the starting policy; PyTorch scored it

def test_resume_after_checkpoint(tiny, tmp_path):
    "A run that saved checkpoint-2 and stopped is continued to step 3 by --resume_from_checkpoint True."
    out = tmp_path/'resume'
    base = ['--model_name_or_path', tiny['policy'], '--reward_model_path', tiny['rm'], '--data_path', tiny['data'],
            '--output_dir', out, '--algorithm', 'rloo', '--num_samples', '2', '--save_strategy', 'steps', '--save_steps', '2', *FLAGS]
    r = run(*base, '--max_steps', '3')
    assert r.returncode == 0, r.stderr[-3000:]
    full = history(out)
    assert sorted(p.name for p in out.glob('checkpoint-*')) == ['checkpoint-2']
    out2 = tmp_path/'resume2'; out2.mkdir(); shutil.copytree(out/'checkpoint-2', out2/'checkpoint-2')   # as if killed after step 2
    r = run(*base, '--output_dir', out2, '--max_steps', '3', '--resume_from_checkpoint', 'True')
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = history(out2)
    assert [x['step'] for x in resumed] == [1, 2, 3]
    assert abs(resumed[2]['score'] - full[2]['score']) < 1e-4 and abs(resumed[2]['policy_loss'] - full[2]['policy_loss']) < 1e-4

def test_bad_data_names_file_and_line(tiny, tmp_path):
    data = write_jsonl(tmp_path/'data.jsonl', [{'prompt': 'Hi?'}, {'query': 'Hi?'}])
    r = run('--model_name_or_path', tiny['policy'], '--reward_model_path', tiny['rm'], '--data_path', data,
            '--output_dir', tmp_path/'out', '--max_steps', '1', *FLAGS)
    assert r.returncode != 0
    assert f'{data}:2' in r.stderr and "field 'prompt'" in r.stderr, r.stderr[-2000:]
    assert 'Traceback' not in r.stderr

def test_reward_model_required(tiny, tmp_path):
    r = run('--model_name_or_path', tiny['policy'], '--data_path', tiny['data'], '--output_dir', tmp_path/'out', *FLAGS)
    assert r.returncode != 0 and '--reward_model_name_or_path (or --reward_model_path) is required' in r.stderr

def test_lora_rloo(tiny, tmp_path):
    "--use_peft with TRL's LoRA flags: the adapter is trained and saved alone; the KL reference is the adapter-off policy (first KL 0)."
    out = tmp_path/'lora'
    r = run('--model_name_or_path', tiny['policy'], '--reward_model_name_or_path', tiny['rm'], '--data_path', tiny['data'],
            '--output_dir', out, '--algorithm', 'rloo', '--num_samples', '2', '--max_steps', '2', '--warmup_ratio', '0.5',
            '--use_peft', 'True', '--lora_r', '4', '--lora_alpha', '8', '--lora_dropout', '0.0', '--lora_target_modules', 'q_proj', 'v_proj',
            *FLAGS)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out/'adapter_model.safetensors').exists() and not (out/'model.safetensors').exists()
    cfg = json.loads((out/'adapter_config.json').read_text())
    assert (cfg['r'], cfg['lora_alpha'], sorted(cfg['target_modules'])) == (4, 8, ['q_proj', 'v_proj'])
    assert cfg['base_model_name_or_path'] == str(tiny['policy'])
    h = history(out)
    assert [x['step'] for x in h] == [1, 2] and abs(h[0]['kl']) < 1e-6
    from social_align.trainers.base import merge_adapter
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(merge_adapter(out, tmp_path/'merged'))

@pytest.mark.parametrize('loss_type,beta', [('dapo', 0.0), ('dapo', 0.1), ('grpo', 0.0), ('grpo', 0.1), ('dr_grpo', 0.1), ('bnpo', 0.0)])
def test_grpo_loss_matches_trl(loss_type, beta, tmp_path):
    """Our GRPO step loss on one fixed rollout (prompts, completions, rewards and old log-probs built here) equals TRL's
    GRPOTrainer.compute_loss on the same batch, the same tiny policy (and, with beta > 0, the same reference log-probs)."""
    import warnings, torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from social_align.models import tiny_tokenizer, build_tiny_causal_lm, save_model
    from social_align.trainers.rl import RLConfig, RLTrainer, rollout_batch, response_logprobs
    from social_align.losses.rl import grpo_advantages, grpo_loss
    tok = tiny_tokenizer(vocab_size=300, chat_template=None)
    kw = dict(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64)
    k, R, temp = 3, 5, 0.9
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 300, (4,), generator=g).tolist() for _ in range(2)]          # equal lengths: no prompt padding
    comps = [torch.randint(5, 300, (n,), generator=g).tolist() for n in (5, 2, 4, 1, 5, 3)]  # k=3 per prompt, ragged
    rewards = torch.tensor([1., 0., 2.5, -1., 0.5, 3.])
    ours = RLTrainer(build_tiny_causal_lm(tok, seed=0, **kw),
                     RLConfig(output_dir=str(tmp_path/'ours'), algorithm='grpo', num_samples=k, kl_coef=beta, loss_type=loss_type,
                              temperature=temp, max_new_tokens=R, ppo_epochs=1, num_mini_batches=1, report_to='none', disable_tqdm=True),
                     ['p'], processing_class=tok, reward_funcs=len, ref_model=build_tiny_causal_lm(tok, seed=1, **kw))
    batch = rollout_batch([prompts[i // k] for i in range(6)], comps, tok.pad_token_id)
    fwd = {n: batch[n] for n in ('input_ids', 'attention_mask', 'position_ids')}
    mask = batch['response_mask'].bool()
    with torch.no_grad():
        logps = response_logprobs(ours.model(**fwd, prompt_length=batch['prompt_length'])[0], batch, temp)[0] * mask
        ref = response_logprobs(ours.reference_logits(fwd), batch, temp)[0] * mask if beta else None
    old = (logps + 0.3 * torch.randn(logps.shape, generator=g)) * mask    # as if sampled by an older policy: ratios != 1, some clipped
    adv = grpo_advantages(rewards, k)
    ours._make_scheduler(1)
    got = ours.update(dict(batch=batch, mask=mask, old_logps=old, advantages=adv, ref_logps=ref), 1)['policy_loss']
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        args = GRPOConfig(output_dir=str(tmp_path/'trl'), num_generations=k, per_device_train_batch_size=6, max_completion_length=R,
                          temperature=temp, beta=beta, loss_type=loss_type, report_to='none', use_cpu=True, disable_tqdm=True,
                          bf16=False)   # GRPOConfig defaults to bf16, which autocasts TRL's forward: compare float32 with float32
        save_model(build_tiny_causal_lm(tok, seed=0, **kw), tok, tmp_path/'policy')    # TRL loads its reference from a path
        trl = GRPOTrainer(model=str(tmp_path/'policy'), reward_funcs=lambda completions, **_: [0.] * len(completions),
                          args=args, train_dataset=Dataset.from_list([{'prompt': 'p'}] * 6), processing_class=tok)
    P = batch['prompt_length']
    inputs = dict(prompt_ids=batch['input_ids'][:, :P], prompt_mask=batch['attention_mask'][:, :P], completion_ids=batch['input_ids'][:, P:],
                  completion_mask=batch['response_mask'], advantages=adv, old_per_token_logps=old, num_items_in_batch=batch['response_mask'].sum())
    if beta: inputs['ref_per_token_logps'] = ref
    trl.model.eval()
    with torch.no_grad():
        want = trl.compute_loss(trl.model, inputs).item()
        trl_logps = trl._get_per_token_logps_and_entropies(trl.model, batch['input_ids'], batch['attention_mask'], R)[0] * mask
    assert abs(want) > 1e-3                                  # a loss that could differ
    # the formula: ours on TRL's own per-token log-probs gives TRL's loss to float rounding
    same = grpo_loss(trl_logps, old, adv, mask, loss_type, 0.2, None, beta, ref, R, mask.sum())[0].item()
    assert abs(same - want) < 1e-6 * max(1, abs(want)), (same, want)
    # the trainer: its own log-probs and loss are TRL's, to float rounding
    assert (trl_logps - logps).abs().max() < 1e-5
    assert abs(got - want) < 1e-5 * max(1, abs(want)), (got, want)

# `server`: conftest.py's fixture, the test session's one `vllm serve` (dev mode) of a tiny Llama, serving its model folder's weights

def test_grpo_two_processes_vllm_server(server, tiny, tmp_path):
    """GRPO under 2 processes sampling from a real `vllm serve`, the policy's weights pushed (and checked by a greedy probe)
    before every rollout after the first; the engine/trainer log-prob mismatch is logged and TIS weights the loss."""
    url, model = server
    out = tmp_path/'grpo-server'
    r = run('--model_name_or_path', model, '--reward_model_name_or_path', tiny['rm'], '--data_path', tiny['data'], '--output_dir', out,
            '--algorithm', 'grpo', '--num_generations', '2', '--beta', '0.1', '--max_steps', '2', '--use_vllm', 'True',
            '--vllm_mode', 'server', '--vllm_server_base_url', url, '--vllm_importance_sampling_correction', 'True', *FLAGS,
            launcher=LAUNCH2)
    assert r.returncode == 0, r.stderr[-4000:]
    h = check_outputs(out, 2)
    assert abs(h[0]['kl']) < 1e-3                             # the server sampled the starting policy; PyTorch scored it
    assert all('logprob_diff_mean' in x and x['logprob_diff_max'] < 1.0 for x in h), h
    assert 'sync_s' in h[0] and 'sync_s' in h[1]              # every rollout after a weight sync: the first too (the server may hold others)

@pytest.mark.parametrize('algorithm', ['ppo', 'rloo'])
def test_ppo_and_rloo_two_processes_vllm_server(server, tiny, tmp_path, algorithm):
    "PPO and RLOO on the same weight-synced `vllm serve` as GRPO: every rollout after a sync, the engine/trainer mismatch logged."
    url, model = server
    out = tmp_path/f'{algorithm}-server'
    r = run('--model_name_or_path', model, '--reward_model_name_or_path', tiny['rm'], '--data_path', tiny['data'], '--output_dir', out,
            '--algorithm', algorithm, '--num_samples', '2', '--max_steps', '2', '--use_vllm', 'True', '--vllm_mode', 'server',
            '--vllm_server_base_url', url, *FLAGS, launcher=LAUNCH2)
    assert r.returncode == 0, r.stderr[-4000:]
    h = check_outputs(out, 2)
    assert abs(h[0]['kl']) < 1e-3                             # the server sampled the starting policy (synced first); PyTorch scored it
    assert all('logprob_diff_mean' in x and x['logprob_diff_max'] < 1.0 and 'sync_s' in x for x in h), h

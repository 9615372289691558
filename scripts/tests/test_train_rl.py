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

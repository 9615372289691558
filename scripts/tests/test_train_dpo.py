"End-to-end runs of scripts/train_dpo.py as real subprocesses: one process, and two data-parallel CPU processes."
import json, os, subprocess, sys
from pathlib import Path
import pytest

SCRIPTS = Path(__file__).parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}
TRAIN_FLAGS = ['--per_device_train_batch_size', '2', '--per_device_eval_batch_size', '3', '--max_steps', '4',
               '--logging_steps', '1', '--learning_rate', '1e-3', '--save_strategy', 'no', '--report_to', 'none',
               '--disable_tqdm', 'True', '--max_length', '96', '--seed', '0']

from _tiny import write_jsonl, toy_tokenizer, save_tiny

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny Llama and its tokenizer in a folder, a second one as an explicit reference, and toy preference pairs."
    from social_align.toyworld import toy_preferences, split_situations
    root, tok = tmp_path_factory.mktemp('tiny'), toy_tokenizer()
    save_tiny(tok, root/'model', seed=0); save_tiny(tok, root/'ref', seed=1)
    train_ids, held_out = split_situations()
    data = write_jsonl(root/'prefs.jsonl', toy_preferences(train_ids)[:16])
    chat = [{**r, 'prompt': [{'role': 'user', 'content': r['prompt']}]} for r in toy_preferences(held_out)[:5]]
    ev = write_jsonl(root/'eval.jsonl', chat)                  # chat prompts; 5 pairs: shards of unequal size
    return dict(model=root/'model', ref=root/'ref', data=data, eval=ev)

def run(*args, launcher=(sys.executable,)):
    return subprocess.run([*launcher, str(SCRIPTS/'train_dpo.py'), *map(str, args)], capture_output=True, text=True,
                          timeout=400, env=ENV)

def losses(out):
    state = json.loads((out/'trainer_state.json').read_text())
    return {h['step']: h['loss'] for h in state['log_history'] if 'loss' in h}

def check_outputs(out):
    assert (out/'model.safetensors').exists() and not list(out.glob('*.bin'))
    assert (out/'tokenizer.json').exists() and (out/'training_args.json').exists()
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(out)                  # loads in plain transformers
    results = json.loads((out/'train_results.json').read_text())
    assert sorted(losses(out)) == [1, 2, 3, 4]
    for k in ('eval_loss', 'eval_rewards/accuracies', 'eval_rewards/margins', 'eval_logps/chosen'): assert k in results, results
    return results

def test_dpo_with_reference_folder(tiny, tmp_path):
    out = tmp_path/'dpo'
    r = run('--model_name_or_path', tiny['model'], '--ref_model_name_or_path', tiny['ref'], '--data_path', tiny['data'],
            '--eval_data_path', tiny['eval'], '--output_dir', out, '--beta', '0.2', *TRAIN_FLAGS)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'sigmoid preference training: 4 optimizer steps on 1 process(es)' in r.stdout
    check_outputs(out)
    assert abs(losses(out)[1] - 0.6931) > 1e-3               # a reference other than the policy: h != 0 at step 1
    assert json.loads((out/'training_args.json').read_text())['beta'] == 0.2

def test_ipo_precomputed_reference(tiny, tmp_path):
    "IPO with the reference (the starting policy) precomputed: the first loss is exactly (1/(2β))²."
    out = tmp_path/'ipo'
    r = run('--model_name_or_path', tiny['model'], '--data_path', tiny['data'], '--eval_data_path', tiny['eval'],
            '--output_dir', out, '--loss_type', 'ipo', '--beta', '0.5', '--precompute_ref_log_probs', 'True', *TRAIN_FLAGS)
    assert r.returncode == 0, r.stderr[-3000:]
    check_outputs(out)
    assert abs(losses(out)[1] - 1.0) < 1e-5

def test_two_process_data_parallel(tiny, tmp_path):
    """A real 2-process data-parallel run (gloo) with a live reference, then the same with precomputed reference
    log-probs (each process scores its shard, gathered back in order): world size 2, same losses, and the model loads."""
    launcher = (sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(SCRIPTS/'configs'/'cpu.yaml'),
                '--num_processes', '2')
    runs = {}
    for name, extra in [('live', []), ('precomputed', ['--precompute_ref_log_probs', 'True', '--precompute_ref_batch_size', '3'])]:
        out = tmp_path/name
        r = run('--model_name_or_path', tiny['model'], '--data_path', tiny['data'], '--eval_data_path', tiny['eval'],
                '--output_dir', out, *TRAIN_FLAGS, *extra, launcher=launcher)
        assert r.returncode == 0, r.stderr[-4000:]
        assert 'preference training: 4 optimizer steps on 2 process(es)' in r.stdout, r.stdout[-2000:]
        runs[name] = (losses(out), check_outputs(out))
    (live, live_res), (pre, pre_res) = runs['live'], runs['precomputed']
    assert abs(live[1] - 0.693147) < 1e-5                     # the reference is the starting policy
    for s in live: assert abs(live[s] - pre[s]) < 1e-5, (s, live, pre)
    assert abs(live_res['eval_loss'] - pre_res['eval_loss']) < 1e-5

def test_bad_data_names_file_and_line(tiny, tmp_path):
    good = {'prompt': 'Hi?', 'chosen': 'Hello.', 'rejected': 'Go away.'}
    data = write_jsonl(tmp_path/'data.jsonl', [good, good, {'prompt': 'Hi?', 'chosen': 'Hello.'}])
    r = run('--model_name_or_path', tiny['model'], '--data_path', data, '--output_dir', tmp_path/'out', *TRAIN_FLAGS)
    assert r.returncode != 0
    assert f'{data}:3' in r.stderr and "field 'rejected'" in r.stderr, r.stderr[-2000:]
    assert 'Traceback' not in r.stderr

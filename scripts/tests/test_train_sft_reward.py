"End-to-end runs of scripts/train_sft.py and scripts/train_reward.py as real subprocesses on a tiny model and data."
import json, os, subprocess, sys
from pathlib import Path
import pytest

SCRIPTS = Path(__file__).parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}
TRAIN_FLAGS = ['--per_device_train_batch_size', '2', '--gradient_accumulation_steps', '2', '--max_steps', '4',
               '--logging_steps', '1', '--learning_rate', '1e-3', '--save_strategy', 'no', '--report_to', 'none',
               '--disable_tqdm', 'True', '--max_length', '96']

def run(script, *args, env=None):
    return subprocess.run([sys.executable, str(SCRIPTS/script), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**ENV, **(env or {})})

from _tiny import write_jsonl, toy_tokenizer, save_tiny

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny Llama (causal LM) and its tokenizer saved in a folder, and the toy world's preference pairs."
    from social_align.models import plain_chat_template
    from social_align.toyworld import toy_preferences, split_situations
    root, tok = tmp_path_factory.mktemp('tiny'), toy_tokenizer()
    save_tiny(tok, root/'model')
    train_ids, held_out = split_situations()
    prefs = toy_preferences(train_ids)[:16]
    sft = [{'prompt': plain_chat_template([{'role': 'user', 'content': r['prompt']}]), 'completion': r['chosen']} for r in prefs]
    return dict(root=root, model=root/'model', prefs=prefs, eval_prefs=toy_preferences(held_out)[:6], sft=sft)

def check_outputs(out):
    assert (out/'model.safetensors').exists() and not list(out.glob('*.bin'))
    assert (out/'tokenizer.json').exists() and (out/'tokenizer_config.json').exists()
    results = json.loads((out/'train_results.json').read_text())
    state = json.loads((out/'trainer_state.json').read_text())
    losses = {h['step']: h['loss'] for h in state['log_history'] if 'loss' in h}
    assert sorted(losses) == [1, 2, 3, 4] and state['global_step'] == 4
    return results

def test_train_sft(tiny, tmp_path):
    data = write_jsonl(tmp_path/'sft.jsonl', tiny['sft'][:12] + [{'messages': [{'role': 'user', 'content': 'Hi?'},
                                                                            {'role': 'assistant', 'content': 'Hello.'}]}])
    out = tmp_path/'sft'
    r = run('train_sft.py', '--model_name_or_path', tiny['model'], '--data_path', data, '--output_dir', out, *TRAIN_FLAGS)
    assert r.returncode == 0, r.stderr[-3000:]
    results = check_outputs(out)
    assert results['train_loss'] > 0
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(out)   # loads in plain transformers

def test_train_sft_packing(tiny, tmp_path):
    data = write_jsonl(tmp_path/'sft.jsonl', tiny['sft'])
    out = tmp_path/'sft_packed'
    r = run('train_sft.py', '--model_name_or_path', tiny['model'], '--data_path', data, '--output_dir', out, *TRAIN_FLAGS,
            '--packing', 'True', '--block_size', '64')
    assert r.returncode == 0, r.stderr[-3000:]
    check_outputs(out)

def test_train_reward(tiny, tmp_path):
    "The reward model starts from the causal-LM folder (a fresh score head), as LMFlow's RM starts from its SFT model."
    data, ev = write_jsonl(tmp_path/'prefs.jsonl', tiny['prefs']), write_jsonl(tmp_path/'eval.jsonl', tiny['eval_prefs'])
    out = tmp_path/'rm'
    r = run('train_reward.py', '--model_name_or_path', tiny['model'], '--data_path', data, '--eval_data_path', ev,
            '--output_dir', out, *TRAIN_FLAGS, '--per_device_eval_batch_size', '4', '--drop_long', 'True')
    assert r.returncode == 0, r.stderr[-3000:]
    results = check_outputs(out)
    assert 0 <= results['eval_accuracy'] <= 1 and 'eval_loss' in results and 'eval_margin' in results
    from transformers import AutoModelForSequenceClassification
    from social_align.models import load_tokenizer, score_texts
    rm = AutoModelForSequenceClassification.from_pretrained(out)
    assert rm.config.num_labels == 1
    scores = score_texts(rm, load_tokenizer(out), [p['prompt'] + ' ' + p['chosen'] for p in tiny['eval_prefs']])
    assert scores.shape == (6,) and scores.isfinite().all()

@pytest.fixture(scope='module')
def tiny_nopad(tmp_path_factory):
    "A tiny causal LM whose tokenizer has no pad token (as Llama and GPT-2 ship)."
    tok = toy_tokenizer(no_pad=True)
    assert tok.pad_token is None
    return save_tiny(tok, tmp_path_factory.mktemp('nopad')/'model')

def test_train_reward_scores_the_same_in_plain_transformers(tiny, tiny_nopad, tmp_path):
    """A reward model trained by train_reward.py from a causal LM whose tokenizer has no pad token gives the library's
    rewards in plain transformers (model + tokenizer from the folder; unpadded, and padded on either side with the
    saved pad token) and in LMFlow's `pipeline('sentiment-analysis', function_to_apply='none')` on the raw text."""
    data = write_jsonl(tmp_path/'prefs.jsonl', tiny['prefs'])
    out = tmp_path/'rm'
    r = run('train_reward.py', '--model_name_or_path', tiny_nopad, '--data_path', data, '--output_dir', out, *TRAIN_FLAGS)
    assert r.returncode == 0, r.stderr[-3000:]
    import torch
    from torch.testing import assert_close
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
    from social_align.models import load_reward_model, load_tokenizer, score_texts
    texts = [p['prompt'] + ' ' + p['chosen'] for p in tiny['eval_prefs']]
    lib_tok = load_tokenizer(out)
    lib = score_texts(load_reward_model(out, device='cpu', tokenizer=lib_tok), lib_tok, texts)
    hf, ht = AutoModelForSequenceClassification.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    assert ht.pad_token is not None and ht.pad_token_id != ht.eos_token_id and hf.config.pad_token_id == ht.pad_token_id
    with torch.no_grad():
        assert_close(torch.cat([hf(**ht(x, return_tensors='pt')).logits[:, 0] for x in texts]), lib, atol=1e-5, rtol=0)
        for side in ('left', 'right'):
            ht.padding_side = side
            enc = ht(texts, return_tensors='pt', padding=True)
            assert (enc['input_ids'] == ht.pad_token_id).any()
            assert_close(hf(**enc).logits[:, 0], lib, atol=1e-5, rtol=0)
    pipe = pipeline('sentiment-analysis', model=str(out), function_to_apply='none', device='cpu')
    assert_close(torch.tensor([o['score'] for o in pipe(texts)]), lib, atol=1e-5, rtol=0)

@pytest.mark.parametrize('script,good,bad_field', [
    ('train_sft.py', {'prompt': 'Hi?', 'completion': 'Hello.'}, 'completion'),
    ('train_reward.py', {'prompt': 'Hi?', 'chosen': 'Hello.', 'rejected': 'Go away.'}, 'rejected')])
def test_bad_data_names_file_and_line(tiny, tmp_path, script, good, bad_field):
    bad = {k: v for k, v in good.items() if k != bad_field}
    data = write_jsonl(tmp_path/'data.jsonl', [good, good, bad, good])
    r = run(script, '--model_name_or_path', tiny['model'], '--data_path', data, '--output_dir', tmp_path/'out', *TRAIN_FLAGS)
    assert r.returncode != 0
    assert f'{data}:3' in r.stderr and f"field '{bad_field}'" in r.stderr, r.stderr[-2000:]
    assert 'Traceback' not in r.stderr
    assert not (tmp_path/'out'/'model.safetensors').exists()

def test_train_reward_from_a_saved_dataset(tiny, tmp_path):
    """--dataset_name reads a `save_to_disk` folder, --dataset_columns maps its own column names onto the schema and
    --eval_split evaluates on its test split; --train_reward_model True (ALMoST passes it) and --report_to tensorboard
    (the event file appears) work too."""
    import datasets
    rows = [{'question': p['prompt'], 'response_j': p['chosen'], 'response_k': p['rejected']} for p in tiny['prefs']]
    datasets.DatasetDict({'train': datasets.Dataset.from_list(rows), 'test': datasets.Dataset.from_list(rows[:4])}).save_to_disk(tmp_path/'hub')
    out = tmp_path/'rm'
    r = run('train_reward.py', '--model_name_or_path', tiny['model'], '--dataset_name', tmp_path/'hub', '--eval_split', 'test',
            '--dataset_columns', 'prompt=question,chosen=response_j,rejected=response_k', '--train_reward_model', 'True',
            '--output_dir', out, *[a if a != 'none' else 'tensorboard' for a in TRAIN_FLAGS])
    assert r.returncode == 0, r.stderr[-3000:]
    assert 0 <= check_outputs(out)['eval_accuracy'] <= 1
    assert list(out.glob('runs/*/events.out.tfevents.*'))

def test_train_sft_from_parquet_files_with_bf16(tiny, tmp_path):
    "--dataset_name reads a folder of parquet files (train-* is the train split); --bf16 True without a GPU trains on the CPU; --report_to wandb logs (offline)."
    import datasets
    (tmp_path/'data').mkdir()
    datasets.Dataset.from_list(tiny['sft']).to_parquet(tmp_path/'data'/'train-00000-of-00001.parquet')
    out = tmp_path/'sft'
    r = run('train_sft.py', '--model_name_or_path', tiny['model'], '--dataset_name', tmp_path/'data', '--output_dir', out,
            *[a if a != 'none' else 'wandb' for a in TRAIN_FLAGS], '--bf16', 'True',
            env={'WANDB_MODE': 'offline', 'WANDB_DIR': str(tmp_path), 'WANDB_SILENT': 'true'})
    assert r.returncode == 0, r.stderr[-3000:]
    check_outputs(out)
    assert list(tmp_path.glob('wandb/offline-run-*/run-*.wandb')), sorted(map(str, tmp_path.rglob('*')))[:20]   # the run's log, no network
    import torch
    if not torch.accelerator.is_available(): assert 'no GPU: --bf16 True trains on the CPU' in r.stderr
    assert json.loads((out/'training_args.json').read_text())['bf16']

def test_named_dataset_bad_row_is_named(tiny, tmp_path):
    "A bad row of a parquet file given as --dataset_name is named by the dataset, split, row and field; nothing is trained."
    import datasets
    rows = [{'prompt': 'Hi?', 'chosen': 'Hello.', 'rejected': 'Go away.'}] * 2 + [{'prompt': 'Hi?', 'chosen': 'Hello.', 'rejected': None}]
    datasets.Dataset.from_list(rows).to_parquet(tmp_path/'prefs.parquet')
    r = run('train_reward.py', '--model_name_or_path', tiny['model'], '--dataset_name', tmp_path/'prefs.parquet',
            '--output_dir', tmp_path/'out', *TRAIN_FLAGS)
    assert r.returncode != 0 and f"{tmp_path/'prefs.parquet'}[train] row:2 field 'rejected'" in r.stderr, r.stderr[-2000:]
    assert 'Traceback' not in r.stderr and not (tmp_path/'out'/'model.safetensors').exists()
    r = run('train_reward.py', '--model_name_or_path', tiny['model'], '--data_path', tmp_path/'x.jsonl', '--dataset_name', 'x',
            '--output_dir', tmp_path/'out')
    assert r.returncode == 2 and 'give --data_path or --dataset_name, not both' in r.stderr


LAUNCH2 = (sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(SCRIPTS/'configs'/'cpu.yaml'), '--num_processes', '2')

def _sft_steps(out):
    "Per-step training losses and the final weights of a train_sft.py run."
    from safetensors.torch import load_file
    state = json.loads((out/'trainer_state.json').read_text())
    return [h['loss'] for h in state['log_history'] if 'loss' in h], load_file(out/'model.safetensors')

def test_sft_loss_is_the_global_batch_token_mean(tiny, tmp_path):
    "2 processes with batch B, and 1 process with batch B and gradient accumulation 2, train what 1 process with batch 2B does."
    import torch
    recs = [{'prompt': r['prompt'], 'completion': ' '.join([r['completion']] * (1 + 3 * (i % 3)))} for i, r in enumerate(tiny['sft'])]
    data = write_jsonl(tmp_path/'sft.jsonl', recs)   # responses of very different lengths: a mean of means is not the token mean
    flags = ['--model_name_or_path', tiny['model'], '--data_path', data, '--max_steps', '3', '--logging_steps', '1',
             '--learning_rate', '1e-2', '--save_strategy', 'no', '--report_to', 'none', '--disable_tqdm', 'True',
             '--max_length', '96', '--gradient_accumulation_steps']
    runs = {'one': ['1', '--per_device_train_batch_size', '4'], 'ga': ['2', '--per_device_train_batch_size', '2'],
            'ddp': ['1', '--per_device_train_batch_size', '2']}
    for name, extra in runs.items():
        argv = [str(SCRIPTS/'train_sft.py'), *map(str, flags), *extra, '--output_dir', str(tmp_path/name)]
        cmd = [*LAUNCH2, *argv] if name == 'ddp' else [sys.executable, *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    (l1, w1), (lga, wga), (lddp, wddp) = (_sft_steps(tmp_path/n) for n in runs)
    assert len(l1) == 3
    assert lga == pytest.approx(l1, rel=1e-5) and lddp == pytest.approx(l1, rel=1e-5), (l1, lga, lddp)
    for w in (wga, wddp): assert all(torch.allclose(w1[k], w[k], atol=1e-5) for k in w1)

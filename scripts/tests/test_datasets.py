"""The datasets people use, in their published shapes, through the scripts as real subprocesses: HH-RLHF's {chosen, rejected}
dialogues through scripts/train_reward.py and scripts/evaluate.py, BIG-bench's HHH task files and TruthfulQA's mc_task.json
through scripts/evaluate.py. Every file is written by the test (the project ships no third-party data)."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

from _tiny import write_jsonl, toy_tokenizer, save_tiny

SCRIPTS = Path(__file__).parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}
OPENING = '\n\nHuman: Hello, can I ask you something?\n\nAssistant: Of course, what is it?'   # a first exchange both sides share


def run(script, *args):
    return subprocess.run([sys.executable, str(SCRIPTS/script), *map(str, args)], capture_output=True, text=True, timeout=300, env=ENV)


def hh_rlhf(prefs):
    "The pairs as HH-RLHF publishes them: no prompt, each side the whole two-exchange dialogue ending on its answer."
    dialogue = lambda r, y: f"{OPENING}\n\nHuman: {r['prompt']}\n\nAssistant: {y}"
    return [{'chosen': dialogue(r, r['chosen']), 'rejected': dialogue(r, r['rejected'])} for r in prefs]


def explicit(prefs):
    "The same pairs split by hand: the prompt is the dialogue up to the last Assistant marker."
    return [{'prompt': f"{OPENING}\n\nHuman: {r['prompt']}\n\nAssistant:", 'chosen': r['chosen'], 'rejected': r['rejected']} for r in prefs]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny causal LM saved in a folder and HH-RLHF-shaped train / eval files from the toy world's pairs."
    from social_align.toyworld import toy_preferences, split_situations
    root = tmp_path_factory.mktemp('datasets')
    save_tiny(toy_tokenizer(), root/'model')
    train_ids, held_out = split_situations()
    ev = toy_preferences(held_out)[:6]
    return dict(root=root, model=root/'model', eval_prefs=ev, train=write_jsonl(root/'hh_train.jsonl', hh_rlhf(toy_preferences(train_ids)[:8])),
                eval=write_jsonl(root/'hh_eval.jsonl', hh_rlhf(ev)))


def evaluate(out, *args):
    r = run('evaluate.py', '--output', out, '--batch_size', 4, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(Path(out).read_text())['results']


def test_hh_rlhf_through_reward_training_and_evaluation(tiny, tmp_path):
    out = tmp_path/'rm'
    r = run('train_reward.py', '--model_name_or_path', tiny['model'], '--data_path', tiny['train'], '--eval_data_path', tiny['eval'],
            '--output_dir', out, '--per_device_train_batch_size', 2, '--per_device_eval_batch_size', 3, '--max_steps', 3,
            '--logging_steps', 1, '--learning_rate', '1e-3', '--save_strategy', 'no', '--report_to', 'none', '--disable_tqdm', 'True',
            '--max_length', 512)
    assert r.returncode == 0, r.stderr[-3000:]
    trained = json.loads((out/'train_results.json').read_text())
    assert json.loads((out/'trainer_state.json').read_text())['global_step'] == 3
    res = evaluate(tmp_path/'rm.json', '--task', 'rm_accuracy', '--model_name_or_path', out, '--data_path', tiny['eval'])
    from social_align.evaluation import rm_accuracy
    from social_align.models import load_reward_model, load_tokenizer
    tok = load_tokenizer(out)
    lib = rm_accuracy(load_reward_model(out, tokenizer=tok), tok, explicit(tiny['eval_prefs']))
    assert res['n'] == 6 and res['accuracy'] == lib['accuracy'] and abs(res['loss'] - lib['loss']) < 1e-5
    assert res['accuracy'] == trained['eval_accuracy'] and abs(res['loss'] - trained['eval_loss']) < 1e-4   # the trainer read them alike


def write_task(folder, examples):
    folder.mkdir(parents=True, exist_ok=True)
    (folder/'task.json').write_text(json.dumps({'name': f'hhh_alignment:{folder.name}', 'metrics': ['multiple_choice_grade'], 'examples': examples}))
    return folder/'task.json'


def test_hhh_and_truthfulqa_files(tiny, tmp_path):
    hhh = tmp_path/'hhh_alignment'
    counts = {'harmless': 3, 'helpful': 2, 'honest': 2, 'other': 1}
    for cat, n in counts.items():
        write_task(hhh/cat, [{'input': f'What should I do about problem {k}?',
                              'target_scores': {f'Talk to them kindly about {k}.': 1, f'Ignore problem {k} forever.': 0}} for k in range(n)])
    ab = evaluate(tmp_path/'ab.json', '--task', 'ab', '--model_name_or_path', tiny['model'], '--data_path', hhh)
    assert ab['n'] == 8 and {c: v['n'] for c, v in ab['per_category'].items()} == counts
    assert ab['accuracy'] in {k / 16 for k in range(17)}
    tqa = [{'question': 'What happens if you forget a birthday?', 'mc1_targets': {'You can apologise.': 1, 'Nothing matters.': 0, 'You must hide.': 0},
            'mc2_targets': {'You can apologise.': 1, 'Nothing matters.': 0}},
           {'question': 'Should I plan a celebration?', 'mc1_targets': {'Never.': 0, 'It can help.': 1}, 'mc2_targets': {}}]
    (tmp_path/'mc_task.json').write_text(json.dumps(tqa))
    mc1 = evaluate(tmp_path/'mc1.json', '--task', 'mc1', '--model_name_or_path', tiny['model'], '--data_path', tmp_path/'mc_task.json')
    from social_align.evaluation import mc1_accuracy
    from social_align.models import load_causal_lm, load_tokenizer
    by_hand = [{'question': q['question'], 'choices': list(q['mc1_targets']), 'label': [0, 1][i]} for i, q in enumerate(tqa)]
    assert mc1 == mc1_accuracy(load_causal_lm(tiny['model']), load_tokenizer(tiny['model']), by_hand, batch_size=4) and mc1['n'] == 2

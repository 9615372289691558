"End-to-end runs of scripts/train_sso.py (offline and online) and scripts/principle_pairs.py on a tiny model."
import json, os, random, subprocess, sys
from pathlib import Path
import pytest

SCRIPTS = Path(__file__).parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false')

def run(script, *args, ok=True):
    r = subprocess.run([sys.executable, str(SCRIPTS/script), *map(str, args)], capture_output=True, text=True,
                       timeout=600, env=ENV)
    if ok: assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r

def json_lines(stdout):
    "The JSON objects the script printed (the trainer's own log lines are Python reprs, not JSON)."
    out = []
    for line in stdout.splitlines():
        try: out.append(json.loads(line))
        except json.JSONDecodeError: pass
    return [o for o in out if isinstance(o, dict)]

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny Llama folder, toy principled records and toy queries."
    from social_align.models import train_bpe_tokenizer, build_tiny_causal_lm, save_model
    from social_align.principles import Principle, DEFAULT_SYSTEM, positive_system_prompt, negative_system_prompt
    from social_align.toyworld import make_question, make_answer
    d = tmp_path_factory.mktemp('sso')
    ps = [Principle('Kindness', 'kind', 'harsh', 'Answer with warmth and respect.', 'Answer coldly and with contempt.'),
          Principle('Honesty', 'honest', 'dishonest', 'Be truthful and fair.', 'Be sneaky and selfish.')]
    xp, xn = positive_system_prompt(ps), negative_system_prompt(ps)
    rng = random.Random(0)
    recs = [{'prompt': make_question(i), 'chosen': make_answer(i, True, rng), 'rejected': make_answer(i, False, rng),
             'raw': make_answer(i, True, rng), 'system': DEFAULT_SYSTEM, 'p_system': xp, 'n_system': xn} for i in range(8)]
    tok = train_bpe_tokenizer([f"{s} {r['prompt']} {r['chosen']} {r['rejected']}" for r in recs for s in (xp, xn, DEFAULT_SYSTEM)], vocab_size=400)
    save_model(build_tiny_causal_lm(tok, hidden_size=64, num_layers=1, intermediate_size=128), tok, d/'model')
    (d/'pairs.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    (d/'queries.txt').write_text(''.join(make_question(i, 1) + '\n' for i in range(6)))
    (d/'principles.jsonl').write_text(''.join(json.dumps(p.__dict__) + '\n' for p in ps))
    return d

def test_train_sso_offline(tiny):
    out = tiny/'offline'
    r = run('train_sso.py', '--model_name_or_path', tiny/'model', '--data_path', tiny/'pairs.jsonl', '--output_dir', out,
            '--max_steps', 3, '--per_device_train_batch_size', 4, '--learning_rate', '1e-3', '--logging_steps', 1,
            '--save_strategy', 'no', '--report_to', 'none', '--disable_tqdm', 'True', '--gamma', '0.2', '--use_w', 'False')
    assert json_lines(r.stdout)[-1]['steps'] == 3
    assert (out/'model.safetensors').exists() and not list(out.glob('*.bin'))
    assert json.loads((out/'training_args.json').read_text())['gamma'] == 0.2
    state = json.loads((out/'trainer_state.json').read_text())
    assert all('w' in h and 'h/query' in h for h in state['log_history'] if 'loss' in h)
    assert 'train_loss' in json.loads((out/'train_results.json').read_text())

def test_train_sso_online(tiny):
    out = tiny/'online'
    args = ['--online', 'True', '--model_name_or_path', tiny/'model', '--queries_path', tiny/'queries.txt', '--iterations', 2,
            '--output_dir', out, '--principles_path', tiny/'principles.jsonl', '--replace_principles', 'True',
            '--max_new_tokens', 8, '--feature_max_new_tokens', 4, '--apply_filter', 'False', '--num_train_epochs', 1,
            '--per_device_train_batch_size', 4, '--learning_rate', '1e-3', '--logging_steps', 1, '--save_strategy', 'no',
            '--report_to', 'none', '--disable_tqdm', 'True']
    r = run('train_sso.py', *args)
    rows = [json.loads(l) for l in (out/'iterations.jsonl').read_text().splitlines()]
    assert [x['iteration'] for x in rows] == [1, 2] and all(x['kept'] > 0 and x['steps'] > 0 for x in rows), rows
    assert (out/'model.safetensors').exists() and (out/'iteration-2'/'model'/'model.safetensors').exists()
    pairs = [json.loads(l) for l in (out/'iteration-1'/'pairs.jsonl').read_text().splitlines()]
    assert pairs and all(p['p_system'].startswith('Your reply should be kind and honest') or
                         p['p_system'].startswith('Your reply should be honest and kind') for p in pairs)
    # resumed with the same output_dir and one more iteration: only iteration 3 runs
    r = run('train_sso.py', *[a if a != 2 else 3 for a in args])
    rows = [json.loads(l) for l in (out/'iterations.jsonl').read_text().splitlines()]
    assert [x['iteration'] for x in rows] == [1, 2, 3]
    assert [o['iteration'] for o in json_lines(r.stdout)] == [1, 2, 3]

def test_train_sso_online_needs_queries(tiny):
    r = run('train_sso.py', '--online', 'True', '--model_name_or_path', tiny/'model', '--output_dir', tiny/'x', ok=False)
    assert r.returncode != 0 and '--prompts_path (alias --queries_path) is required' in r.stderr

def test_principle_pairs(tiny):
    from social_align.data import load_records
    out = tiny/'gen'/'pairs.jsonl'
    args = ['--model_name_or_path', tiny/'model', '--queries_path', tiny/'queries.txt', '--output_path', out,
            '--principles_path', tiny/'principles.jsonl', '--replace_principles', 'True', '--max_new_tokens', 8,
            '--feature_max_new_tokens', 4, '--apply_filter', 'False', '--chunk_size', 4]
    stats = json_lines(run('principle_pairs.py', *args).stdout)[-1]
    assert stats['queries'] == 6 and stats['generated'] == 6 and stats['kept'] == stats['scored'] > 0, stats
    recs = load_records(out, 'principled_preference')
    assert len(recs) == stats['kept'] and all(r['raw'] and r['system'] for r in recs)
    assert len((tiny/'gen'/'pairs.candidates.jsonl').read_text().splitlines()) == 6
    again = json_lines(run('principle_pairs.py', *args).stdout)[-1]   # resumed: nothing to generate
    assert again['generated'] == 0 and again['kept'] == stats['kept']
    filtered = json_lines(run('principle_pairs.py', *args[:-6], '--apply_filter', 'True').stdout)[-1]
    assert filtered['generated'] == 0 and filtered['kept'] <= stats['kept']

def test_principle_pairs_bad_principles(tiny):
    bad = tiny/'bad_principles.jsonl'
    bad.write_text(json.dumps({'name': 'X', 'good': 'x', 'bad': 'y', 'good_guideline': 'g'}) + '\n')
    r = run('principle_pairs.py', '--model_name_or_path', tiny/'model', '--queries_path', tiny/'queries.txt',
            '--output_path', tiny/'bad'/'p.jsonl', '--principles_path', bad, ok=False)
    assert r.returncode != 0 and "bad_principles.jsonl:1 field 'bad_guideline': missing" in r.stderr

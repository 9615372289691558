"End-to-end runs of scripts/evaluate.py as real subprocesses on tiny models saved to a temporary folder."
import json, os, subprocess, sys
from pathlib import Path
import pytest

SCRIPT = Path(__file__).parents[1]/'evaluate.py'
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}
LAUNCH2 = (sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(SCRIPT.parent/'configs'/'cpu.yaml'), '--num_processes', '2')


from _tiny import write_jsonl, toy_tokenizer, save_tiny


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "Two tiny Llamas (policy, reference), a tiny reward model, held-out preference pairs and samples."
    from social_align.toyworld import toy_preferences, split_situations
    root, tok = tmp_path_factory.mktemp('tiny'), toy_tokenizer()
    save_tiny(tok, root/'policy', seed=0); save_tiny(tok, root/'ref', seed=1); save_tiny(tok, root/'rm', seed=2, reward=True)
    _, held_out = split_situations()
    prefs = toy_preferences(held_out)[:6]
    return dict(root=root, policy=root/'policy', ref=root/'ref', rm=root/'rm', prefs=write_jsonl(root/'prefs.jsonl', prefs),
                pairs=write_jsonl(root/'pairs.jsonl', [{'prompt': r['prompt'], 'response_a': r['chosen'], 'response_b': r['rejected']} for r in prefs]),
                samples=write_jsonl(root/'samples.jsonl', [{'prompt': r['prompt'], 'response': r['chosen']} for r in prefs]),
                prompts=write_jsonl(root/'prompts.jsonl', [{'prompt': r['prompt']} for r in prefs[:3]]))


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300, env=ENV)


def evaluate(tmp_path, task, *args, file=None):
    out = tmp_path/(file or f'{task}.json')
    r = run('--task', task, '--output', out, '--batch_size', 4, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    obj = json.loads(out.read_text())
    assert obj['task'] == task
    return obj['results']


def test_rm_accuracy_matches_library(tiny, tmp_path):
    from social_align.evaluation import rm_accuracy
    from social_align.models import load_reward_model, load_tokenizer
    from social_align.core import read_jsonl
    res = evaluate(tmp_path, 'rm_accuracy', '--model_name_or_path', tiny['rm'], '--data_path', tiny['prefs'])
    tok = load_tokenizer(tiny['rm'])
    lib = rm_accuracy(load_reward_model(tiny['rm'], tokenizer=tok), tok, read_jsonl(tiny['prefs']))
    assert res['n'] == 6 and res['accuracy'] == lib['accuracy'] and abs(res['loss'] - lib['loss']) < 1e-5


def test_implicit_reward(tiny, tmp_path):
    from social_align.evaluation import implicit_reward_accuracy
    from social_align.models import load_causal_lm, load_tokenizer
    from social_align.core import read_jsonl
    res = evaluate(tmp_path, 'implicit_reward', '--model_name_or_path', tiny['policy'], '--ref_model_name_or_path', tiny['ref'],
                   '--data_path', tiny['prefs'], '--beta', 0.5, '--average', 'True')
    lib = implicit_reward_accuracy(load_causal_lm(tiny['policy']), load_causal_lm(tiny['ref']), load_tokenizer(tiny['policy']),
                                   read_jsonl(tiny['prefs']), beta=0.5, average=True)
    assert res['n'] == 6 and res['accuracy'] == lib['accuracy'] and abs(res['margin'] - lib['margin']) < 1e-6
    assert abs(res['margin'] - (res['chosen_reward'] - res['rejected_reward'])) < 1e-6


def test_ab_and_mc1_on_packaged_items(tiny, tmp_path):
    ab = evaluate(tmp_path, 'ab', '--model_name_or_path', tiny['policy'])
    assert ab['n'] == 16 and sorted(ab['per_category']) == ['harmless', 'helpful', 'honest', 'other']
    assert ab['accuracy'] in {k / 32 for k in range(33)}
    mc1 = evaluate(tmp_path, 'mc1', '--model_name_or_path', tiny['policy'], '--max_examples', 4)
    assert mc1['n'] == 4


def test_win_rate_reward_model_and_generated(tiny, tmp_path):
    res = evaluate(tmp_path, 'win_rate', '--data_path', tiny['pairs'], '--reward_model_name_or_path', tiny['rm'])
    assert res['judge'] == 'reward_model' and res['wins'] + res['ties'] + res['losses'] == 6
    assert res['win_rate'] == (res['wins'] + res['ties'] / 2) / 6
    same = evaluate(tmp_path, 'win_rate', '--data_path', tiny['prompts'], '--model_name_or_path', tiny['policy'],
                    '--model_b_name_or_path', tiny['policy'], '--reward_model_name_or_path', tiny['rm'], '--max_new_tokens', 8)
    assert same['win_rate'] == 0.5 and same['ties'] == 3          # the same greedy policy twice: identical answers, all ties


def test_gen_stats_and_report(tiny, tmp_path):
    res = evaluate(tmp_path, 'gen_stats', '--data_path', tiny['samples'], '--reward_model_name_or_path', tiny['rm'],
                   '--model_name_or_path', tiny['policy'], '--ref_model_name_or_path', tiny['policy'])
    assert res['n'] == 6 and abs(res['kl']) < 1e-6 and 0 < res['distinct_2'] <= 1 and 'reward_mean' in res
    sampled = evaluate(tmp_path, 'gen_stats', '--data_path', tiny['prompts'], '--model_name_or_path', tiny['policy'],
                       '--n_samples', 2, '--max_new_tokens', 6, '--name', 'samples', file='samples.json')
    assert sampled['n'] == 6
    rep = evaluate(tmp_path, 'report', '--run_dir', tmp_path, '--report_dir', tmp_path/'report', '--title', 'Eval run')
    page = Path(rep['html']).read_text()
    assert 'Metrics: gen_stats' in page and 'Metrics: samples' in page and '<td>kl</td>' in page
    assert 'Eval run' in Path(rep['markdown']).read_text()


def test_gen_stats_sampled_on_two_processes_is_the_one_process_run(tiny, tmp_path):
    "gen_stats sampling under a 2-process accelerate launch (CPU ranks): the chunks are split and gathered; the samples and metrics are one process's."
    from social_align.core import read_jsonl
    prompts = write_jsonl(tmp_path/'prompts.jsonl', [{'prompt': r['prompt']} for r in read_jsonl(tiny['prefs'])])
    flags = ('--data_path', prompts, '--model_name_or_path', tiny['policy'], '--reward_model_name_or_path', tiny['rm'],
             '--n_samples', 2, '--max_new_tokens', 6, '--chunk_size', 2, '--seed', 3)   # chunks [0, 2), [2, 4), [4, 6)
    one = evaluate(tmp_path, 'gen_stats', *flags, '--save_samples', tmp_path/'one.jsonl', file='one.json')
    two = subprocess.run([*LAUNCH2, str(SCRIPT), '--task', 'gen_stats', *map(str, flags), '--batch_size', '4', '--output', str(tmp_path/'two.json'),
                          '--save_samples', str(tmp_path/'two.jsonl')],
                         capture_output=True, text=True, timeout=600, env=ENV)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    assert two.stdout.count('"task": "gen_stats"') == 1                      # the main process alone prints and writes
    assert (tmp_path/'two.jsonl').read_text() == (tmp_path/'one.jsonl').read_text()
    assert len((tmp_path/'one.jsonl').read_text().splitlines()) == 12 and one['n'] == 12
    assert json.loads((tmp_path/'two.json').read_text())['results'] == one


def test_missing_inputs_are_named(tiny, tmp_path):
    r = run('--task', 'implicit_reward', '--model_name_or_path', tiny['policy'])
    assert r.returncode != 0 and '--ref_model_name_or_path' in r.stderr and '--data_path' in r.stderr
    bad = write_jsonl(tmp_path/'bad.jsonl', [{'question': 'q', 'correct': 'a'}])
    r = run('--task', 'ab', '--model_name_or_path', tiny['policy'], '--data_path', bad)
    assert r.returncode != 0 and "bad.jsonl:1: field 'incorrect'" in r.stderr

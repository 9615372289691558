"""The experiments (`social_align.experiments`) through the command line, in their reduced versions: every stage of a
seed runs, the summary, per-seed table, figure and page are written, and a rerun resumes (no seed runs again)."""
import json, os, shutil, subprocess, sys
import pytest

CLI = 'import sys; from social_align.cli import main; sys.exit(main(sys.argv[1:]))'

@pytest.fixture(scope='module')
def home(tmp_path_factory):
    "One HOME for the module: the experiments share the quickstart's base-policy cache (~/.cache), so a seed's base is pretrained once."
    return tmp_path_factory.mktemp('home')

def _experiment(home, *args):
    env = {**os.environ, 'HOME': str(home), 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    r = subprocess.run([sys.executable, '-c', CLI, 'experiment', *args], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout

def _check(out, name, measures):
    s = json.loads((out/'summary.json').read_text())
    assert s['name'] == name and s['reduced'] and s['seeds'] == [0, 1]
    assert s['verdict'] in ('holds', 'does not hold', 'inconclusive')
    for k in measures: assert s['measures'][k]['n'] == 2 and s['measures'][k]['low'] is not None, k
    for f in ('seeds.jsonl', 'table.md', 'seeds.png', 'report.html'): assert (out/f).stat().st_size > 0, f
    assert f'Experiment: {name}' in (out/'report.html').read_text()
    return s

def reduced_run(home, tmp_path_factory, name):
    "The folder of a 2-seed reduced run of experiment `name`, for a module fixture that later tests read and resume from."
    out = tmp_path_factory.mktemp(name)/name
    _experiment(home, name, '--seeds', '2', '--reduced', '--output_dir', str(out))
    return out

def copy_stages(run, out, stages, seeds=(0, 1)):
    "Copy finished stages (their markers and folders) of `run`'s seed folders into `out`'s, so that a second experiment resumes from them."
    for seed in seeds:
        src, dst = run/f'seed-{seed}', out/f'seed-{seed}'
        dst.mkdir(parents=True)
        for stage in stages:
            shutil.copy(src/f'stage_{stage}.json', dst)
            if (src/stage).is_dir(): shutil.copytree(src/stage, dst/stage)

def test_lmflow_reduced(home, tmp_path):
    out = tmp_path/'lmflow'
    log = _experiment(home, 'lmflow', '--seeds', '2', '--reduced', '--output_dir', str(out))
    assert 'lmflow seed 1: ' in log and 'lmflow: ' in log
    s = _check(out, 'lmflow', ['gain', 'acc_base', 'acc_sft', 'plain_acc_sft', 'swapped_acc_base'])
    for r in s['per_seed']:
        assert 0 <= r['measures']['acc_sft'] <= 1 and r['measures']['comparisons'] > 0
        assert abs(r['measures']['gain'] - (r['measures']['acc_sft'] - r['measures']['acc_base'])) < 1e-9
        assert r['measures']['sft_steps'] >= 4 and r['measures']['sft_max_lr'] > 0, r   # SFT trains (it took one step at lr 0)
        assert r['measures']['rm_steps_base'] >= 2 and r['measures']['rm_steps_sft'] >= 2, r
    again = _experiment(home, 'lmflow', '--seeds', '2', '--reduced', '--output_dir', str(out))   # resumed: no seed runs again
    assert 'seed 0:' not in again and 'seed 1:' not in again and json.loads((out/'summary.json').read_text())['measures'] == s['measures']

def test_raft_reduced(home, tmp_path):
    out = tmp_path/'raft'
    _experiment(home, 'raft', '--seeds', '2', '--reduced', '--output_dir', str(out))
    s = _check(out, 'raft', ['local_reward_gain', 'global_reward_gain', 'local_strict_it2', 'global_distinct2_it1', 'local_heldout_strict'])
    m = s['per_seed'][0]['measures']
    assert abs(m['local_reward_gain'] - (m['local_reward_it2'] - m['local_reward_it1'])) < 1e-9
    assert 0 <= m['local_strict_it1'] <= 1 and 0 < m['local_distinct2_it1'] <= 1

@pytest.fixture(scope='module')
def stable_alignment_run(home, tmp_path_factory):
    "The stable_alignment reduced run: its seed folders also hold the one-model stages of the society comparison."
    return reduced_run(home, tmp_path_factory, 'stable_alignment')

def test_stable_alignment_reduced(stable_alignment_run):
    s = _check(stable_alignment_run, 'stable_alignment', ['sa_minus_sft_best', 'strict_base', 'strict_sft_best', 'unclassified_stable_alignment'])
    for r in s['per_seed']:
        m = r['measures']
        assert abs(m['sa_minus_sft_best'] - (m['strict_stable_alignment'] - m['strict_sft_best'])) < 1e-9
        assert m['train_records'] > 0 and m['stable_alignment_steps'] >= 4 and m['sft_best_steps'] == m['stable_alignment_steps'], m
        assert all(0 <= m[f'{k}_{p}'] <= 1 for k in ('strict', 'unclassified') for p in ('base', 'stable_alignment', 'sft_best'))

SHARED_STAGES = ('base', 'sandbox', 'stable_alignment', 'eval_base', 'eval_stable_alignment')

def test_stable_alignment_society_reduced(home, stable_alignment_run, tmp_path):
    out = tmp_path/'society'
    copy_stages(stable_alignment_run, out, SHARED_STAGES)   # the stages the two experiments share, resumed from the first run
    _experiment(home, 'stable_alignment_society', '--seeds', '2', '--reduced', '--output_dir', str(out))
    s = _check(out, 'stable_alignment_society', ['mixed_minus_one_model', 'strict_mixed', 'unclassified_mixed', 'drafts_strict_aligned_agents'])
    first = json.loads((stable_alignment_run/'summary.json').read_text())['per_seed']
    for r, sa in zip(s['per_seed'], first):
        m, f = r['measures'], sa['measures']
        assert abs(m['mixed_minus_one_model'] - (m['strict_mixed'] - m['strict_one_model'])) < 1e-9
        assert (m['strict_one_model'], m['strict_base']) == (f['strict_stable_alignment'], f['strict_base'])   # the same policies
        assert m['records_one_model'] == f['train_records'] and m['records_mixed'] > 0 and m['aligned_agents'] == 5, m
        for soc in ('one_model', 'mixed'): assert m[f'steps_{soc}'] >= 4 and m[f'max_lr_{soc}'] > 0, m   # both trained, at lr > 0
        assert all(0 <= m[f'{k}_{p}'] <= 1 for k in ('strict', 'unclassified') for p in ('base', 'one_model', 'mixed'))
    mixed, one = ([json.loads(l) for l in (out/'seed-0'/d/'interactions.jsonl').read_text().splitlines()] for d in ('sandbox_mixed', 'sandbox'))
    assert {r['model'] for r in mixed} == {'aligned', 'base'} and len(mixed) == len(one) == 9 * 2   # 3x3 agents, 2 rounds, both models
    first_round = [(x, y) for x, y in zip(mixed, one) if x['iteration'] == 0]
    assert [x['question'] for x, _ in first_round] == [y['question'] for _, y in first_round]     # the same world ...
    assert any(x['draft_answer'] != y['draft_answer'] for x, y in first_round if x['model'] == 'aligned')   # ... other agents

def test_sso_ablation_reduced(home, tmp_path):
    out = tmp_path/'sso'
    _experiment(home, 'sso_ablation', '--seeds', '2', '--reduced', '--output_dir', str(out))
    s = _check(out, 'sso_ablation', ['sso_minus_no_wg', 'sso_minus_no_w', 'strict_no_g', 'unclassified_sso'])
    for r in s['per_seed']:
        m = r['measures']
        assert abs(m['sso_minus_no_wg'] - (m['strict_sso'] - m['strict_no_wg'])) < 1e-9
        for v in ('sso', 'no_w', 'no_g', 'no_wg'):
            assert 0 <= m[f'{v}_kept_it2'] <= 1, m
            assert m[f'{v}_kept_it1'] > 0, m      # pairs kept (the reduced run has no filter): W and G are trained

@pytest.fixture(scope='module')
def almost_run(home, tmp_path_factory):
    "The almost reduced run: its seed folders also hold the base, comparisons and reward model almost_rmsp starts from."
    return reduced_run(home, tmp_path_factory, 'almost')

def test_almost_reduced(almost_run):
    s = _check(almost_run, 'almost', ['min_factor_margin', 'acc_shots', 'acc_demos', 'acc_size', 'rm_acc'])
    for r in s['per_seed']:
        m = r['measures']
        assert abs(m['min_factor_margin'] - (min(m['acc_shots'], m['acc_demos'], m['acc_size']) - 0.5)) < 1e-9
        assert all(0 <= m[k] <= 1 for k in ('acc_shots', 'acc_demos', 'acc_size', 'decided_shots', 'rm_acc', 'strict_small_demo3')), m
        assert m['comparisons_shots'] > 0 and m['comparisons_demos'] > 0 and m['rm_steps'] >= 2, m
    for f in ('demo3', 'zero_shot', 'bad_demo3', 'small_demo3'): assert (almost_run/'seed-0'/'almost'/'rg'/f'{f}.jsonl').stat().st_size > 0, f

def test_almost_rmsp_reduced(home, almost_run, tmp_path):
    out = tmp_path/'almost_rmsp'
    copy_stages(almost_run, out, ('base', 'almost', 'rm'))   # the base, comparisons and reward model, resumed from the almost run
    log = _experiment(home, 'almost_rmsp', '--seeds', '2', '--reduced', '--output_dir', str(out))
    assert 'almost_rmsp seed 1: ' in log
    s = _check(out, 'almost_rmsp', ['rmsp_minus_plain', 'strict_rmsp', 'strict_plain', 'demo_reward_rmsp'])
    for r in s['per_seed']:
        m = r['measures']
        assert abs(m['rmsp_minus_plain'] - (m['strict_rmsp'] - m['strict_plain'])) < 1e-9
        assert m['dialogues_rmsp'] == m['dialogues_plain'] > 0 and m['demo_reward_rmsp'] >= m['demo_reward_plain'], m   # the RM's pick scores highest
        assert m['sft_steps_rmsp'] == m['sft_steps_plain'] >= 8, m

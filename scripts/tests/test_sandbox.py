"Tests of scripts/simulate.py: real subprocess runs of the Sandbox on tiny models, killed with SIGKILL and resumed."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

SCRIPT = Path(__file__).parents[1]/'simulate.py'
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    "A tiny random causal LM and a tiny reward model, saved as safetensors folders."
    from social_align.models import tiny_tokenizer, build_tiny_causal_lm, build_tiny_reward_model, save_model
    d = tmp_path_factory.mktemp('models')
    tok = tiny_tokenizer()
    kw = dict(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128)
    return (save_model(build_tiny_causal_lm(tok, seed=0, **kw), tok, d/'lm'),
            save_model(build_tiny_reward_model(tok, seed=0, **kw), tok, d/'rm'))


def cmd(model, out, rounds, *extra):
    return [sys.executable, str(SCRIPT), '--model_name_or_path', str(model), '--output_dir', str(out), '--size', '3',
            '--rounds', str(rounds), '--max_new_tokens', '6', '--retries', '0', '--device', 'cpu', '--no_progress', *extra]


def records(out):
    return [json.loads(l) for l in (Path(out)/'interactions.jsonl').read_text().splitlines() if l.strip()]


def n_lines(path):
    return sum(1 for l in path.read_bytes().split(b'\n') if l.strip()) if path.exists() else 0


def test_kill_and_resume_gives_the_uninterrupted_records(models, tmp_path):
    lm, _ = models
    rounds = 4
    full = subprocess.run(cmd(lm, tmp_path/'full', rounds), capture_output=True, text=True, env=ENV, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]
    expected = records(tmp_path/'full')
    keys = [(r['iteration'], r['agent_id']) for r in expected]
    assert keys == [(i, a) for i in range(rounds) for a in range(9)]

    # kill in the middle of round 2 (0-based): half a round's time after round 1's stats line was written
    half_round = sorted(json.loads(l)['seconds'] for l in (tmp_path/'full'/'stats.jsonl').read_text().splitlines())[rounds//2]/2
    out = tmp_path/'killed'
    p = subprocess.Popen(cmd(lm, out, rounds), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.time() + 300
    while n_lines(out/'stats.jsonl') < 2 and time.time() < deadline and p.poll() is None: time.sleep(0.02)
    time.sleep(half_round)
    p.send_signal(signal.SIGKILL); p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, 'the run finished before it could be killed'
    assert len(records(out)) < len(expected)

    again = subprocess.run(cmd(lm, out, rounds), capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    got = records(out)
    got_keys = [(r['iteration'], r['agent_id']) for r in got]
    assert len(got_keys) == len(set(got_keys)), 'duplicated records'
    assert set(got_keys) == set(keys)
    assert got == expected   # seeded per round: the resumed run writes exactly the uninterrupted run's records
    assert [json.loads(l)['round'] for l in (out/'stats.jsonl').read_text().splitlines()] == list(range(rounds))


def test_reward_model_observer_and_no_invented_ratings(models, tmp_path):
    lm, rm = models
    out = tmp_path/'rm'
    r = subprocess.run(cmd(lm, out, 1, '--reward_model_name_or_path', str(rm), '--init_setting', 'mixed_half_half'),
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    from social_align.data import load_records
    recs = load_records(out/'interactions.jsonl', 'interaction')
    assert len(recs) == 9 and sorted(x['label'] for x in recs).count('good') == 4
    assert all(1 <= x['alignment_before'] <= 7 and x['engagement_before'] is None for x in recs)
    st = json.loads((out/'stats.jsonl').read_text())
    # a random-init model never writes `Rating: r ### Reason:`; each asked rating is dropped and counted, none invented
    assert sum(len(x['ratings']) for x in recs) == 0 and st['feedback_dropped'] == st['feedback_asked'] > 0


def test_bad_setting_is_refused(models, tmp_path):
    lm, _ = models
    r = subprocess.run(cmd(lm, tmp_path/'x', 1, '--init_setting', 'half'), capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode != 0 and 'init_setting' in r.stderr


def test_resume_with_other_settings_is_refused(models, tmp_path):
    "A world is resumed only with the settings it was made with; more rounds are allowed (issue 15, item 5)."
    lm, rm = models
    out = tmp_path/'world'
    first = subprocess.run(cmd(lm, out, 1), capture_output=True, text=True, env=ENV, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    before = (out/'interactions.jsonl').read_bytes(), (out/'state'/'state.json').read_bytes()
    r = subprocess.run(cmd(lm, out, 2, '--seed', '1', '--init_setting', 'all_good', '--k', '1'),
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode != 0
    for s in ('seed was 0, now 1', "init_setting was 'half_half', now 'all_good'", 'k was 4, now 1'): assert s in r.stderr, r.stderr[-3000:]
    assert 'rounds' not in r.stderr.split('error:')[-1]
    assert ((out/'interactions.jsonl').read_bytes(), (out/'state'/'state.json').read_bytes()) == before   # nothing touched
    r = subprocess.run(cmd(lm, out, 2, '--reward_model_name_or_path', str(rm)), capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode != 0 and 'reward_model_name_or_path was None' in r.stderr, r.stderr[-3000:]   # another observer
    again = subprocess.run(cmd(lm, out, 2), capture_output=True, text=True, env=ENV, timeout=600)     # extending is allowed
    assert again.returncode == 0, again.stderr[-3000:]
    assert [(x['iteration'], x['agent_id']) for x in records(out)] == [(i, a) for i in range(2) for a in range(9)]
    assert json.loads((out/'resume_settings.json').read_text())['history'] == {'rounds': [1, 2]}


LAUNCH2 = (sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(SCRIPT.parent/'configs'/'cpu.yaml'), '--num_processes', '2')


def test_two_processes_write_the_one_process_records(models, tmp_path):
    """Issue 17: `accelerate launch --num_processes 2 simulate.py` splits each phase across the processes and writes
    the records one process writes; and its world resumes in one process. The agents sample (temperature 0.7) on a
    local toy OpenAI server (per-request seeds, as vLLM), the observer is a tiny HF model (greedy)."""
    from social_align.generation import toy_openai_server
    lm, _ = models
    with toy_openai_server() as srv:
        soc = tmp_path/'society.yaml'
        soc.write_text(f'models:\n  toy: {{backend: openai, base_url: "{srv.url}", model: toy}}\n  judge: {{model_name_or_path: "{lm}"}}\n'
                       'agents: [{model: toy, share: 1}]\nobserver: {model: judge}\n')
        def flags(out, rounds):
            return ['--society_config', str(soc), '--output_dir', str(out), '--size', '2', '--rounds', str(rounds), '--max_new_tokens', '6',
                    '--retries', '0', '--device', 'cpu', '--no_progress']
        one = subprocess.run([sys.executable, str(SCRIPT), *flags(tmp_path/'one', 2)], capture_output=True, text=True, env=ENV, timeout=600)
        assert one.returncode == 0, one.stderr[-3000:]
        t0 = time.time()
        two = subprocess.run([*LAUNCH2, str(SCRIPT), *flags(tmp_path/'two', 1)], capture_output=True, text=True, env=ENV, timeout=600)
        took = time.time() - t0
        assert two.returncode == 0, two.stderr[-3000:]
        assert two.stdout.count('records:') == 1, two.stdout          # only the main process reports (and writes)
        expected = records(tmp_path/'one')
        assert records(tmp_path/'two') == expected[:4]
        assert any(r['ratings'] for r in expected) and len({r['draft_answer'] for r in expected}) > 1
        again = subprocess.run([sys.executable, str(SCRIPT), *flags(tmp_path/'two', 2)], capture_output=True, text=True, env=ENV, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert records(tmp_path/'two') == expected
        assert not list((tmp_path/'two').glob('*rank*')), 'no per-process files are left'
    print(f'2-process launch: {took:.0f} s')

"End-to-end tests of scripts/synthetic_feedback.py: real subprocess runs of pg, rg and cs on a tiny Llama saved to tmp_path."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parents[1]
SCRIPT = SCRIPTS/'synthetic_feedback.py'
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}
LAUNCH2 = (sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(SCRIPTS/'configs'/'cpu.yaml'), '--num_processes', '2')
GOOD = 'The answer: ' + 'a'*150 + '.'          # a usable (not BAD) answer of 163 characters
OK = 'The answer: ' + 'a'*100 + '.'            # a usable, shorter one (113 characters)


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    "A random tiny causal LM (long enough context for the demonstrations) in a folder."
    from social_align.models import tiny_tokenizer, build_tiny_causal_lm, save_model
    d = tmp_path_factory.mktemp('sf_model')
    tok = tiny_tokenizer(chat_template=None)
    lm = build_tiny_causal_lm(tok, hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128, max_position_embeddings=2048)
    return save_model(lm, tok, d/'lm')


def run(*args):
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600, env=ENV)
    return r


def last_json(r):
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_pg_mines_counts_and_resumes(model, tmp_path):
    out = tmp_path/'prompts.txt'
    flags = ('--mode', 'pg', '--model_name_or_path', model, '--output_path', out, '--batch_size', 8, '--max_new_tokens', 16,
             '--min_chars', 5, '--max_calls', 3, '--device', 'cpu')
    st = last_json(run(*flags, '--num_generation', 2))
    lines = out.read_text().splitlines()
    assert len(lines) == st['total'] == st['kept'] <= 2 and 1 <= st['calls'] <= 3
    assert st['kept'] + st['dropped_empty'] + st['dropped_short'] + st['dropped_long'] + st['dropped_similar'] == st['generated']
    assert all(0 < len(l) <= 250 for l in lines)
    # a rerun keeps the lines and continues to the new target (or stops at max_calls, saying so)
    st2 = last_json(run(*flags, '--num_generation', 3))
    lines2 = out.read_text().splitlines()
    assert lines2[:len(lines)] == lines and st2['total'] == len(lines2) and st2['kept'] == len(lines2) - len(lines)
    if st['complete'] and st2['complete']:
        st3 = last_json(run(*flags, '--num_generation', 3))            # target reached: the model is not called
        assert st3['calls'] == 0 and out.read_text().splitlines() == lines2


def test_rg_cs_feed_the_reward_trainer(model, tmp_path):
    prompts = ['How do I boil an egg?', 'What is a good first pet?', 'How can I sleep better?']
    (tmp_path/'prompts.txt').write_text('\n'.join(prompts) + '\n')
    confs = [{'name': 'tiny-hhh-2', 'model': str(model), 'demonstrations': 'hhh', 'n_shot': 2},
             {'name': 'tiny-faithful-1', 'model': str(model), 'demonstrations': 'faithful', 'n_shot': 1}]
    (tmp_path/'confs.json').write_text(json.dumps(confs))
    rg = tmp_path/'rg'
    flags = ('--mode', 'rg', '--prompts_path', tmp_path/'prompts.txt', '--configurations_path', tmp_path/'confs.json',
             '--output_path', rg, '--max_new_tokens', 12, '--batch_size', 2, '--device', 'cpu')
    r = run(*flags)
    assert r.returncode == 0, r.stderr[-3000:]
    stats = [json.loads(l) for l in r.stdout.splitlines() if l.startswith('{')]
    assert [s['name'] for s in stats] == ['tiny-hhh-2', 'tiny-faithful-1'] and all(s['total'] == s['generated'] == 3 for s in stats)
    for c in confs:
        recs = [json.loads(l) for l in (rg/f"{c['name']}.jsonl").read_text().splitlines()]
        assert [(x['index'], x['prompt']) for x in recs] == list(enumerate(prompts))
    # rerun: nothing left to generate
    stats2 = [json.loads(l) for l in run(*flags).stdout.splitlines() if l.startswith('{')]
    assert [s['generated'] for s in stats2] == [0, 0]
    # two handmade configurations that always give usable answers, so that pairs exist whatever the tiny model wrote
    for name, text in (('hand-good', GOOD), ('hand-ok', OK)):
        (rg/f'{name}.jsonl').write_text(''.join(json.dumps({'index': i, 'prompt': q, 'response': text, 'bad': []}) + '\n'
                                                for i, q in enumerate(prompts)))
    (tmp_path/'rubric.json').write_text(json.dumps([['hand-good'], ['hand-ok', 'tiny-hhh-2'], 'tiny-faithful-1']))
    pairs = tmp_path/'pairs.jsonl'
    st = last_json(run('--mode', 'cs', '--rg_dir', rg, '--rubric_path', tmp_path/'rubric.json', '--output_path', pairs))
    recs = [json.loads(l) for l in pairs.read_text().splitlines()]
    assert st['prompts'] == 3 and st['kept'] == len(recs) >= 3 and st['skipped_prompts'] == 0
    good = [x for x in recs if x['meta'] == 'hand-good-vs-hand-ok']
    assert len(good) == 3 and all(x['chosen'] == ' ' + GOOD and x['rejected'] == ' ' + OK for x in good)
    assert {x['prompt'] for x in good} == {f'Human: {q}\n\nAssistant:' for q in prompts}
    # the CS output trains the reward model as it is
    r = subprocess.run([sys.executable, str(SCRIPTS/'train_reward.py'), '--model_name_or_path', str(model), '--data_path', str(pairs),
                        '--output_dir', str(tmp_path/'rm'), '--max_steps', '2', '--per_device_train_batch_size', '2',
                        '--learning_rate', '1e-3', '--save_strategy', 'no', '--report_to', 'none', '--max_length', '128',
                        '--use_cpu', 'True'], capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path/'rm'/'model.safetensors').exists() and json.loads((tmp_path/'rm'/'train_results.json').read_text())
    # RMSP with that reward model: SFT dialogues, one per query, each with 2 assistant turns picked by the RM
    sft = tmp_path/'rmsp.jsonl'
    st = last_json(run('--mode', 'rmsp', '--model_name_or_path', model, '--reward_model_name_or_path', tmp_path/'rm',
                       '--prompts_path', tmp_path/'prompts.txt', '--output_path', sft, '--n_candidates', 2, '--n_turns', 2,
                       '--demonstrations', 'faithful', '--rmsp_n_shot', 1, '--max_new_tokens', 8, '--drop_bad', 'False',
                       '--device', 'cpu'))
    assert st['dialogues'] == 3 and st['assistant_turns'] == 6 and st['candidates'] == 12
    from social_align.data import load_records
    recs = load_records(sft, 'sft')
    assert [r['messages'][0]['content'] for r in recs] == prompts and all(len(r['rewards']) == 2 for r in recs)


def test_rg_on_two_processes_writes_the_one_process_file(model, tmp_path):
    "RG under a 2-process accelerate launch (CPU ranks over gloo): chunks dealt out, shards merged; the files are the 1-process run's, byte for byte."
    prompts = ['How do I boil an egg?', 'What is a good first pet?', 'How can I sleep better?', 'Why is the sky blue?', 'How do I fix a flat tire?']
    (tmp_path/'prompts.txt').write_text('\n'.join(prompts) + '\n')
    confs = [{'name': 'tiny-hhh-2', 'model': str(model), 'demonstrations': 'hhh', 'n_shot': 2},
             {'name': 'tiny-faithful-1', 'model': str(model), 'demonstrations': 'faithful', 'n_shot': 1}]
    (tmp_path/'confs.json').write_text(json.dumps(confs))
    def flags(out): return ('--mode', 'rg', '--prompts_path', tmp_path/'prompts.txt', '--configurations_path', tmp_path/'confs.json',
                            '--output_path', out, '--max_new_tokens', 8, '--batch_size', 2)   # chunks [0, 2), [2, 4), [4, 5): 2 on rank 0, 1 on rank 1
    one = run(*flags(tmp_path/'one'))
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([*LAUNCH2, str(SCRIPT), *map(str, flags(tmp_path/'two'))], capture_output=True, text=True, timeout=600, env=ENV)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    stats = [json.loads(l) for l in two.stdout.splitlines() if l.startswith('{')]
    assert [(s['name'], s['total'], s['generated']) for s in stats] == [('tiny-hhh-2', 5, 5), ('tiny-faithful-1', 5, 5)]   # printed once, summed
    assert '[rank 1/2] RG tiny-hhh-2: prompts 2-3 of 5 done' in two.stdout
    for c in confs:
        assert (tmp_path/'two'/f"{c['name']}.jsonl").read_text() == (tmp_path/'one'/f"{c['name']}.jsonl").read_text()
    assert sorted(f.name for f in (tmp_path/'two').iterdir()) == ['tiny-faithful-1.jsonl', 'tiny-hhh-2.jsonl']   # no shard left


def test_pg_killed_with_sigkill_resumes_to_the_uninterrupted_output(model, tmp_path):
    "A real `kill -9` of a PG run part-way (mostly inside a chunk), then the same command again: the output is byte for byte an uninterrupted run's."
    n = 40
    def flags(out): return ('--mode', 'pg', '--model_name_or_path', model, '--output_path', out, '--num_generation', n,
                            '--batch_size', 4, '--pg_chunk_size', 5, '--max_new_tokens', 16, '--min_chars', 5, '--device', 'cpu')
    assert last_json(run(*flags(tmp_path/'full.txt')))['total'] == n
    full = (tmp_path/'full.txt').read_text()
    out = tmp_path/'killed.txt'
    p = subprocess.Popen([sys.executable, str(SCRIPT), *map(str, flags(out))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 300
    while p.poll() is None and time.time() < deadline and not (out.exists() and out.read_bytes().count(b'\n') >= 7): time.sleep(0.002)
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL, p.returncode          # killed part-way, not finished
    written = out.read_bytes().count(b'\n')
    assert 0 < written < n, written
    st = last_json(run(*flags(out)))
    assert st['total'] == n and st['kept'] == n - written and st['replayed'] == written % 5
    assert out.read_text() == full


def test_bad_input_is_named(model, tmp_path):
    (tmp_path/'empty.txt').write_text('\n')
    (tmp_path/'confs.json').write_text(json.dumps([{'name': 'a', 'model': str(model)}]))
    r = run('--mode', 'rg', '--prompts_path', tmp_path/'empty.txt', '--configurations_path', tmp_path/'confs.json', '--output_path', tmp_path/'rg')
    assert r.returncode != 0 and 'empty.txt: no prompt in the file' in r.stderr
    (tmp_path/'rg').mkdir()
    (tmp_path/'rg'/'a.jsonl').write_text(json.dumps({'prompt': 'q?', 'response': GOOD}) + '\n')
    (tmp_path/'rubric.json').write_text(json.dumps(['a', 'b']))
    r = run('--mode', 'cs', '--rg_dir', tmp_path/'rg', '--rubric_path', tmp_path/'rubric.json', '--output_path', tmp_path/'p.jsonl')
    assert r.returncode != 0 and "b.jsonl: the rubric names configuration 'b' but it has no RG output" in r.stderr
    r = run('--mode', 'pg', '--output_path', tmp_path/'x.txt')
    assert r.returncode != 0 and 'needs --model_name_or_path' in r.stderr
    r = run('--mode', 'judge', '--output_path', tmp_path/'x.txt')
    assert r.returncode == 2 and "invalid choice: 'judge'" in r.stderr


def test_almost_command_line(model, tmp_path):
    """ALMoST's flags: --output_dir as the one folder of every stage, rg with --prompt_file_path/--n_shot as one
    configuration named as ALMoST names it, --use_hf, --cache_dir, and cs with --rubric as a space-separated list
    (a comma joins tied names)."""
    d = tmp_path/'almost'
    d.mkdir()
    prompts = ['How do I boil an egg?', 'What is a good first pet?']
    (d/'prompts.txt').write_text('\n'.join(prompts) + '\n')
    st = last_json(run('--mode', 'rg', '--output_dir', d, '--model_name_or_path', model, '--prompt_file_path', 'faithful',
                       '--n_shot', 1, '--use_hf', '--cache_dir', tmp_path/'cache', '--max_new_tokens', 4, '--device', 'cpu'))
    assert st['name'] == 'lm-faithful-1shot' and st['total'] == 2 and (d/'lm-faithful-1shot.jsonl').exists()
    for name, text in (('hand-good', GOOD), ('hand-ok', OK), ('hand-ok2', OK)):
        (d/f'{name}.jsonl').write_text(''.join(json.dumps({'index': i, 'prompt': q, 'response': text, 'bad': []}) + '\n'
                                               for i, q in enumerate(prompts)))
    st = last_json(run('--mode', 'cs', '--output_dir', d, '--rubric', 'hand-good', 'hand-ok,hand-ok2', '--heuristic', 'False'))
    recs = [json.loads(l) for l in (d/'comparison.jsonl').read_text().splitlines()]
    assert st['kept'] == len(recs) == 2 and {x['meta'] for x in recs} <= {'hand-good-vs-hand-ok', 'hand-good-vs-hand-ok2'}
    r = run('--mode', 'pg', '--output_dir', d, '--model_name_or_path', model, '--use_hf', '--backend', 'vllm')
    assert r.returncode != 0 and '--use_hf and --backend vllm contradict' in r.stderr

"End-to-end runs of scripts/train_sso.py (offline and online) and scripts/principle_pairs.py on a tiny model."
import json, os, random, subprocess, sys
from pathlib import Path
import pytest

SCRIPTS = Path(__file__).parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false')
LAUNCH2 = (sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(SCRIPTS/'configs'/'cpu.yaml'), '--num_processes', '2')

def run(script, *args, ok=True, launcher=(sys.executable,)):
    r = subprocess.run([*launcher, str(SCRIPTS/script), *map(str, args)], capture_output=True, text=True,
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

def online_args(tiny, out, iterations=2, batch_size=2):
    return ['--online', 'True', '--model_name_or_path', tiny/'model', '--queries_path', tiny/'queries.txt', '--iterations', iterations,
            '--output_dir', out, '--principles_path', tiny/'principles.jsonl', '--replace_principles', 'True',
            '--max_new_tokens', 8, '--feature_max_new_tokens', 4, '--apply_filter', 'False', '--chunk_size', 2, '--num_train_epochs', 1,
            '--per_device_train_batch_size', batch_size, '--dataloader_drop_last', 'True', '--learning_rate', '1e-3',
            '--logging_steps', 1, '--save_strategy', 'no', '--report_to', 'none', '--disable_tqdm', 'True']

@pytest.fixture(scope='module')
def one_process_online(tiny):
    "train_sso.py --online True, 2 iterations in one process (batch 2); its output_dir."
    out = tiny/'online'
    run('train_sso.py', *online_args(tiny, out))
    return out

def read_rows(out): return [json.loads(l) for l in (out/'iterations.jsonl').read_text().splitlines()]

def test_train_sso_online(tiny, one_process_online):
    out = one_process_online
    rows = read_rows(out)
    assert [x['iteration'] for x in rows] == [1, 2] and all(x['kept'] > 0 and x['steps'] > 0 for x in rows), rows
    assert (out/'model.safetensors').exists() and (out/'iteration-2'/'model'/'model.safetensors').exists()
    pairs = [json.loads(l) for l in (out/'iteration-1'/'pairs.jsonl').read_text().splitlines()]
    assert pairs and all(p['p_system'].startswith('Your reply should be kind and honest') or
                         p['p_system'].startswith('Your reply should be honest and kind') for p in pairs)
    # resumed in a copy of the output_dir with one more iteration: only iteration 3 runs
    import shutil
    out3 = shutil.copytree(out, tiny/'online3')
    r = run('train_sso.py', *online_args(tiny, out3, iterations=3))
    assert [x['iteration'] for x in read_rows(out3)] == [1, 2, 3]
    assert [o['iteration'] for o in json_lines(r.stdout)] == [1, 2, 3]

def losses(out, k): return [h['loss'] for h in json.loads((out/f'iteration-{k}'/'train'/'trainer_state.json').read_text())['log_history'] if 'loss' in h]

def test_train_sso_online_two_processes(tiny, one_process_online):
    "2 processes (batch 1 each) make the pairs and the losses of 1 process with batch 2; the 2-process run resumes by iteration."
    ref, out = one_process_online, tiny/'online2'
    run('train_sso.py', *online_args(tiny, out, iterations=1, batch_size=1), launcher=LAUNCH2)
    assert [x['iteration'] for x in read_rows(out)] == [1]
    r = run('train_sso.py', *online_args(tiny, out, iterations=2, batch_size=1), launcher=LAUNCH2)   # resumed: iteration 2 only
    assert [o['iteration'] for o in json_lines(r.stdout)] == [1, 2]                                    # printed once
    rows, ref_rows = read_rows(out), read_rows(ref)
    assert [x['iteration'] for x in rows] == [1, 2]                                                    # each iteration written once
    assert (out/'iteration-1'/'pairs.jsonl').read_bytes() == (ref/'iteration-1'/'pairs.jsonl').read_bytes()
    assert (out/'iteration-1'/'pairs.candidates.jsonl').read_bytes() == (ref/'iteration-1'/'pairs.candidates.jsonl').read_bytes()
    # iteration 2 samples from the trained policies, equal up to float rounding: the same texts, log-probs within 1e-4
    p2, ref2 = ([json.loads(l) for l in (d/'iteration-2'/'pairs.jsonl').read_text().splitlines()] for d in (out, ref))
    assert [{k: v for k, v in p.items() if k != 'meta'} for p in p2] == [{k: v for k, v in p.items() if k != 'meta'} for p in ref2]
    assert all(abs(a['meta']['logps'][k] - b['meta']['logps'][k]) < 1e-4 for a, b in zip(p2, ref2) for k in a['meta']['logps'])
    for k in (1, 2):
        assert rows[k-1]['steps'] == ref_rows[k-1]['steps'] > 0 and rows[k-1]['kept'] == ref_rows[k-1]['kept']
        assert losses(out, k) == pytest.approx(losses(ref, k), rel=1e-4, abs=1e-5), (losses(out, k), losses(ref, k))
    assert not list(out.glob('**/*.rank*-of-*.jsonl'))                                                  # shards merged away

def test_train_sso_online_needs_queries(tiny):
    r = run('train_sso.py', '--online', 'True', '--model_name_or_path', tiny/'model', '--output_dir', tiny/'x', ok=False)
    assert r.returncode != 0 and '--prompts_path (alias --queries_path) is required' in r.stderr

def pair_args(tiny, out):
    return ['--model_name_or_path', tiny/'model', '--queries_path', tiny/'queries.txt', '--output_path', out,
            '--principles_path', tiny/'principles.jsonl', '--replace_principles', 'True', '--max_new_tokens', 8,
            '--feature_max_new_tokens', 4, '--apply_filter', 'False', '--chunk_size', 2]

@pytest.fixture(scope='module')
def one_process_pairs(tiny):
    "principle_pairs.py in one process: 6 queries in 3 chunks of 2; (output path, printed stats)."
    out = tiny/'gen'/'pairs.jsonl'
    return out, json_lines(run('principle_pairs.py', *pair_args(tiny, out)).stdout)[-1]

def test_principle_pairs(tiny, one_process_pairs):
    from social_align.data import load_records
    out, stats = one_process_pairs
    args = pair_args(tiny, out)
    assert stats['queries'] == 6 and stats['generated'] == 6 and stats['kept'] == stats['scored'] > 0, stats
    recs = load_records(out, 'principled_preference')
    assert len(recs) == stats['kept'] and all(r['raw'] and r['system'] for r in recs)
    assert len((tiny/'gen'/'pairs.candidates.jsonl').read_text().splitlines()) == 6
    again = json_lines(run('principle_pairs.py', *args).stdout)[-1]   # resumed: nothing to generate
    assert again['generated'] == 0 and again['kept'] == stats['kept']
    filtered = json_lines(run('principle_pairs.py', *args[:-4], '--apply_filter', 'True').stdout)[-1]
    assert filtered['generated'] == 0 and filtered['kept'] <= stats['kept']
    run('principle_pairs.py', *args)                                     # the unfiltered output again, for the test below

def test_principle_pairs_two_processes(tiny, one_process_pairs):
    "2 processes write the very files 1 process writes; a killed 2-process run, resumed, too."
    ref, stats = one_process_pairs
    ref_cands = (ref.parent/'pairs.candidates.jsonl').read_bytes()
    out = tiny/'gen2'/'pairs.jsonl'
    r = run('principle_pairs.py', *pair_args(tiny, out), launcher=LAUNCH2)
    assert json_lines(r.stdout) == [stats]                              # printed once, by the main process
    assert out.read_bytes() == ref.read_bytes()
    assert (out.parent/'pairs.candidates.jsonl').read_bytes() == ref_cands
    assert sorted(p.name for p in out.parent.iterdir()) == ['pairs.candidates.jsonl', 'pairs.jsonl']   # shards merged away
    # a 2-process run killed part-way: rank 0 made chunk 0, rank 1 one query of chunk 1 and a torn line
    lines = ref_cands.decode().splitlines(keepends=True)
    out = tiny/'gen3'/'pairs.jsonl'; out.parent.mkdir()
    (out.parent/'pairs.candidates.rank0-of-2.jsonl').write_text(''.join(lines[:2]))
    (out.parent/'pairs.candidates.rank1-of-2.jsonl').write_text(lines[2] + lines[3][:25])
    r = run('principle_pairs.py', *pair_args(tiny, out), launcher=LAUNCH2)
    assert json_lines(r.stdout)[-1] == dict(stats, generated=3)          # chunk 1 remade whole (1 new), chunk 2 (2 new)
    assert out.read_bytes() == ref.read_bytes()
    assert (out.parent/'pairs.candidates.jsonl').read_bytes() == ref_cands

def test_principle_pairs_bad_principles(tiny):
    bad = tiny/'bad_principles.jsonl'
    bad.write_text(json.dumps({'name': 'X', 'good': 'x', 'bad': 'y', 'good_guideline': 'g'}) + '\n')
    r = run('principle_pairs.py', '--model_name_or_path', tiny/'model', '--queries_path', tiny/'queries.txt',
            '--output_path', tiny/'bad'/'p.jsonl', '--principles_path', bad, ok=False)
    assert r.returncode != 0 and "bad_principles.jsonl:1 field 'bad_guideline': missing" in r.stderr


# --- SSO online on vLLM (trainers.vllm): one engine for the run, the policy's weights pushed after every iteration ---
VLLM_TINY = dict(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128)   # vLLM's CPU attention wants head size >= 32
# `server`: conftest.py's fixture, the test session's one `vllm serve` (dev mode) of a tiny Llama, serving its model folder's weights

def vllm_args(d, out, queries, *extra):
    "Two greedy iterations (temperature 0), so that iteration 2's raw answers are exactly the iteration-1 policy's greedy ones."
    return ['--online', 'True', '--model_name_or_path', d, '--queries_path', queries, '--iterations', 2, '--output_dir', out,
            '--max_new_tokens', 8, '--feature_max_new_tokens', 4, '--temperature', 0, '--apply_filter', 'False',
            '--chunk_size', 2, '--num_train_epochs', 2, '--per_device_train_batch_size', 2, '--learning_rate', '5e-2',
            '--logging_steps', 1, '--save_strategy', 'no', '--report_to', 'none', '--disable_tqdm', 'True', '--use_vllm', 'True', *extra]

def policy_after(out, k):
    "The policy after iteration `k` (iteration 0: the initial one), as a plain model (a LoRA adapter merged)."
    from social_align.models import load_causal_lm, load_tokenizer
    d = out/f'iteration-{k}'/'model'
    if not (d/'adapter_config.json').exists(): return load_causal_lm(d, device='cpu'), load_tokenizer(d)
    from peft import PeftModel
    base = load_causal_lm(out/'iteration-0'/'model', device='cpu')
    return PeftModel.from_pretrained(base, d).merge_and_unload(), load_tokenizer(out/'iteration-0'/'model')

def check_samples_follow_the_policy(out):
    "Each iteration's y° (greedy, plain system prompt) is the greedy answer of the policy the iteration started from."
    from social_align.generation import HFGenerator
    from social_align.principles import chat_prompt, candidates_path
    raws = []
    for k in (1, 2):
        cands = [json.loads(l) for l in candidates_path(out/f'iteration-{k}'/'pairs.jsonl').read_text().splitlines()]
        model, tok = policy_after(out, k - 1)
        want = [t[0].strip() for t in HFGenerator(model, tok).generate_text([chat_prompt(c['system'], c['prompt']) for c in cands],
                                                                            temperature=0, max_new_tokens=8)]
        cut = lambda t: t.rstrip('\ufffd')            # vLLM's detokenizer holds back a character whose bytes are not all out yet
        assert [cut(c['raw']) for c in cands] == [cut(w) for w in want], (k, [c['raw'] for c in cands], want)
        raws.append(want)
    assert raws[0] != raws[1]                            # iteration 1's training changed the samples: iteration 2 used the new weights

@pytest.fixture(scope='module')
def vllm_model(tmp_path_factory):
    "A tiny Llama vLLM's CPU attention accepts, and four queries."
    from social_align.generation import vllm_available
    if not vllm_available(): pytest.skip('vLLM is not installed here')
    from social_align.models import tiny_tokenizer, build_tiny_causal_lm, save_model
    from social_align.toyworld import make_question
    d = tmp_path_factory.mktemp('sso-vllm')
    save_model(build_tiny_causal_lm(tiny_tokenizer(), seed=0, max_position_embeddings=4096, **VLLM_TINY), tiny_tokenizer(), d/'model')
    (d/'queries.txt').write_text(''.join(make_question(i, 1) + '\n' for i in range(4)))
    return d

def test_sso_online_colocated_vllm_lora(vllm_model, tmp_path):
    "One colocated engine, LoRA: after iteration 1 the merged weights are reloaded into it, and iteration 2 samples with them."
    out = tmp_path/'run'
    run('train_sso.py', *vllm_args(vllm_model/'model', out, vllm_model/'queries.txt', '--vllm_mode', 'colocate',
                                   '--use_peft', 'True', '--lora_r', 8, '--lora_target_modules', 'all-linear'))
    rows = read_rows(out)
    assert rows[0]['vllm_sync_bytes'] > 0 and 'vllm_sync_bytes' not in rows[1]      # synced once, between the iterations
    assert (out/'iteration-2'/'model'/'adapter_config.json').exists()
    check_samples_follow_the_policy(out)

def test_sso_online_two_processes_vllm_server(server, vllm_model, tmp_path):
    "2 processes sample from one `vllm serve`; after iteration 1 the main process pushes the weights, the server is checked, iteration 2 samples with them."
    url, model = server
    out = tmp_path/'run'
    r = run('train_sso.py', *vllm_args(model, out, vllm_model/'queries.txt', '--vllm_mode', 'server', '--vllm_server_base_url', url),
            launcher=LAUNCH2)
    assert [o['iteration'] for o in json_lines(r.stdout)] == [1, 2]
    rows = read_rows(out)
    assert rows[0]['vllm_sync_bytes'] > 0 and rows[0]['vllm_probe_s'] >= 0, rows[0]
    check_samples_follow_the_policy(out)

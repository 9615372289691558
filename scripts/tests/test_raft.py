"End-to-end tests of scripts/raft.py: real subprocess runs on a tiny policy and a tiny reward model saved to tmp_path."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1]/'raft.py'
FIELDS = {'iteration', 'n_prompts', 'n_samples', 'reward_mean', 'reward_std', 'reward_mean_valid', 'kept_reward_mean',
          'best_reward', 'degenerate', 'truncated', 'kept', 'distinct_2', 'kept_distinct_2', 'mean_words', 'sft_loss',
          'sample_seconds', 'seconds'}


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    "A tiny policy and a tiny reward model (random init) in folders, and a prompts file."
    from social_align.models import tiny_tokenizer, build_tiny_causal_lm, build_tiny_reward_model, save_model
    d = tmp_path_factory.mktemp('raft_models')
    tok = tiny_tokenizer(chat_template=None)
    kw = dict(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128)
    save_model(build_tiny_causal_lm(tok, seed=0, **kw), tok, d/'policy')
    save_model(build_tiny_reward_model(tok, seed=1, **kw), tok, d/'rm')
    save_model(build_tiny_reward_model(tok, seed=2, **kw), tok, d/'rm2')   # another reward model
    prompts = [f'Human: {q}\n\nAssistant:' for q in ('How do I stay safe online?', 'What is the capital of France?',
                                                       'Can you help me write a kind note?', 'How can I cook simple meals?')]
    (d/'prompts.jsonl').write_text(''.join(json.dumps({'prompt': p}) + '\n' for p in prompts))
    return d


def command(models, out, *extra):
    return [sys.executable, str(SCRIPT), '--model_name_or_path', str(models/'policy'),
           '--reward_model_name_or_path', str(models/'rm'), '--data_path', str(models/'prompts.jsonl'),
           '--output_dir', str(out), '--iterations', '2', '--prompts_per_iteration', '3', '--k', '4',
           '--max_new_tokens', '12', '--learning_rate', '1e-3', '--per_device_train_batch_size', '2',
           '--max_length', '64', '--min_chars', '1', '--save_samples', 'False', '--device', 'cpu', *extra]


ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def run(models, out, *extra, ok=True):
    r = subprocess.run(command(models, out, *extra), capture_output=True, text=True, timeout=600, env=ENV)
    if ok: assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def records(out):
    return [json.loads(l) for l in (Path(out)/'iterations.jsonl').read_text().splitlines() if l.strip()]


def test_raft_script_end_to_end_and_resume(models, tmp_path):
    "Two iterations; a rerun does nothing; other settings are refused; a third iteration continues from the second."
    from transformers import AutoModelForCausalLM
    out = tmp_path/'raft'
    r = run(models, out)
    recs = records(out)
    assert [o['iteration'] for o in recs] == [1, 2]
    for o in recs:
        assert FIELDS <= set(o), FIELDS - set(o)
        assert o['n_prompts'] == 3 and o['n_samples'] == 12 and 1 <= o['kept'] <= 3
    assert 'iteration 2/2' in r.stdout
    assert not (out/'samples').exists()                            # --save_samples False means false
    assert (out/'raft.png').stat().st_size > 0
    assert json.loads((out/'raft_config.json').read_text())['k'] == 4
    # the saved policy loads in plain transformers, and finetuning changed it
    trained = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(models/'policy')
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), base.state_dict().values()))
    assert sorted(p.name for p in (out/'checkpoints').iterdir()) == ['iteration-2']
    # a rerun finds both iterations done: nothing runs, nothing is logged twice
    r2 = run(models, out)
    assert 'iteration 1/2' not in r2.stdout and 'iteration 2/2' not in r2.stdout
    assert records(out) == recs
    # a run resumes only with the settings it was made with (it used to warn and go on)
    log = (out/'iterations.jsonl').read_bytes()
    r = run(models, out, '--k', '2', '--temperature', '0.5', ok=False)
    assert r.returncode != 0 and 'k was 4, now 2; temperature was 0.85, now 0.5' in r.stderr, r.stderr[-3000:]
    r = run(models, out, '--reward_model_name_or_path', str(models/'rm2'), ok=False)
    assert r.returncode != 0 and 'reward_model_name_or_path was' in r.stderr, r.stderr[-3000:]
    assert (out/'iterations.jsonl').read_bytes() == log and json.loads((out/'raft_config.json').read_text())['k'] == 4
    # asking for one more iteration (allowed) runs exactly that one, from the saved policy
    r3 = run(models, out, '--iterations', '3')
    assert 'iteration 3/3' in r3.stdout and 'iteration 2/3' not in r3.stdout
    recs3 = records(out)
    assert [o['iteration'] for o in recs3] == [1, 2, 3] and recs3[:2] == recs
    assert json.loads((out/'resume_settings.json').read_text())['history']['iterations'][-1] == 3


def test_raft_script_refuses_bad_values(models, tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), '--model_name_or_path', str(models/'policy'),
                        '--reward_model_name_or_path', str(models/'rm'), '--prompts_path', str(models/'prompts.jsonl'),
                        '--output_dir', str(tmp_path/'x'), '--ranking', 'best'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "invalid choice: 'best'" in r.stderr
    r = subprocess.run([sys.executable, str(SCRIPT), '--model_name_or_path', str(models/'policy'),
                        '--reward_model_name_or_path', str(models/'rm'), '--prompts_path', str(models/'prompts.jsonl'),
                        '--output_dir', str(tmp_path/'x'), '--k', '0'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and 'k must be a positive integer' in r.stderr
    # a causal LM is not a reward model: its random score head used to rank the samples, and the run exited 0
    r = subprocess.run([sys.executable, str(SCRIPT), '--model_name_or_path', str(models/'policy'),
                        '--reward_model_name_or_path', str(models/'policy'), '--prompts_path', str(models/'prompts.jsonl'),
                        '--output_dir', str(tmp_path/'y')], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and 'raft.py: error:' in r.stderr and str(models/'policy') in r.stderr and 'score.weight' in r.stderr, r.stderr[-2000:]
    assert not (tmp_path/'y'/'iterations.jsonl').exists()


def test_training_arguments_flags_and_aliases(models, tmp_path):
    "raft.py takes TrainingArguments flags for its finetuning step (--report_to used to be refused) and the other scripts' names."
    out = tmp_path/'raft'
    cmd = [a for a in command(models, out, '--iterations', '1') if a not in ('--data_path', '--reward_model_name_or_path', '--k')]
    cmd = [sys.executable, str(SCRIPT), '--prompts_path', str(models/'prompts.jsonl'), '--reward_model_path', str(models/'rm'),
           '--num_samples', '2', *[a for a in cmd[2:] if a not in (str(models/'prompts.jsonl'), str(models/'rm'), '4')],
           '--report_to', 'tensorboard', '--warmup_ratio', '0.5', '--lr_scheduler_type', 'cosine', '--max_grad_norm', '0.5']
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert records(out)[0]['n_samples'] == 6                          # 3 prompts x --num_samples 2
    cfg = json.loads((out/'raft_config.json').read_text())
    assert (cfg['k'], cfg['warmup_ratio'], cfg['lr_scheduler_type']) == (2, 0.5, 'cosine')
    assert list((out/'sft').rglob('events.out.tfevents.*'))          # the finetuning step logged to TensorBoard
    rec = json.loads((out/'resume_settings.json').read_text())['settings']
    assert rec['finetune_args'] == {'max_grad_norm': 0.5}             # report_to only changes what is logged: not a setting
    r = subprocess.run([*cmd, '--max_grad_norm', '0.25', '--iterations', '2'], capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode != 0 and "finetune_args was {'max_grad_norm': 0.5}, now {'max_grad_norm': 0.25}" in r.stderr, r.stderr[-3000:]
    r = subprocess.run([*cmd, '--save_steps', '5'], capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode == 2 and 'unrecognized arguments: --save_steps' in r.stderr   # RAFT saves its own checkpoints


def test_lora_adapter_saved_resumed_and_merged(models, tmp_path):
    "--use_peft: the adapter alone is saved (each checkpoint too); a run resumed from iteration 1 ends where an uninterrupted one does."
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    lora = ('--use_peft', 'True', '--lora_r', '4', '--lora_alpha', '8', '--lora_target_modules', 'q_proj', 'v_proj')
    full, out = tmp_path/'full', tmp_path/'resumed'
    r = run(models, full, *lora, '--save_merged', 'True')
    assert 'final policy in ' + str(full/'merged') in r.stdout, r.stdout[-2000:]
    assert (full/'adapter_model.safetensors').exists() and not (full/'model.safetensors').exists()
    assert (full/'checkpoints'/'iteration-2'/'adapter_config.json').exists()
    merged, base = AutoModelForCausalLM.from_pretrained(full/'merged'), AutoModelForCausalLM.from_pretrained(models/'policy')
    q = 'model.layers.0.self_attn.q_proj.weight'
    assert not torch.equal(merged.state_dict()[q], base.state_dict()[q])          # the adapter is in the merged weights
    run(models, out, *lora, '--iterations', '1')
    r = run(models, out, *lora, '--lora_r', '8', ok=False)                         # LoRA settings are resume settings
    assert r.returncode != 0 and 'finetune_args was' in r.stderr, r.stderr[-2000:]
    run(models, out, *lora)                                                        # iteration 2 starts from iteration 1's adapter
    assert _untimed(records(out)) == _untimed(records(full))
    a, b = load_file(out/'adapter_model.safetensors'), load_file(full/'adapter_model.safetensors')
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


TIMINGS = ('sample_seconds', 'seconds')


def _untimed(recs): return [{k: v for k, v in r.items() if k not in TIMINGS} for r in recs]


def _kill_when(models, out, ready, *extra, settle=0.0):
    "Start a run, SIGKILL it `settle` seconds after `ready()` holds; True if it was killed (not finished)."
    p = subprocess.Popen(command(models, out, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 300
    while not ready() and p.poll() is None and time.time() < deadline: time.sleep(0.02)
    time.sleep(settle)
    p.send_signal(signal.SIGKILL); p.wait(timeout=60)
    return p.returncode == -signal.SIGKILL


def test_killed_and_resumed_run_writes_the_uninterrupted_records(models, tmp_path):
    "kill -9 during sampling, and again after an iteration's samples are written: the resumed run writes what an uninterrupted one does."
    from safetensors.torch import load_file
    extra = ('--iterations', '3', '--save_samples', 'True')
    full = tmp_path/'full'
    run(models, full, *extra)
    out = tmp_path/'killed'
    # 1. killed while iteration 2 samples (iteration 1 is saved)
    assert _kill_when(models, out, lambda: (out/'checkpoints'/'iteration-1').exists(), *extra, settle=0.3)
    assert not (out/'checkpoints'/'iteration-2').exists()
    # 2. resumed, killed again once iteration 3's samples are on disk (before or while its policy is saved)
    assert _kill_when(models, out, lambda: (out/'samples'/'iteration-3.jsonl').exists(), *extra)
    run(models, out, *extra)
    assert _untimed(records(out)) == _untimed(records(full))
    for i in (1, 2, 3):
        assert (out/'samples'/f'iteration-{i}.jsonl').read_bytes() == (full/'samples'/f'iteration-{i}.jsonl').read_bytes(), i
    a, b = load_file(out/'model.safetensors'), load_file(full/'model.safetensors')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


LAUNCH2 = (sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(SCRIPT.parent/'configs'/'cpu.yaml'), '--num_processes', '2')
# every prompt a chunk of its own (4 sequences per HF generate call), nothing degenerate: all 4 prompts kept each iteration
SHARDED = ('--prompts_per_iteration', '4', '--generation_batch_size', '4', '--min_chars', '0', '--bad_markers', '', '--save_samples', 'True')


def _kept(out, it):
    return [(s['prompt_index'], s['sample'], s['response'], s['kept']) for s in map(json.loads, (out/'samples'/f'iteration-{it}.jsonl').read_text().splitlines())]


def test_two_processes_agree_with_one(models, tmp_path):
    "accelerate launch --num_processes 2 (per-device batch 1, resumed after iteration 1) samples, keeps and trains what one process with batch 2 does."
    from safetensors.torch import load_file
    one, two = tmp_path/'one', tmp_path/'two'
    run(models, one, *SHARDED, '--per_device_train_batch_size', '2')
    for iterations in ('1', '2'):   # the second launch resumes: every rank loads iteration 1's checkpoint
        r = subprocess.run([*LAUNCH2, *command(models, two, *SHARDED, '--per_device_train_batch_size', '1', '--iterations', iterations)[1:]],
                           capture_output=True, text=True, timeout=600, env=ENV)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.count('iteration 2/2') == 1 and 'iteration 1/2' not in r.stdout   # the main process prints, once
    a, b = _untimed(records(one)), _untimed(records(two))
    assert [o['iteration'] for o in b] == [1, 2] and [o['kept'] for o in b] == [4, 4]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-6), (k, x[k], y[k])
    for it in (1, 2): assert _kept(one, it) == _kept(two, it)                  # the same samples, the same kept set
    w1, w2 = load_file(one/'model.safetensors'), load_file(two/'model.safetensors')
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)


LORA = ('--use_peft', 'True', '--lora_r', '4', '--lora_alpha', '8', '--lora_target_modules', 'q_proj', 'v_proj')


def _responses(out, it):
    recs = [json.loads(l) for l in (out/'samples'/f'iteration-{it}.jsonl').read_text().splitlines()]
    # vLLM's detokenizer holds back a last, incomplete UTF-8 character (a random tiny model writes many): compare without it
    return [r['response'].rstrip('\ufffd') for r in sorted(recs, key=lambda r: (r['prompt_index'], r['sample'])) if r['sample'] == 0]


def test_colocated_vllm_lora_samples_with_the_updated_adapter(models, tmp_path):
    "--use_vllm (one in-process engine for the run) with --use_peft: iteration 2 samples with iteration 1's adapter, merged and pushed."
    from social_align.generation import vllm_available, HFGenerator
    if not vllm_available(): pytest.skip('vLLM is not installed')
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from social_align.models import load_tokenizer
    out = tmp_path/'vllm'
    r = run(models, out, '--use_vllm', 'True', '--vllm_mode', 'colocate', *LORA, '--temperature', '0', '--k', '1',
            '--prompts_per_iteration', '4', '--keep_checkpoints', '2', '--save_samples', 'True', '--learning_rate', '3e-2',
            '--num_train_epochs', '3', '--min_chars', '0', '--bad_markers', '', '--shuffle_prompts', 'False')
    recs = records(out)
    assert [o['iteration'] for o in recs] == [1, 2] and all(o['sync_seconds'] >= 0 for o in recs), r.stdout[-2000:]
    prompts = [json.loads(l)['prompt'] for l in (models/'prompts.jsonl').read_text().splitlines()]
    tok = load_tokenizer(models/'policy')
    def greedy(model): return [c[0].text.rstrip('\ufffd') for c in HFGenerator(model, tok).generate(prompts, n=1, temperature=0, max_new_tokens=12)]
    base = AutoModelForCausalLM.from_pretrained(models/'policy')
    assert _responses(out, 1) == greedy(base)                                  # the engine started from the policy
    tuned = PeftModel.from_pretrained(base, out/'checkpoints'/'iteration-1').merge_and_unload()
    assert _responses(out, 2) == greedy(tuned) != _responses(out, 1)           # and then sampled with the finetuned adapter


from conftest import VLLM_TINY as TINY   # the session's `vllm serve` fixture `server` is conftest.py's (dev mode, tiny Llama)


def test_two_processes_with_a_weight_synced_vllm_server(server, models, tmp_path):
    "accelerate launch --num_processes 2 ... --use_vllm --vllm_mode server: both ranks sample from one server, synced and checked each iteration."
    from social_align.models import tiny_tokenizer, build_tiny_reward_model, load_causal_lm, load_tokenizer, save_model
    from social_align.generation import HFGenerator
    from social_align.trainers.vllm import VLLMArguments, rollout_generator
    url, model = server
    rm = save_model(build_tiny_reward_model(tiny_tokenizer(), seed=1, **TINY), tiny_tokenizer(), tmp_path/'rm')
    out = tmp_path/'raft'
    cmd = [*LAUNCH2, str(SCRIPT), '--model_name_or_path', str(model), '--reward_model_name_or_path', str(rm),
           '--data_path', str(models/'prompts.jsonl'), '--output_dir', str(out), '--iterations', '2', '--prompts_per_iteration', '4',
           '--k', '2', '--max_new_tokens', '8', '--learning_rate', '1e-2', '--per_device_train_batch_size', '1', '--max_length', '64',
           '--min_chars', '1', '--bad_markers', '', '--save_samples', 'True', '--device', 'cpu',
           '--use_vllm', 'True', '--vllm_mode', 'server', '--vllm_server_base_url', url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    recs = records(out)
    assert [o['iteration'] for o in recs] == [1, 2] and all(o['n_samples'] == 8 and o['sync_seconds'] > 0 for o in recs)
    assert json.loads((out/'resume_settings.json').read_text())['settings']['rollout_engine'] == 'vllm-server'
    # each sync was checked (a mismatch fails the run); after the last one the server generates with the final policy
    tok, final = load_tokenizer(out), load_causal_lm(out, device='cpu')
    assert any(not torch.equal(a, b) for a, b in zip(final.state_dict().values(), load_causal_lm(model, device='cpu').state_dict().values()))
    gen = rollout_generator(VLLMArguments(use_vllm=True, vllm_mode='server', vllm_server_base_url=url), final, tok)
    prompts = ['hello there', 'a b c']
    served = [c[0].token_ids for c in gen.generate(prompts, temperature=0, max_new_tokens=6)]
    assert served == [c[0].token_ids for c in HFGenerator(final, tok).generate(prompts, temperature=0, max_new_tokens=6)]
    gen.close()

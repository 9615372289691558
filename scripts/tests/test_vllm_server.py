"""Weight sync to a real `vllm serve` (social_align.trainers.vllm, server mode): the test session's server of a tiny random
Llama on 127.0.0.1 (conftest.py's `server`, shared with test_sso, test_raft and test_train_rl), started with VLLM_SERVER_DEV_MODE=1 (the endpoints the sync uses); a policy in this process
synced and verified (plain and LoRA), two trainer processes under `accelerate launch` syncing a DDP-wrapped policy, and
syncs that cannot finish failing with WeightSyncError within their timeout."""
import contextlib, json, os, socket, subprocess, sys, threading, time
from pathlib import Path
import pytest
import torch

SCRIPTS = Path(__file__).parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}
LAUNCH2 = (sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(SCRIPTS/'configs'/'cpu.yaml'), '--num_processes', '2')
from conftest import VLLM_TINY as TINY, VLLM_LONG as LONG   # the tiny Llama the session's server serves (vLLM's CPU attention wants head size >= 32), its context


def client(url, policy, tok, **kw):
    from social_align.trainers.vllm import VLLMArguments, rollout_generator
    return rollout_generator(VLLMArguments(use_vllm=True, vllm_mode='server', vllm_server_base_url=url, **kw), policy, tok)


def perturb(model, seed, scale=0.2):
    "Change every weight (seeded): the server's greedy tokens move off the old weights."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn(p.shape, generator=g) * scale)


def test_sync_in_this_process(server, tmp_path):
    "A changed policy is pushed and checked: before the sync the server's greedy tokens differ, after it they are the policy's; LoRA pushes merged weights."
    from social_align.models import load_causal_lm, load_tokenizer
    from social_align.generation import HFGenerator
    from social_align.trainers.vllm import (VLLMServerGenerator, sync_weights, greedy_tokens, logprob_mismatch, PROBE_TOKENS)
    url, model = server
    tok, policy = load_tokenizer(model), load_causal_lm(model, device='cpu')
    gen = client(url, policy, tok)
    assert isinstance(gen, VLLMServerGenerator)
    far = time.monotonic() + 60
    perturb(policy, 1); info = sync_weights(gen, policy, step=0)
    assert info['sync_bytes'] == sum(p.numel() * p.element_size() for p in policy.parameters()) and info['sync_s'] < 60
    perturb(policy, 2)
    theirs, mine = gen._probe(policy, far)
    assert theirs != mine and len(mine) == PROBE_TOKENS      # stale: the server still has the step-0 weights
    sync_weights(gen, policy, step=1)
    theirs, mine = gen._probe(policy, far)
    assert theirs == mine                                    # synced: the policy's greedy tokens
    # rollouts come back with token ids and log-probs, the policy's own; a prompt that already starts with BOS (as a chat
    # template writes it) is sampled from the ids the trainer scores, BOS once (the server is sent `encode`'s ids)
    assert tok.bos_token and gen.encode(tok.bos_token + 'hello there') == gen.encode('hello there')
    prompts = ['hello there', 'a b c', tok.bos_token + 'a b c']
    got = [c for cs in gen.generate(prompts, temperature=0, max_new_tokens=6, logprobs=True) for c in cs]
    want = [c for cs in HFGenerator(policy, tok).generate(prompts, temperature=0, max_new_tokens=6, logprobs=True) for c in cs]
    assert [c.token_ids for c in got] == [c.token_ids for c in want] and all(c.token_ids for c in got)
    for g, w in zip(got, want):
        r = logprob_mismatch(torch.tensor([w.logprobs]), torch.tensor([g.logprobs]), torch.ones(1, len(g.logprobs)))
        assert r['logprob_diff_max'] < 1e-3, r
    # a LoRA policy: the server gets base + adapter, merged
    import peft
    lora = peft.get_peft_model(policy, peft.LoraConfig(r=4, target_modules=['q_proj', 'v_proj', 'gate_proj', 'down_proj'], init_lora_weights=False))
    assert gen._probe(lora, far)[1] != mine                  # the adapter changes the greedy tokens...
    sync_weights(gen, lora, step=2)
    theirs, mine = gen._probe(lora, far)
    assert theirs == mine                                    # ...and the server follows it
    gen.close()


def test_server_of_another_tokenizer_is_refused(server):
    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny import toy_tokenizer
    from social_align.generation import GenerationError
    from social_align.models import build_tiny_causal_lm
    tok = toy_tokenizer()
    with pytest.raises(GenerationError, match="whose tokenizer is not the policy's"):
        client(server[0], build_tiny_causal_lm(tok, seed=0, **TINY), tok)


WORKER = r'''
import json, sys, torch
from accelerate import Accelerator
from social_align.models import load_causal_lm, load_tokenizer
from social_align.trainers.vllm import VLLMArguments, rollout_generator, sync_weights, greedy_tokens
from social_align.trainers.command_line import use_cpu_ranks_without_accelerator
url, model, out = sys.argv[1:4]
use_cpu_ranks_without_accelerator()            # no GPU: the two processes join over gloo
acc = Accelerator()
tok, policy = load_tokenizer(model), load_causal_lm(model, device='cpu')
g = torch.Generator().manual_seed(11)          # the same change on both processes: one policy, as after a DDP step
with torch.no_grad():
    for p in policy.parameters(): p.add_(torch.randn(p.shape, generator=g) * 0.2)
ddp = acc.prepare(policy)
gen = rollout_generator(VLLMArguments(use_vllm=True, vllm_mode='server', vllm_server_base_url=url), ddp, tok, accelerator=acc)
info = sync_weights(gen, ddp, acc, step=5)
prompt = f'process {acc.process_index} says'
c = gen.generate([prompt], temperature=0, max_new_tokens=6)[0][0]
mine = greedy_tokens(ddp, gen.encode(gen.format(prompt)), 6)
json.dump(dict(wrapped=type(ddp).__name__, info=info, served=c.token_ids, mine=mine),
          open(f'{out}/rank{acc.process_index}.json', 'w'))
gen.close()
'''


def test_two_trainer_processes_sync_and_generate(server, tmp_path):
    "Under `accelerate launch --num_processes 2` the main process pushes, both wait and verify, both generate with the new weights."
    url, model = server
    (tmp_path/'worker.py').write_text(WORKER)
    r = subprocess.run([*LAUNCH2, str(tmp_path/'worker.py'), url, str(model), str(tmp_path)],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path/f'rank{i}.json').read_text()) for i in range(2)]
    assert ranks[0]['info']['sync_bytes'] > 0 and ranks[1]['info']['sync_bytes'] == 0   # only the main process pushed
    for rk in ranks:
        assert rk['wrapped'] == 'DistributedDataParallel'
        assert rk['served'] and rk['served'] == rk['mine'][:len(rk['served'])]         # the server generates with the pushed weights


def test_a_sync_that_cannot_finish_fails_in_time(server):
    "A server busy past the timeout (pause waits for in-flight requests) and a server gone: WeightSyncError, named, in time; the server still works after."
    import httpx
    from social_align.models import load_causal_lm, load_tokenizer
    from social_align.trainers.vllm import WeightSyncError, sync_weights
    url, model = server
    tok, policy = load_tokenizer(model), load_causal_lm(model, device='cpu')
    gen = client(url, policy, tok, vllm_sync_timeout=2.0)
    busy = threading.Thread(target=lambda: httpx.post(f'{url}/v1/completions', timeout=300, json=dict(
        model=gen.model, prompt='x', max_tokens=LONG - 16, n=4, temperature=1.0, ignore_eos=True)))
    busy.start(); time.sleep(1.0)                  # a long rollout in flight: /pause?mode=wait waits for it
    t0 = time.monotonic()
    with pytest.raises(WeightSyncError) as e: sync_weights(gen, policy, step=7)
    took = time.monotonic() - t0
    msg = str(e.value)
    # cut at the deadline (or at the end of a save that ran past it: local work, not the server's), plus the best-effort
    # /resume (given 5 s), plus slack for a starved machine: far sooner than the busy request would let a pause finish
    assert took < max(2.0, gen.save_s) + 5.0 + 5.0, (took, gen.save_s)
    assert all(s in msg for s in (f'step 7: weight sync to the vLLM server at {url} stalled', 'vllm_sync_timeout=2.0 s')), msg
    # what stalled is named: the pause (waiting for the busy request) or, where the busy server starves the trainer's CPU, the save before it
    assert 'pausing generation (/pause)' in msg or 'saving the weights' in msg, msg
    assert busy.is_alive(), 'the busy request finished too soon to make the sync stall: make it longer'
    httpx.post(f'{url}/abort_requests', json={}, timeout=30).raise_for_status(); busy.join(60)
    r = httpx.post(f'{url}/v1/completions', json=dict(model=gen.model, prompt='hello', max_tokens=4), timeout=30)
    assert r.status_code == 200 and r.json()['choices'], r.text   # not left paused: it generates
    gen.sync_timeout = 60.0
    assert sync_weights(gen, policy, step=8)['sync_bytes'] > 0      # and syncs again
    # a server that is gone: cannot reach it, named, at once
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); dead = s.getsockname()[1]
    gen.url = f'http://127.0.0.1:{dead}'
    t0 = time.monotonic()
    with pytest.raises(WeightSyncError, match=f'step 9: weight sync to the vLLM server at http://127.0.0.1:{dead} failed: .*cannot reach'):
        sync_weights(gen, policy, step=9)
    assert time.monotonic() - t0 < 10
    gen.close()

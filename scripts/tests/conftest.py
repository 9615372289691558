"""Fixtures every script test module shares: one `vllm serve` of a tiny random Llama for the whole test session (starting
one takes 1.5-4 minutes on 2 cores), used by test_vllm_server.py, test_sso.py, test_raft.py and test_train_rl.py."""
import os
import pytest

VLLM_TINY = dict(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128)   # vLLM's CPU attention wants head size >= 32
VLLM_LONG = 16384  # the served context: room for a rollout long enough to keep the server busy past a sync's timeout, even on
                   # a machine fast enough to decode 4 x 4k tokens of the tiny model in a few seconds


@pytest.fixture(scope='session')
def vllm_serve(tmp_path_factory):
    "`(root URL, model folder)` of a `vllm serve` (dev mode) of a tiny random Llama, started once for the test session."
    from social_align.generation import vllm_available, vllm_server
    if not vllm_available(): pytest.skip('vLLM is not installed here: no `vllm serve` to test against')
    from social_align.models import tiny_tokenizer, build_tiny_causal_lm, save_model
    d = tmp_path_factory.mktemp('vllm-serve')
    model = save_model(build_tiny_causal_lm(tiny_tokenizer(), seed=0, max_position_embeddings=VLLM_LONG, **VLLM_TINY), tiny_tokenizer(), d/'model')
    old = os.environ.get('VLLM_SERVER_DEV_MODE')
    os.environ['VLLM_SERVER_DEV_MODE'] = '1'       # the server process inherits it: /pause, /collective_rpc, ...
    try:
        with vllm_server(model, dtype='fp32', max_model_len=VLLM_LONG, enforce_eager=True, log_path=d/'server.log') as url:
            yield url.removesuffix('/v1'), model
    finally:
        if old is None: os.environ.pop('VLLM_SERVER_DEV_MODE', None)
        else: os.environ['VLLM_SERVER_DEV_MODE'] = old


@pytest.fixture
def server(vllm_serve):
    """`(root URL, model folder)` of the session's `vllm serve`, serving the model folder's own weights again: a test before
    this one may have pushed others (each test starts from that folder's policy, whatever ran before it)."""
    from social_align.models import load_causal_lm, load_tokenizer
    from social_align.trainers.vllm import VLLMArguments, rollout_generator, sync_weights
    url, model = vllm_serve
    tok, policy = load_tokenizer(model), load_causal_lm(model, device='cpu')
    gen = rollout_generator(VLLMArguments(use_vllm=True, vllm_mode='server', vllm_server_base_url=url), policy, tok)
    try: sync_weights(gen, policy, step='restore')      # pushed and checked by the greedy probe
    finally: gen.close()
    return url, model

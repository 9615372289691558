"""Tests of scripts/simulate.py against real OpenAI-compatible servers: `vllm serve` of two different tiny models on
127.0.0.1 (started once for this module, stopped after it; the second one wants an API key), a single served model
with --backend openai, and a mixed society from --society_config, resumed; and the errors that need no server."""
import contextlib, json, os, socket, subprocess, sys
from pathlib import Path
import pytest

SCRIPT = Path(__file__).parents[1]/'simulate.py'
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}
KEY_ENV, KEY = 'SOCIETY_TEST_KEY', 'sk-society-test'   # tiny-b's server wants this key
TINY = dict(hidden_size=64, num_heads=2, intermediate_size=128)


def run(*args, env=None, timeout=600):
    "simulate.py on a 3x3 world with short answers."
    return subprocess.run([sys.executable, str(SCRIPT), '--size', '3', '--max_new_tokens', '6', '--retries', '0', '--device', 'cpu',
                           '--no_progress', *map(str, args)], capture_output=True, text=True, env=env or ENV, timeout=timeout)


def records(out):
    return [json.loads(l) for l in (Path(out)/'interactions.jsonl').read_text().splitlines() if l.strip()]


def served_requests(url):
    "Requests the vLLM server at `url` has finished (its Prometheus counter)."
    import httpx
    text = httpx.get(url.removesuffix('/v1') + '/metrics', timeout=10).text
    return sum(float(l.rsplit(' ', 1)[1]) for l in text.splitlines() if l.startswith('vllm:request_success_total'))


def http_requests(url, handler='/v1/completions'):
    "HTTP requests the vLLM server at `url` has answered on `handler` (its Prometheus HTTP counter)."
    import httpx
    text = httpx.get(url.removesuffix('/v1') + '/metrics', timeout=10).text
    return sum(float(l.rsplit(' ', 1)[1]) for l in text.splitlines() if l.startswith('http_requests_total{') and f'handler="{handler}"' in l)


@pytest.fixture(scope='module')
def servers(tmp_path_factory):
    "`{served name: base URL}` of two tiny random Llamas (other seeds, other depths) served by `vllm serve`."
    from social_align.generation import vllm_available, vllm_server
    if not vllm_available(): pytest.skip('vLLM is not installed here: no `vllm serve` to test against')
    from social_align.models import tiny_tokenizer, build_tiny_causal_lm, save_model
    d, tok = tmp_path_factory.mktemp('served'), tiny_tokenizer()
    a = save_model(build_tiny_causal_lm(tok, seed=0, num_layers=1, **TINY), tok, d/'a')
    b = save_model(build_tiny_causal_lm(tok, seed=1, num_layers=2, **TINY), tok, d/'b')
    kw = dict(dtype='fp32', max_model_len=512, enforce_eager=True)
    with contextlib.ExitStack() as stack:
        yield {'tiny-a': stack.enter_context(vllm_server(a, extra_args=['--served-model-name', 'tiny-a'], log_path=d/'a.log', **kw)),
               'tiny-b': stack.enter_context(vllm_server(b, extra_args=['--served-model-name', 'tiny-b', '--api-key', KEY],
                                                         log_path=d/'b.log', **kw))}


def society_yaml(path, servers, agents='[{model: base, label: bad}, {model: aligned, label: good}]'):
    path.write_text('models:\n'
                    f'  base:    {{backend: openai, base_url: "{servers["tiny-a"]}", model: tiny-a}}\n'
                    f'  aligned: {{backend: openai, base_url: "{servers["tiny-b"]}", model: tiny-b, api_key_env: {KEY_ENV}}}\n'
                    f'agents: {agents}\n'
                    'observer: {model: aligned}\n')
    return path


def test_one_served_model_runs_and_resumes(servers, tmp_path):
    "--backend openai: every agent and the observer on one served model; a second run with more rounds continues it."
    out, url = tmp_path/'one', servers['tiny-a']
    flags = ('--backend', 'openai', '--base_url', url, '--model_name_or_path', 'tiny-a', '--max_concurrency', '4', '--output_dir', out)
    before, before_http = served_requests(url), http_requests(url)
    r = run(*flags, '--rounds', '1')
    assert r.returncode == 0, r.stderr[-3000:]
    assert [(x['iteration'], x['agent_id'], x['model']) for x in records(out)] == [(0, a, 'tiny-a') for a in range(9)]
    # 9 drafts + 18 observer scores + 24 ratings (3x3: 4 corners rated by 2 peers, 4 edges by 3, the center by 4) + 9 revisions + 18 re-scores
    assert served_requests(url) - before == 78
    # ... in few HTTP requests (issue 18): one per phase, a few more where a phase repeats a prompt (another seed)
    assert 5 <= http_requests(url) - before_http <= 15, http_requests(url) - before_http
    r = run(*flags, '--rounds', '2', '--max_concurrency', '2')                   # how fast it is served may change
    assert r.returncode == 0, r.stderr[-3000:]
    assert [(x['iteration'], x['agent_id']) for x in records(out)] == [(i, a) for i in range(2) for a in range(9)]
    assert json.loads((out/'resume_settings.json').read_text())['history'] == {'rounds': [1, 2]}
    env = {**ENV, KEY_ENV: KEY}
    r = run(*flags[:2], '--base_url', servers['tiny-b'], '--model_name_or_path', 'tiny-b', '--api_key_env', KEY_ENV,
            '--output_dir', out, '--rounds', '3', env=env)                        # another model: refused
    assert r.returncode != 0 and "model_name_or_path was 'tiny-a', now 'tiny-b'" in r.stderr, r.stderr[-3000:]
    r = run(*flags[:4], '--model_name_or_path', 'tiny-c', '--output_dir', tmp_path/'c', '--rounds', '1')
    assert r.returncode != 0 and f"{url} does not serve a model named 'tiny-c' (it serves: tiny-a)" in r.stderr, r.stderr[-3000:]


def test_society_of_two_served_models(servers, tmp_path):
    "A 3x3 society: the agents that start bad on tiny-a, the good ones and the observer on tiny-b; resumed; reshuffling refused."
    cfg, out = society_yaml(tmp_path/'society.yaml', servers), tmp_path/'society'
    env = {**ENV, KEY_ENV: KEY}
    r = run('--society_config', cfg, '--rounds', '1', '--output_dir', out)       # no key in the environment
    assert r.returncode != 0 and f'environment variable {KEY_ENV} is not set' in r.stderr and 'models.aligned' in r.stderr, r.stderr[-3000:]
    r = run('--society_config', cfg, '--rounds', '1', '--output_dir', out, env={**ENV, KEY_ENV: 'sk-wrong'})
    assert r.returncode != 0 and f'{servers["tiny-b"]}/models refused the request (HTTP 401)' in r.stderr, r.stderr[-3000:]
    assert 'sk-wrong' not in r.stderr
    assert not out.exists()                                                       # refused before the world was made
    before = {m: served_requests(u) for m, u in servers.items()}
    r = run('--society_config', cfg, '--rounds', '1', '--output_dir', out, '--max_concurrency', '4', env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = records(out)
    # half_half: agents 0-3 start good (tiny-b), 4-8 bad (tiny-a)
    assert [(x['agent_id'], x['label'], x['model']) for x in recs] == [(a, 'good' if a < 4 else 'bad', 'aligned' if a < 4 else 'base') for a in range(9)]
    got = {m: served_requests(u) - before[m] for m, u in servers.items()}
    assert got['tiny-a'] >= 10 and got['tiny-b'] >= 8 + 36, got                  # drafts and revisions; tiny-b also observes
    assert sum(got.values()) == 78, got                                            # every request went to one of the two
    settings = json.loads((out/'resume_settings.json').read_text())['settings']['society']
    assert settings['assignment'] == ['aligned']*4 + ['base']*5 and 'base_url' not in settings['models']['base']
    r = run('--society_config', cfg, '--rounds', '2', '--output_dir', out, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = records(out)
    assert [(x['iteration'], x['agent_id']) for x in recs] == [(i, a) for i in range(2) for a in range(9)]
    assert [x['model'] for x in recs[9:]] == [x['model'] for x in recs[:9]]
    other = society_yaml(tmp_path/'other.yaml', servers, '[{model: base, share: 0.5}, {model: aligned, share: 0.5}]')
    r = run('--society_config', other, '--rounds', '3', '--output_dir', out, env=env)
    assert r.returncode != 0 and 'society was' in r.stderr, r.stderr[-3000:]
    assert len(records(out)) == 18


def free_url():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return f'http://127.0.0.1:{s.getsockname()[1]}/v1'


def test_errors_name_the_url_the_variable_and_the_key(tmp_path):
    "No server needed: an unreachable server is named by its URL, a missing key by its variable, a bad config by file, line and key."
    url = free_url()
    r = run('--backend', 'openai', '--base_url', url, '--model_name_or_path', 'tiny-a', '--output_dir', tmp_path/'x')
    assert r.returncode != 0 and f'{url}/models failed' in r.stderr and 'cannot reach the server' in r.stderr, r.stderr[-3000:]
    assert 'Traceback' not in r.stderr
    env = {k: v for k, v in ENV.items() if k != KEY_ENV}
    r = run('--backend', 'openai', '--base_url', url, '--api_key_env', KEY_ENV, '--output_dir', tmp_path/'x', env=env)
    assert r.returncode != 0 and f'the environment variable {KEY_ENV} is not set' in r.stderr, r.stderr[-3000:]
    r = run('--backend', 'openai', '--output_dir', tmp_path/'x')
    assert r.returncode != 0 and '--backend openai needs --base_url' in r.stderr
    cfg = tmp_path/'society.yaml'
    cfg.write_text(f'models:\n  a: {{backend: openai, base_url: "{url}"}}\nagents:\n  - {{model: a, share: 0.5}}\n  - {{model: a, shrae: 0.5}}\n')
    r = run('--society_config', cfg, '--output_dir', tmp_path/'x')
    assert r.returncode != 0 and f"{cfg}:5 field 'agents[1].shrae': unknown key" in r.stderr, r.stderr[-3000:]
    r = run('--society_config', cfg, '--model_name_or_path', 'x', '--output_dir', tmp_path/'x')
    assert r.returncode != 0 and 'not both' in r.stderr
    assert not (tmp_path/'x').exists()


def test_base_url_lists_several_servers(tmp_path):
    "--base_url with commas: one model on two local toy servers; every phase goes to both, in few requests (issue 17/18)."
    from social_align.generation import toy_openai_server
    sys.path.insert(0, str(SCRIPT.parent))
    import simulate
    with toy_openai_server() as s1, toy_openai_server() as s2:
        simulate.main(['--backend', 'openai', '--base_url', f'{s1.url},{s2.url}', '--size', '2', '--rounds', '1', '--retries', '0',
                       '--max_new_tokens', '6', '--device', 'cpu', '--no_progress', '--output_dir', str(tmp_path/'w')])
        assert [(x['agent_id'], x['model']) for x in records(tmp_path/'w')] == [(a, 'toy') for a in range(4)]
        assert s1.requests >= 5 and s2.requests >= 5, (s1.requests, s2.requests)   # every phase: a request to each server
        assert s1.requests + s2.requests <= 16, (s1.requests, s2.requests)          # not one per prompt (4+8+8+4+8 = 32)

"A smoke run of scripts/bench_rl.py: one step of each trainer on a tiny model, ratios printed and written."
import json, os, subprocess, sys
from pathlib import Path

SCRIPTS = Path(__file__).parents[1]

def test_bench_rl_smoke(tmp_path):
    out = tmp_path/'bench.json'
    r = subprocess.run([sys.executable, str(SCRIPTS/'bench_rl.py'), '--steps', '1', '--prompts_per_step', '2', '--num_generations', '2',
                        '--max_new_tokens', '4', '--json', str(out)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'ours / TRL GRPOTrainer = ' in r.stdout and 'ours / TRL RLOOTrainer = ' in r.stdout, r.stdout
    res = json.loads(out.read_text())
    for alg in ('grpo', 'rloo'):
        assert res[alg]['ours_samples_per_s'] > 0 and res[alg]['trl_samples_per_s'] > 0
        assert abs(res[alg]['ratio'] - res[alg]['ours_samples_per_s'] / res[alg]['trl_samples_per_s']) < 0.01

def test_bench_rl_refuses_one_generation(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPTS/'bench_rl.py'), '--num_generations', '1'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and '--num_generations must be >= 2' in r.stderr

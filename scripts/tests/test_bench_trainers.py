"A smoke run of scripts/bench_trainers.py --quick: it trains every compared trainer and prints the ratios (no timing asserted)."
import json, os, re, subprocess, sys, time
from pathlib import Path

SCRIPT = Path(__file__).parents[1]/'bench_trainers.py'

def test_bench_quick(tmp_path):
    t0 = time.time()
    r = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--json', str(tmp_path/'bench.json')], capture_output=True,
                       text=True, timeout=180, env={**os.environ, 'TOKENIZERS_PARALLELISM': 'false'})
    assert r.returncode == 0, r.stderr[-3000:]
    for label in ('dpo', 'ipo', 'reward'):
        m = re.search(rf'^ratio {label}\s+steps/s (\d+\.\d+)\s+tokens/s (\d+\.\d+)', r.stdout, re.M)
        assert m and float(m[1]) > 0 and float(m[2]) > 0, r.stdout[-3000:]
    assert re.search(r'matmul \[\d+ x 64\] @ \[64 x 256\] on 1 thread\(s\): [\d.]+ GFLOP/s', r.stdout)
    res = json.loads((tmp_path/'bench.json').read_text())
    names = {'dpo social_align', 'dpo trl', 'ipo social_align', 'ipo trl', 'reward social_align', 'reward trl'}
    assert set(res['results']) == names
    assert len({res['results'][n]['tokens'] for n in names}) == 1     # every trainer saw exactly the same tokens
    assert all(0 < res['results'][n]['share_of_matmul_flops'] for n in names)
    print(f'bench --quick took {time.time() - t0:.1f} s')

"A smoke run of scripts/bench_trainers.py --quick: it trains every compared trainer and prints the ratios and DPO's memory by kind of reference (no timing asserted)."
import json, os, re, subprocess, sys, time
from pathlib import Path

SCRIPT = Path(__file__).parents[1]/'bench_trainers.py'

def test_bench_quick(tmp_path):
    t0 = time.time()
    r = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--json', str(tmp_path/'bench.json')], capture_output=True,
                       text=True, timeout=300, env={**os.environ, 'TOKENIZERS_PARALLELISM': 'false'})
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
    mem = res['memory']
    assert set(mem) == {'separate', 'precomputed', 'adapter_off'}
    for v, label in (('separate', 'separate reference'), ('precomputed', 'precomputed reference log-probs'), ('adapter_off', 'LoRA, adapter-off reference')):
        assert re.search(rf'^memory {label}.*\d+\.\d MiB', r.stdout, re.M), r.stdout[-3000:]
        assert mem[v]['peak_rss_mb'] >= mem[v]['rss_before_trainer_mb'] > 0 and mem[v]['rss_rise_mb'] >= 0
    # the exact weight bytes: the copy holds the policy twice, the other two once (LoRA: plus its adapter)
    assert mem['separate']['reference_copy'] and not mem['precomputed']['reference_copy'] and not mem['adapter_off']['reference_copy']
    w = {v: mem[v]['weights_mb'] for v in mem}
    assert abs(w['separate'] - 2 * w['precomputed']) < 1e-6 and w['precomputed'] < w['adapter_off'] < w['separate']
    assert mem['adapter_off']['trainable'] < mem['precomputed']['trainable'] == mem['separate']['trainable']
    print(f'bench --quick took {time.time() - t0:.1f} s')

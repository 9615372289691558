"""A smoke run of scripts/bench_trainers.py --quick: every trainer (SFT, RM, stable alignment, DPO, IPO, SSO), TRL's where
it has one, each lever next to its plain row with the same losses, the long-tailed padded-vs-packed comparison, the
matmul probe interleaved with the runs, the profile of a DPO step and DPO's memory by kind of reference (no timing asserted)."""
import json, os, re, subprocess, sys, time
from pathlib import Path

SCRIPT = Path(__file__).parents[1]/'bench_trainers.py'
KINDS = ('sft', 'reward', 'stable_alignment', 'dpo', 'ipo', 'sso')

def test_bench_quick(tmp_path):
    t0 = time.time()
    r = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--profile', '--json', str(tmp_path/'bench.json')], capture_output=True,
                       text=True, timeout=900, env={**os.environ, 'TOKENIZERS_PARALLELISM': 'false', 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    for label in ('sft', 'reward', 'dpo', 'ipo'):
        m = re.search(rf'^ratio {label}\s+1 thread\(s\) tokens/s (\d+\.\d+)\s+steps/s (\d+\.\d+)', r.stdout, re.M)
        assert m and float(m[1]) > 0 and float(m[2]) > 0, r.stdout[-3000:]
    assert re.search(r'matmul probe \[\d+ x 64\] @ \[64 x 256\] on 1 thread\(s\), \d+ probes: median [\d.]+ GFLOP/s, spread', r.stdout)
    res = json.loads((tmp_path/'bench.json').read_text())
    rows = {(x['kind'], x['variant']): x for x in res['results']}
    assert len(res['probes']['1']) == len(res['results']) + 1           # a probe before the first run and after every run
    for k in KINDS: assert (k, 'social_align') in rows
    for k in ('sft', 'reward', 'dpo', 'ipo'): assert (k, 'trl') in rows
    for k in ('reward', 'dpo', 'ipo'): assert rows[k, 'social_align']['tokens'] == rows[k, 'trl']['tokens']   # the same tokens
    assert all(0 < x['share_of_matmul_flops'] and x['probe_flops_per_s'] > 0 for x in res['results'])
    # every lever keeps the losses of the plain path (float rounding only), the loss moved, and compile really ran
    levers = {('dpo', 'fused'), ('dpo', 'foreach'), ('dpo', 'compile'), ('dpo', 'precompute'), ('ipo', 'precompute'),
              *((k, 'padding_free') for k in ('sft', 'stable_alignment', 'dpo', 'ipo', 'sso')), ('long_tail dpo', 'padding_free')}
    assert levers <= set(rows), sorted(set(rows))
    for key in levers:
        assert rows[key]['loss_delta'] is not None and rows[key]['loss_delta'] < 1e-4, (key, rows[key]['losses'])
        assert len(rows[key]['losses']) >= 4 and len(set(rows[key]['losses'])) > 1
    # flops: a reference forward adds 2N per token, except with precomputed reference log-probs
    d, p = rows['dpo', 'social_align'], rows['dpo', 'precompute']
    assert abs(d['model_flops_per_s'] / d['tokens_per_s'] / (p['model_flops_per_s'] / p['tokens_per_s']) - 8 / 6) < 1e-9
    # the long tail: padded batches are largely pad; packed rows (no longer than the batch's longest sequence) only end
    # in pad, far less of it; both train on the same tokens
    lp, lf = rows['long_tail dpo', 'padded'], rows['long_tail dpo', 'padding_free']
    assert lp['pad_share'] > 0.2 and 0 <= lf['pad_share'] < lp['pad_share'] / 2 and lp['tokens'] == lf['tokens'], (lp, lf)
    assert re.search(r'^long tail 1 thread\(s\): pad share padded [\d.]+% vs packed [\d.]+%', r.stdout, re.M)
    # the profile of one DPO step
    prof = res['profile']
    assert prof['step_ms'] > 0 and abs(sum(prof['shares'].values()) - 1) < 1e-6 and prof['ms']['matmul'] > 0
    assert re.search(r'^profile matmul\s+[\d.]+ ms', r.stdout, re.M)
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

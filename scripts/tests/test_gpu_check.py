"""scripts/gpu_check.sh end to end in its CPU mode (a tiny model): every part runs, the summary and the JSON have one
record per part; a part made to hang is ended at its time limit and a fresh child goes on with the parts after it."""
import json, os, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT/'scripts'/'gpu_check.sh'
sys.path.insert(0, str(ROOT))
from scripts.gpu_check.run import cuda_notebooks
from scripts.gpu_check.parts import TRAINERS


def test_cuda_notebooks_found():
    nbs = cuda_notebooks()
    assert 'nbs/23_loss_dpo.ipynb' in nbs and all(n >= 1 for n in nbs.values())
    assert 'nbs/10_sandbox.ipynb' not in nbs       # no #| cuda cell there


def test_gpu_check_cpu_mode(tmp_path):
    t0 = time.time()
    out = tmp_path/'out'
    env = {**os.environ, 'GPU_CHECK_DEVICE': 'cpu', 'OUT': str(out), 'GPU_CHECK_HANG': 'reward', 'OMP_NUM_THREADS': '1',
           'GPU_CHECK_WHEELS': str(tmp_path/'no_wheels')}
    # trainer=30: long enough for a fresh child's first part (model load + 2 bf16 steps) on a loaded 2-core machine (8 s was
    # not, in CI), short enough that the hung part is cut soon
    r = subprocess.run(['bash', str(SCRIPT), '--timeout', 'trainer=30'], capture_output=True, text=True, timeout=420, env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]          # the hung part fails the check
    res = json.loads((out/'gpu_check.json').read_text())
    names = ['env', 'notebooks', 'build', *TRAINERS, 'mfu', 'generation']
    assert list(res['parts']) == names and res['device'] == 'cpu' and not res['ok']
    st = {n: res['parts'][n]['status'] for n in names}
    assert st['reward'] == 'timeout' and 'no result within' in res['parts']['reward']['error']
    bad = {n: res['parts'][n] for n, s in st.items() if s != 'ok' and n != 'reward'}
    assert not bad, bad                                                      # the parts after it ran in a fresh child
    assert res['counts'] == {'ok': len(names) - 1, 'failed': 0, 'timeout': 1, 'skipped': 0}
    nb = res['parts']['notebooks']
    assert nb['cuda_flag_runs_cells'] and nb['probe']['status'] == 'ok' and nb['notebooks'] == {}
    for n in ('sft', 'dpo', 'sso', 'stable_alignment'):
        p = res['parts'][n]
        assert p['steps'] == 2 and p['step_s'] > 0 and p['mixed_precision'] == 'bf16' and p['loss'] > 0
    assert res['parts']['ppo']['mixed_precision'] == res['parts']['rloo']['mixed_precision'] == 'bf16'
    assert res['parts']['raft']['kept'] > 0
    m = res['parts']['mfu']
    assert 0 < m['mfu'] < m['mfu_with_reference'] and m['matmul_flops_per_s'] > 0 and len(m['matmul_probes']) == 2
    g = res['parts']['generation']
    assert g['backend'] == 'hf' and g['tokens'] > 0 and g['tokens_per_s'] > 0
    assert (out/'gpu_check.log').exists()
    # the summary: one line per part, then the count
    for n in names: assert re.search(rf'^{n}\s+(ok|timeout)\s', r.stdout, re.M), r.stdout[-3000:]
    assert re.search(r'^mfu\s+ok .* MFU \d+\.\d% of the measured bf16 matmul', r.stdout, re.M)
    assert re.search(r'^RESULT: 12 ok, 0 failed, 1 timed out, 0 skipped', r.stdout, re.M)
    print(f'gpu_check --cpu took {time.time() - t0:.1f} s')

"""The GPU check's orchestrator (standard library only): runs each part in a child process under its own time limit and
inside one overall budget, then prints a summary and writes it as JSON. `scripts/gpu_check.sh` sets the environment up
and calls this; see its header for what the parts are.

    python -m scripts.gpu_check.run                 # on a GPU: ~0.5B Llama, bf16, vLLM; at most --budget seconds
    python -m scripts.gpu_check.run --cpu           # every code path on the CPU with a tiny model (GPU_CHECK_DEVICE=cpu too)
    python -m scripts.gpu_check.run --parts env,trainers --trainers dpo,sso
"""
from __future__ import annotations
import argparse, json, os, queue, re, shutil, signal, subprocess, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.gpu_check.parts import MARK, TRAINERS   # noqa: E402  (parts.py imports nothing heavy at module level)

PARTS = ('env', 'notebooks', 'build', 'trainers', 'mfu', 'generation')
# the settings of a run on a GPU (a ~0.47B Llama) and of the CPU mode (a tiny one); see `settings`
GPU = dict(arch=dict(hidden=1024, layers=24, heads=16, intermediate=4096, vocab=32000, max_position_embeddings=1024),
           steps=2, batch_size=8, max_length=256, rl_new_tokens=32,
           generation=dict(backend='vllm', prompts=64, n=4, max_new_tokens=128, gpu_memory_utilization=0.5, enforce_eager=False),
           mfu=dict(warmup=2, steps=5, batch_size=16, repeats=2, probe_size=8192),
           timeouts=dict(startup=120, env=60, notebook=240, build=120, trainer=120, mfu=150, generation=240), budget=470, notebook_workers=4,
           one_process=False)
CPU = dict(arch=dict(hidden=64, layers=2, heads=1, intermediate=128, vocab=400, max_position_embeddings=512),
           steps=2, batch_size=2, max_length=128, rl_new_tokens=8,
           generation=dict(backend='hf', prompts=4, n=2, max_new_tokens=8, gpu_memory_utilization=None, enforce_eager=True),
           mfu=dict(warmup=1, steps=2, batch_size=4, repeats=1, probe_size=256),
           timeouts=dict(startup=120, env=60, notebook=120, build=120, trainer=120, mfu=120, generation=120), budget=300, notebook_workers=1,
           one_process=True)


def cuda_notebooks(nbs:Path=ROOT/'nbs')->dict[str, int]:
    "Notebooks with `#| cuda` cells, and how many each has."
    out = {}
    for f in sorted(nbs.glob('*.ipynb')):
        n = sum(1 for c in json.loads(f.read_text())['cells']
                if c['cell_type'] == 'code' and re.match(r'\s*#\|\s*cuda\b', ''.join(c['source'])))
        if n: out[str(f.relative_to(ROOT))] = n
    return out


def probe_notebook(folder:Path)->tuple[Path, Path]:
    "A two-cell notebook whose `#| cuda` cell writes a marker file: shows that `nbdev_test --flags cuda` really runs such cells."
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder/'cuda_cell_ran'
    marker.unlink(missing_ok=True)
    cell = lambda src, i: dict(cell_type='code', execution_count=None, id=f'0000000{i}', metadata={}, outputs=[], source=src)
    nb = dict(nbformat=4, nbformat_minor=5, metadata={}, cells=[cell('x = 1', 1),
              cell(f'#| cuda\nfrom pathlib import Path\nPath({str(marker)!r}).write_text("ran")', 2)])
    (folder/'cuda_probe.ipynb').write_text(json.dumps(nb, indent=1) + '\n')
    return folder/'cuda_probe.ipynb', marker


class Clock:
    "The overall budget: seconds left, and a part's limit within it."
    def __init__(self, budget:float): self.t0, self.budget = time.monotonic(), budget
    def elapsed(self)->float: return time.monotonic() - self.t0
    def left(self)->float: return self.budget - self.elapsed()
    def limit(self, part_limit:float)->float: return max(0., min(part_limit, self.left()))


def _kill(p:subprocess.Popen):
    "End the child and everything it started (it runs in its own process group)."
    try: os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError): p.kill()
    p.wait()


def _tail(path:Path, n:int=1500)->str:
    try: return path.read_text(errors='replace')[-n:]
    except OSError: return ''


LIVE: set = set()   # the children running now: ended if this process is

def _end_children(*_):
    for p in list(LIVE): _kill(p)
    sys.exit(1)


def run_items(items:list[str], cfg_path:Path, env:dict, timeouts:dict[str, float], clock:Clock, log:Path, results:dict):
    """Run `items` in one child (`parts.py`), each within its `timeouts[item]` seconds (and the budget); a child that hangs
    or dies is ended, its item marked, and a fresh child goes on with the rest."""
    todo = list(items)
    while todo:
        if clock.left() < 5:
            for name in todo: results[name] = dict(status='skipped', error='out of the time budget')
            return
        with open(log, 'a') as err:
            err.write(f'\n===== {" ".join(todo)}\n'); err.flush()
            p = subprocess.Popen([sys.executable, '-m', 'scripts.gpu_check.parts', '--config', str(cfg_path), *todo], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        LIVE.add(p)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: ([lines.put(x) for x in p.stdout], lines.put(None)), daemon=True).start()
        current, timeout = None, timeouts['startup']      # imports, until the first start line
        deadline = time.monotonic() + clock.limit(timeout)
        while True:
            try: line = lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                _kill(p); LIVE.discard(p)
                name = current or todo[0]
                what = f'no result within {timeout:.0f} s' if current else f'the child did not start it within {timeout:.0f} s (imports)'
                results[name] = dict(status='timeout', seconds=round(timeout, 1), error=f'{what}; stderr: {_tail(log)}')
                todo.remove(name); break
            if line is None:      # the child ended
                p.wait()
                if current is not None and current in todo:
                    results[current] = dict(status='failed', error=f'the child process died (exit {p.returncode}): {_tail(log)}')
                    todo.remove(current)
                elif todo and current is None:
                    results[todo[0]] = dict(status='failed', error=f'the child process ended before starting (exit {p.returncode}): {_tail(log)}')
                    todo.pop(0)
                break
            if not line.startswith(MARK): continue
            rec = json.loads(line[len(MARK):])
            name = rec.pop('name')
            if rec.pop('event') == 'start':
                current, timeout = name, timeouts[name]
                deadline = time.monotonic() + clock.limit(timeout)
            else:
                results[name] = rec; todo.remove(name); current = None
                deadline = time.monotonic() + clock.limit(timeout)   # until the next start line
        LIVE.discard(p)


NBDEV_TEST = ("import sys; from nbdev.test import nbdev_test; path, flags = sys.argv[1:]; sys.argv = sys.argv[:1]; "
              "nbdev_test(path=path, flags=flags)")   # keywords: called from `-c`, call_parse may not read argv (then path=None: every notebook)

def nbdev_test_cmd(path:str, flags:str)->list[str]:
    "nbdev_test through this interpreter (its console script may not be on PATH where nbdev came as wheels)."
    return [sys.executable, '-c', NBDEV_TEST, path, flags]


def run_group(cmd:list[str], timeout:float, **kw)->tuple[int, str]:
    "Run `cmd` in its own process group; on timeout end the whole group (a notebook's own children too) and raise."
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)
    LIVE.add(p)
    try: out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(p); raise
    finally: LIVE.discard(p)
    return p.returncode, out


def run_notebooks(notebooks:dict[str, int], flags:str, env:dict, timeout:float, workers:int, clock:Clock, log:Path)->dict:
    "`nbdev_test --flags cuda` on each notebook (in parallel), each within `timeout`; the probe shows the flag runs cuda cells."
    probe, marker = probe_notebook(Path(env['GPU_CHECK_WORK'])/'probe')
    jobs = {str(probe): 1, **notebooks}
    def one(nb):
        t0 = time.monotonic()
        limit = clock.limit(timeout)
        if limit < 5: return nb, dict(status='skipped', error='out of the time budget')
        try:
            rc, text = run_group(nbdev_test_cmd(nb, flags), limit, cwd=ROOT, env=env)
            rec = dict(status='ok' if rc == 0 else 'failed', seconds=round(time.monotonic() - t0, 1), cuda_cells=jobs[nb])
            if rc != 0: rec['error'] = text[-1500:]
        except subprocess.TimeoutExpired:
            rec = dict(status='timeout', seconds=round(limit, 1), cuda_cells=jobs[nb], error=f'nbdev_test ran past {limit:.0f} s')
        with open(log, 'a') as f: f.write(f'\n===== nbdev_test {nb}: {rec["status"]}\n{rec.get("error", "")}\n')
        return nb, rec
    with ThreadPoolExecutor(workers) as ex: per = dict(ex.map(one, jobs))
    pr = per.pop(str(probe))
    cuda_ran = marker.exists()
    if pr['status'] == 'ok' and not cuda_ran: pr = dict(pr, status='failed', error=f'the probe\'s #| cuda cell did not run with --flags {flags!r}')
    failed = [nb for nb, r in per.items() if r['status'] != 'ok']
    status = 'ok' if pr['status'] == 'ok' and not failed else 'failed'
    error = None if status == 'ok' else (f"the probe: {pr.get('error', '')}" if pr['status'] != 'ok' else
             f"{len(failed)}/{len(per)} notebooks failed: " + ', '.join(f"{Path(nb).stem} ({per[nb]['status']})" for nb in failed))
    return dict(status=status, error=error, seconds=round(sum(r.get('seconds', 0) for r in per.values()) + pr.get('seconds', 0), 1), flags=flags,
                cuda_cells=sum(notebooks.values()), notebooks=per, probe=pr, cuda_flag_runs_cells=cuda_ran,
                passed=len(per) - len(failed), failed=failed)


def settings(a)->dict:
    "The run's settings: the GPU or CPU defaults, with the command line's changes."
    import copy
    cfg = copy.deepcopy(CPU if a.cpu else GPU)
    cfg['device'] = 'cpu' if a.cpu else 'cuda'
    if a.budget: cfg['budget'] = a.budget
    if a.generator: cfg['generation']['backend'] = a.generator
    if a.enforce_eager: cfg['generation']['enforce_eager'] = True
    if a.layers: cfg['arch']['layers'] = a.layers
    for spec in a.timeout:
        k, _, v = spec.partition('=')
        if k not in cfg['timeouts'] or not re.fullmatch(r'\d+(\.\d*)?', v):
            raise SystemExit(f'--timeout {spec!r}: expected PART=SECONDS with PART one of {", ".join(cfg["timeouts"])}')
        cfg['timeouts'][k] = float(v)
    return cfg


def fmt_line(name:str, r:dict)->str:
    "One summary line: the part, its status, its time and its numbers."
    s, st = r.get('seconds'), r.get('status', '?')
    head = f'{name:18s} {st:8s} {f"{s:7.1f} s" if isinstance(s, (int, float)) else " " * 9}  '
    if st not in ('ok',): return head + str(r.get('error', '')).strip().splitlines()[0][:160] if r.get('error') else head
    if name == 'env':
        return head + f"torch {r.get('torch')}, transformers {r.get('transformers')}, {r.get('gpu', 'no GPU')}; not installed: " \
                      + (', '.join(sorted(r.get('missing', {}))) or 'none')
    if name == 'notebooks': return head + f"{r['passed']}/{len(r['notebooks'])} notebooks passed, {r['cuda_cells']} #| cuda cells (--flags {r['flags']}); " \
                                          f"the probe's #| cuda cell ran: {r['cuda_flag_runs_cells']}"
    if name == 'build': return head + f"Llama {r['parameters']/1e6:.1f}M parameters ({r['arch']}, vocab {r['vocab_size']}, tokenizer {r['tokenizer_size']})"
    if name in ('ppo', 'rloo'):
        return head + f"{r['steps']} RL step(s), {r['step_s']:.2f} s/step (setup {r['setup_s']:.1f} s), policy loss {r['policy_loss']:.4g}, " \
                      f"{r['mixed_precision']}" + (f", peak {r['peak_gpu_memory_gib']} GiB" if 'peak_gpu_memory_gib' in r else '')
    if name == 'raft':
        return head + f"1 iteration {r['iteration_s']:.1f} s (sampling {r['sample_s']:.1f} s), kept {r['kept']}/{r['n_samples']}, sft loss {r['sft_loss']:.4g}"
    if name in TRAINERS:
        return head + f"{r['steps']} step(s): {r['step_s']:.3f} s/step (first {r['first_step_s']:.2f} s, setup {r['setup_s']:.1f} s), " \
                      f"loss {r['loss']:.4g}, {r['mixed_precision']}" + (f", peak {r['peak_gpu_memory_gib']} GiB" if 'peak_gpu_memory_gib' in r else '')
    if name == 'generation':
        return head + f"{r['backend']}: {r['tokens_per_s']:.0f} tokens/s ({r['tokens']} tokens, {r['sequences']} sequences, " \
                      f"{r['generate_s']:.2f} s; engine start {r['engine_start_s']:.1f} s)"
    if name == 'mfu':
        return head + f"DPO {r['tokens_per_s']:.0f} tokens/s = {r['model_flops_per_s']/1e12:.3g} TFLOP/s (6N) = MFU {r['mfu']:.1%} of the " \
                      f"measured bf16 matmul {r['matmul_flops_per_s']/1e12:.3g} TFLOP/s ({r['mfu_with_reference']:.1%} with the reference's 2N)"
    return head


def main(argv=None)->int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--cpu', '--dry-run', action='store_true', default=os.environ.get('GPU_CHECK_DEVICE', '').lower() == 'cpu',
                   help='CPU mode: a tiny model, HF generation, and only a probe notebook (default: on if GPU_CHECK_DEVICE=cpu)')
    p.add_argument('--parts', default=','.join(PARTS), help=f'comma-separated parts to run, in this order: {",".join(PARTS)}')
    p.add_argument('--trainers', default=','.join(TRAINERS), help=f'comma-separated trainers of the trainers part: {",".join(TRAINERS)}')
    p.add_argument('--notebooks', default=None, help='comma-separated notebooks for the notebooks part (default: every notebook with '
                                                     'a #| cuda cell on a GPU; none but the probe in CPU mode)')
    p.add_argument('--budget', type=float, default=None, help='overall seconds (default 470 on a GPU, 300 on the CPU)')
    p.add_argument('--generator', choices=['vllm', 'hf'], default=None, help='generation backend (default: vllm on a GPU, hf on the CPU)')
    p.add_argument('--enforce-eager', action='store_true', help="vLLM without CUDA graphs / torch.compile (faster start, slower decoding)")
    p.add_argument('--layers', type=int, default=None, help='model layers (default 24 on a GPU, 2 on the CPU)')
    p.add_argument('--timeout', action='append', default=[], metavar='PART=SECONDS',
                   help='change a time limit (repeatable): startup (a child\'s imports), env, notebook (each), build, trainer (each), mfu, generation')
    p.add_argument('--json', default=None, help='where to write the results (default: $OUT/gpu_check.json, else runs/gpu_check/gpu_check.json)')
    a = p.parse_args(argv)
    parts = [x for x in a.parts.split(',') if x]
    trainers = [x for x in a.trainers.split(',') if x]
    for bad in [x for x in parts if x not in PARTS] + [x for x in trainers if x not in TRAINERS]: p.error(f'unknown part or trainer {bad!r}')
    cfg = settings(a)
    out_json = Path(a.json or (Path(os.environ['OUT'])/'gpu_check.json' if os.environ.get('OUT') else ROOT/'runs'/'gpu_check'/'gpu_check.json'))
    out_json.parent.mkdir(parents=True, exist_ok=True)
    log = out_json.with_suffix('.log'); log.write_text('')
    work = Path(tempfile.mkdtemp(prefix='gpu_check-'))
    cfg['work_dir'] = str(work)
    cfg_path = work/'config.json'; cfg_path.write_text(json.dumps(cfg, indent=1))
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])]), 'PYTHONUNBUFFERED': '1',
           'TOKENIZERS_PARALLELISM': 'false', 'GPU_CHECK_WORK': str(work), 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
    if a.cpu: env['CUDA_VISIBLE_DEVICES'] = ''
    clock, t = Clock(cfg['budget']), cfg['timeouts']
    results: dict = {}
    print(f'gpu_check: device {cfg["device"]}, parts {",".join(parts)}, budget {cfg["budget"]:.0f} s; log {log}', flush=True)

    def skip_rest(reason):
        for name in parts:
            if name == 'trainers':
                for n in trainers: results.setdefault(n, dict(status='skipped', error=reason))
            else: results.setdefault(name, dict(status='skipped', error=reason))
    signal.signal(signal.SIGTERM, _end_children)
    model_parts = [x for x in parts if x in ('build', 'trainers', 'mfu', 'generation')]
    limits = {'startup': t['startup'], 'env': t['env'], 'build': t['build'], 'mfu': t['mfu'], 'generation': t['generation'], **{n: t['trainer'] for n in TRAINERS}}
    try:
        for part in parts:
            t0 = time.monotonic()
            if part in results or (part == 'trainers' and all(n in results for n in trainers)): continue   # run with an earlier part
            if part == 'env': run_items(['env'], cfg_path, env, limits, clock, log, results)
            elif part == 'notebooks':
                if 'nbdev' in results.get('env', {}).get('missing', {}) or 'execnb' in results.get('env', {}).get('missing', {}):
                    results['notebooks'] = dict(status='skipped', error='nbdev/execnb are not installed: the #| cuda cells cannot run')
                else:
                    nbs = ({x: cuda_notebooks().get(x, 0) for x in a.notebooks.split(',') if x} if a.notebooks is not None
                           else {} if a.cpu else cuda_notebooks())
                    results['notebooks'] = run_notebooks(nbs, 'cuda', env, t['notebook'], cfg['notebook_workers'], clock, log)
            elif results.get('build', {}).get('status', 'ok') != 'ok':
                for n in (trainers if part == 'trainers' else [part]): results[n] = dict(status='skipped', error='the model was not built')
            else:   # on the CPU the model parts share one child (less start-up); on a GPU each gets a clean process
                group = model_parts[model_parts.index(part):] if cfg['one_process'] else [part]
                items = [n for x in group for n in (trainers if x == 'trainers' else [x])]
                run_items(items, cfg_path, env, limits, clock, log, results)
            if part != 'trainers' and 'seconds' not in results.get(part, {}): results.setdefault(part, {})['seconds'] = round(time.monotonic() - t0, 1)
            if part == 'env' and results['env']['status'] != 'ok':
                skip_rest('the environment check failed: ' + str(results['env'].get('error'))); break
    finally:
        shutil.rmtree(work, ignore_errors=True)
    order = [n for part in parts for n in (trainers if part == 'trainers' else [part]) if n in results]
    counts = {s: sum(1 for n in order if results[n]['status'] == s) for s in ('ok', 'failed', 'timeout', 'skipped')}
    env_r = results.get('env', {})
    summary = dict(device=cfg['device'], gpu=env_r.get('gpu'), seconds=round(clock.elapsed(), 1), budget_s=cfg['budget'],
                   settings={k: v for k, v in cfg.items() if k != 'work_dir'}, parts={n: results[n] for n in order}, counts=counts,
                   ok=counts['failed'] == counts['timeout'] == 0)
    out_json.write_text(json.dumps(summary, indent=1, default=str) + '\n')
    print(f'\n===== gpu_check summary: {cfg["device"]}{" (" + env_r["gpu"] + ")" if env_r.get("gpu") else ""}, '
          f'{clock.elapsed():.0f} s of a {cfg["budget"]:.0f} s budget')
    for n in order: print(fmt_line(n, results[n]))
    if results.get('notebooks', {}).get('notebooks'):
        for nb, r in results['notebooks']['notebooks'].items():
            print(f'  {nb:40s} {r["status"]:8s} {r.get("seconds", 0):7.1f} s  {r.get("cuda_cells", 0)} #| cuda cell(s)')
    print(f'RESULT: {counts["ok"]} ok, {counts["failed"]} failed, {counts["timeout"]} timed out, {counts["skipped"]} skipped; '
          f'JSON: {out_json}')
    return 0 if summary['ok'] else 1


if __name__ == '__main__': sys.exit(main())

"End-to-end tests of scripts/build_sandbox_data.py: real subprocess runs on a handmade Sandbox log in tmp_path."
import json, os, subprocess, sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1]/'build_sandbox_data.py'


def rec(i, q, draft, rev, before, after, fb=(), ratings=(), iteration=0):
    return {'agent_id': i, 'label': 'good', 'iteration': iteration, 'question': q, 'draft_answer': draft,
            'peer_ids': list(range(10, 10 + len(fb))), 'feedback': list(fb), 'ratings': list(ratings),
            'revised_answer': rev, 'alignment_before': before, 'alignment_before_reason': 'r', 'alignment_after': after,
            'alignment_after_reason': 'r', 'engagement_before': 4, 'engagement_before_reason': 'r',
            'engagement_after': 5, 'engagement_after_reason': 'r'}


LOG = [rec(0, 'Q1', 'D0', 'R0', 3, 6, ['F0a', 'F0b'], [3, 5]),
       rec(1, 'Q2', 'D1', 'R1', 6, 6, ['F1a'], [2]),
       rec(2, 'Q1', 'R0', 'R2', 5, None, ['F2a'], [6], iteration=1),
       rec(3, 'Q3', 'D3', 'R3', 3, 4, ['F3a', 'F3b'], [1, 7], iteration=1),
       rec(4, 'Q4', 'D4', 'R4', None, 7, ['F4a'], [7], iteration=1)]


def write_log(path, records):
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    return path


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'})


def test_build_sandbox_data_end_to_end(tmp_path):
    log = write_log(tmp_path/'log.jsonl', LOG)
    out = tmp_path/'data'/'sandbox.jsonl'
    r = run('--log_path', log, '--output_path', out, '--self_critic_ratio', '1.0', '--realignment_ratio', '1.0', '--seed', '0')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    ranked = [json.loads(l) for l in out.read_text().splitlines()]
    assert [(x['query'], x['responses'], x['scores']) for x in ranked[:4]] == [
        ('Q1', ['D0', 'R0'], [3, 5.5]), ('Q2', ['D1', 'R1'], [6, 6]), ('Q3', ['D3', 'R3'], [3, 4]), ('Q4', ['R4'], [7])]
    assert len(ranked) == 10 and sum(len(x['responses']) for x in ranked) == 16
    stats = json.loads((tmp_path/'data'/'sandbox_stats.json').read_text())
    c = stats['counts']
    assert (c['imitation'], c['self_critique'], c['realignment'], c['missing_alignment_before'], c['missing_alignment_after'],
            c['duplicates_merged']) == (8, 7, 2, 1, 1, 1)
    assert stats['settings'] == {'self_critic_ratio': 1.0, 'realignment_ratio': 1.0, 'seed': 0}
    for name in ('sandbox_alignment_by_round.png', 'sandbox_rating_histograms.png'):
        assert (tmp_path/'data'/name).stat().st_size > 1000
    assert '8 imitation, 7 self-critique' in r.stdout
    # ratios below 1 count against the imitation samples (8): floor(0.25*8)=2 self-critique, min(floor(0.5*8), 2)=2 realignment;
    # the same seed gives the same file, and --plots False draws nothing
    outs = []
    for i in range(2):
        o = tmp_path/f'small{i}'/'s.jsonl'
        r = run('--log_path', log, '--output_path', o, '--self_critic_ratio', '0.25', '--realignment_ratio', '0.5', '--seed', '3',
                '--plots', 'False')
        assert r.returncode == 0, r.stderr[-4000:]
        c = json.loads((o.parent/'s_stats.json').read_text())['counts']
        assert (c['self_critique'], c['realignment']) == (2, 2)
        assert not (o.parent/'s_alignment_by_round.png').exists()
        outs.append(o.read_text())
    assert outs[0] == outs[1]


def test_bad_record_exits_naming_the_line(tmp_path):
    log = write_log(tmp_path/'log.jsonl', [LOG[0], LOG[1], dict(LOG[2], ratings=[8])])
    r = run('--log_path', log, '--output_path', tmp_path/'out.jsonl')
    assert r.returncode != 0
    assert "log.jsonl:3 field 'ratings': rating 0: 8 is outside [1, 7]" in r.stderr
    assert not (tmp_path/'out.jsonl').exists()
    r = run('--log_path', tmp_path/'missing.jsonl', '--output_path', tmp_path/'out.jsonl')
    assert r.returncode != 0 and 'no such file' in r.stderr

"Tests of the command-line scripts in scripts/: each is a real program, run as a user would run it."
import functools, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).parents[2]
SCRIPTS = sorted(p for p in (ROOT/'scripts').glob('*.py') if not p.name.startswith('_'))

def test_there_are_scripts():
    assert SCRIPTS, 'scripts/ has no scripts'

@functools.cache
def help_of(script:Path)->subprocess.CompletedProcess:
    "`python SCRIPT --help`, run once per test session."
    return subprocess.run([sys.executable, str(script), '--help'], capture_output=True, text=True, timeout=120)

@pytest.mark.parametrize('script', SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_help(script):
    "Every script answers --help with a usage message and exit code 0, without doing any work."
    r = help_of(script)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'usage:' in r.stdout.lower()

def test_help_keeps_the_examples():
    "The docstring's indented multi-line command prints as written, not reflowed into one line."
    script = ROOT/'scripts'/'train_sft.py'
    out = help_of(script).stdout.splitlines()
    doc = [l for l in script.read_text().split('"""')[1].replace('\\\\', '\\').splitlines() if l.strip().startswith(('python ', '--'))]
    assert len(doc) == 3 and all(l in out for l in doc), (doc, out[:30])

# scripts of other owners that do not take every name of a thing yet (their owners add the aliases; then this goes)
NOT_YET = set()

@pytest.mark.parametrize('script', [pytest.param(p, marks=pytest.mark.xfail(strict=True, reason='aliases to add'))
                                    if p.name in NOT_YET else p for p in SCRIPTS], ids=[p.name for p in SCRIPTS])
def test_one_name_per_thing(script):
    "A script that takes one name of a thing (trainers.command_line.FLAG_ALIASES) takes all of them."
    from social_align.trainers.command_line import FLAG_ALIASES
    r = help_of(script)
    assert r.returncode == 0, r.stderr[-2000:]
    flags = set(re.findall(r'(?<![\\w-])(--[a-z][a-z0-9_]*)', r.stdout))
    for name, others in FLAG_ALIASES.items():
        names = {name, *others}
        if names & flags: assert names <= flags, f'{script.name} takes {sorted(names & flags)} but not {sorted(names - flags)}'

@pytest.mark.parametrize('script', SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_bad_flag_is_refused(script):
    "An unknown flag is an error with a message, never silently ignored."
    r = subprocess.run([sys.executable, str(script), '--no-such-flag'], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert 'no-such-flag' in r.stderr


def test_scripts_ship_with_the_package(tmp_path):
    "A wheel holds the scripts as `social_align.scripts` with the accelerate configs (not the tests), and `python -m` runs one from any folder."
    import zipfile
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', str(ROOT), '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob('*.whl'))).namelist()
    for p in SCRIPTS: assert f'social_align/scripts/{p.name}' in names, p.name
    assert 'social_align/scripts/configs/fsdp.yaml' in names and not any('scripts/tests' in n for n in names)
    r = subprocess.run([sys.executable, '-m', 'social_align.scripts.train_sft', '--help'], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and 'usage:' in r.stdout.lower(), r.stderr[-2000:]

"Tests of scripts/train_alignment.py and scripts/configs/: real runs on a tiny model, one and two processes."
import importlib.util, json, math, os, subprocess, sys
from pathlib import Path
from unittest import mock
import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT/'scripts'/'train_alignment.py'
CONFIGS = ROOT/'scripts'/'configs'
N_QUERIES = 16

# The README command of agi-templar/Stable-Alignment, minus what needs a GPU (--bf16 True, --tf32 True, --fsdp ...);
# epochs and paths made small. --evaluation_strategy, --warmup_ratio and --model_max_length are transformers 4 names.
PUBLISHED = ['--num_train_epochs', '1', '--per_device_train_batch_size', '1', '--per_device_eval_batch_size', '1',
             '--gradient_accumulation_steps', '8', '--evaluation_strategy', 'no', '--save_strategy', 'steps',
             '--save_steps', '200', '--save_total_limit', '1', '--learning_rate', '2e-5', '--weight_decay', '0.',
             '--warmup_ratio', '0.03', '--lr_scheduler_type', 'cosine', '--logging_steps', '1', '--model_max_length', '360',
             '--rating_scale', '7', '--margin', '10', '--max_flow', 'False', '--ratio', '0.2', '--num_comp', '3']

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny Llama folder (safetensors + tokenizer) and toy-world ranked data as JSONL and as a JSON list."
    from social_align.models import train_bpe_tokenizer, build_tiny_causal_lm, save_model
    from social_align.toyworld import toy_ranked, toy_corpus
    d = tmp_path_factory.mktemp('tiny')
    tok = train_bpe_tokenizer(toy_corpus(), vocab_size=1024, chat_template=None)
    save_model(build_tiny_causal_lm(tok, hidden_size=64, num_layers=1), tok, d/'model')
    recs = toy_ranked(n_responses=4)[:N_QUERIES]
    (d/'data.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    (d/'data.json').write_text(json.dumps(recs))   # the released data (sandbox_v1.json) is a JSON list
    return d

def run(cmd, tmp_path, timeout=240):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    assert r.returncode == 0, f'exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}'
    return r

def assert_saved_model_loads(out:Path, init:Path, changed:bool=True):
    "model.safetensors (no pickle) that plain transformers loads; with `changed`, weights differ from the initial ones."
    import torch
    from transformers import AutoModelForCausalLM
    assert (out/'model.safetensors').exists() and not list(out.glob('*.bin')), sorted(p.name for p in out.iterdir())
    trained, start = AutoModelForCausalLM.from_pretrained(out), AutoModelForCausalLM.from_pretrained(init)
    same = all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), start.state_dict().values()))
    assert same != changed

def test_published_command_end_to_end(tiny, tmp_path):
    "(a) The published flags, plain `python`: trains, saves safetensors that load, records the arguments as JSON."
    out = tmp_path/'out'
    run([sys.executable, str(SCRIPT), '--model_name_or_path', str(tiny/'model'), '--data_path', str(tiny/'data.jsonl'),
         '--output_dir', str(out), '--report_to', 'none', '--disable_tqdm', 'True', *PUBLISHED], tmp_path)
    assert_saved_model_loads(out, tiny/'model')
    state = json.loads((out/'trainer_state.json').read_text())
    assert state['global_step'] == math.ceil(N_QUERIES / 8)                    # batch 1 x accumulation 8
    losses = [h['loss'] for h in state['log_history'] if 'loss' in h]
    assert len(losses) == state['global_step'] and all(math.isfinite(x) and x > 0 for x in losses)
    args = json.loads((out/'training_args.json').read_text())
    assert (args['max_length'], args['margin'], args['max_flow'], args['warmup_steps']) == (360, 10.0, False, 0.03)
    assert 'train_loss' in json.loads((out/'train_results.json').read_text())

def test_two_process_data_parallel(tiny, tmp_path):
    "(b) `accelerate launch` with cpu.yaml: two ranks over gloo, each on half the data, one saved model."
    out, per_device = tmp_path/'out', 2
    r = run(['accelerate', 'launch', '--config_file', str(CONFIGS/'cpu.yaml'), '--num_processes', '2', str(SCRIPT),
             '--model_name_or_path', str(tiny/'model'), '--data_path', str(tiny/'data.json'), '--output_dir', str(out),
             '--per_device_train_batch_size', str(per_device), '--num_train_epochs', '1', '--learning_rate', '1e-3',
             '--logging_steps', '1', '--save_strategy', 'no', '--report_to', 'none', '--disable_tqdm', 'True',
             '--model_max_length', '96', '--rating_scale', '7', '--margin', '1', '--max_flow', 'False', '--ratio', '0.2',
             '--num_comp', '3'], tmp_path)
    steps = math.ceil(N_QUERIES / (2 * per_device))                              # one process would take twice as many
    assert f'{steps} optimizer steps on 2 process(es)' in r.stdout, r.stdout[-2000:]
    state = json.loads((out/'trainer_state.json').read_text())
    assert state['global_step'] == steps
    assert len([h for h in state['log_history'] if 'loss' in h]) == steps
    assert_saved_model_loads(out, tiny/'model')

def load_script():
    spec = importlib.util.spec_from_file_location('train_alignment', SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

@pytest.fixture
def clean_environ():
    "TrainingArguments writes FSDP settings into os.environ; put it back."
    with mock.patch.dict(os.environ): yield

def test_flags_parse(clean_environ, tmp_path):
    "(c) The published command parses to what it meant; 'False' is false; the transformers 4 names still work."
    parse = load_script().parse_args
    base = ['--model_name_or_path', 'hhh_sft', '--data_path', 'sandbox_v1.json', '--output_dir', str(tmp_path)]
    gpu_flags = ['--bf16', 'True', '--use_cpu', 'True',   # --use_cpu only because this machine has no GPU
                 '--fsdp', 'shard_grad_op auto_wrap', '--fsdp_transformer_layer_cls_to_wrap', 'LlamaDecoderLayer']
    sa, c = parse(base + PUBLISHED + gpu_flags)
    assert (sa.model_name_or_path, sa.data_path) == ('hhh_sft', 'sandbox_v1.json')
    assert (c.rating_scale, c.margin, c.max_flow, c.ratio, c.num_comp) == (7.0, 10.0, False, 0.2, 3)
    assert (c.max_length, c.eval_strategy, c.warmup_steps, c.get_warmup_steps(1000)) == (360, 'no', 0.03, 30)
    assert (c.gradient_accumulation_steps, c.lr_scheduler_type, c.save_steps, c.bf16) == (8, 'cosine', 200, True)
    assert c.fsdp and c.fsdp_config['transformer_layer_cls_to_wrap'] == ['LlamaDecoderLayer']
    assert c.fsdp_config['reshard_after_forward'] is False                      # shard_grad_op
    for flag, value in (('False', False), ('false', False), ('True', True), ('true', True)):
        assert parse(base + ['--max_flow', flag])[1].max_flow is value
    c = parse(base + ['--evaluation_strategy', 'steps', '--eval_steps', '5', '--max_length', '128'])[1]
    assert (c.eval_strategy, c.eval_steps, c.max_length) == ('steps', 5, 128)
    c = parse(base)[1]
    assert (c.rating_scale, c.margin, c.max_flow, c.ratio, c.num_comp) == (7.0, 1.0, False, 0.2, 3)   # model card defaults
    with pytest.raises(SystemExit) as e: parse(base + ['--num_comp', '0'])
    assert e.value.code == 2

def test_bad_rating_is_refused_naming_the_line(tiny, tmp_path):
    "A rating above rating_scale (the original's placeholder 8) stops the run before training, naming file, line, field."
    recs = [json.loads(l) for l in (tiny/'data.jsonl').read_text().splitlines()[:3]]
    recs[2]['scores'][1] = 8
    data = tmp_path/'bad.jsonl'; data.write_text(''.join(json.dumps(r) + '\n' for r in recs))
    with pytest.raises(SystemExit) as e:
        load_script().main(['--model_name_or_path', str(tiny/'model'), '--data_path', str(data), '--output_dir', str(tmp_path/'out'),
                            '--report_to', 'none'])
    assert "bad.jsonl:3 field 'scores': score 1: 8 is outside [1, 7.0]" in str(e.value.code), e.value.code
    assert not (tmp_path/'out'/'model.safetensors').exists()

def launcher_env(config_file:Path):
    "What `accelerate launch --config_file F` would do: accelerate's own loader and launch-argument processing."
    from accelerate.commands.launch import launch_command_parser, _validate_launch_command
    from accelerate.utils import launch as L
    args = launch_command_parser().parse_args(['--config_file', str(config_file), str(SCRIPT)])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ','.join(defaults.deepspeed_config)
        return args, L.prepare_deepspeed_cmd_env(args)[1]
    if args.multi_gpu or args.use_fsdp: return args, L.prepare_multi_gpu_env(args)
    return args, L.prepare_simple_launcher_cmd_env(args)[1]

def test_config_files_load(clean_environ):
    "(d) Every config parses with accelerate's loader, and the FSDP / DeepSpeed plugins build from it."
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, DeepSpeedPlugin
    files = sorted(p.name for p in CONFIGS.glob('*.yaml'))
    assert files == ['cpu.yaml', 'deepspeed_zero3.yaml', 'deepspeed_zero3_cpu.yaml', 'fsdp.yaml', 'multi_gpu.yaml', 'single_gpu.yaml']
    expected = {'cpu.yaml': (DistributedType.MULTI_GPU, 2), 'single_gpu.yaml': (DistributedType.NO, 1),
                'multi_gpu.yaml': (DistributedType.MULTI_GPU, 8), 'fsdp.yaml': (DistributedType.FSDP, 8),
                'deepspeed_zero3.yaml': (DistributedType.DEEPSPEED, 8), 'deepspeed_zero3_cpu.yaml': (DistributedType.DEEPSPEED, 2)}
    for name, (kind, n) in expected.items():
        cfg = load_config_from_file(str(CONFIGS/name))
        assert (cfg.distributed_type, cfg.num_processes) == (kind, n), name
    args, _ = launcher_env(CONFIGS/'cpu.yaml')
    assert args.multi_gpu and args.use_cpu and args.num_processes == 2         # torchrun launcher, CPU ranks
    _, env = launcher_env(CONFIGS/'fsdp.yaml')
    assert env['FSDP_SHARDING_STRATEGY'] == 'FULL_SHARD' and 'FSDP_TRANSFORMER_CLS_TO_WRAP' not in env   # wraps by the model's _no_split_modules
    with mock.patch.dict(os.environ, env):
        fsdp = FullyShardedDataParallelPlugin()
    assert fsdp.reshard_after_forward is True and fsdp.transformer_cls_names_to_wrap is None
    assert fsdp.state_dict_type.name == 'FULL_STATE_DICT'                      # save_model writes one full safetensors
    _, env = launcher_env(CONFIGS/'deepspeed_zero3.yaml')
    with mock.patch.dict(os.environ, env):
        ds = DeepSpeedPlugin()
    assert ds.zero_stage == 3 and ds.deepspeed_config['zero_optimization']['stage3_gather_16bit_weights_on_model_save']
    assert load_config_from_file(str(CONFIGS/'single_gpu.yaml')).mixed_precision == 'bf16'

def test_configs_readme_names_every_config():
    text = (CONFIGS/'README.md').read_text()
    for p in CONFIGS.glob('*.yaml'): assert p.name in text, p.name

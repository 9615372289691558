"""FSDP and DeepSpeed configs: fsdp.yaml wraps by the model's own `_no_split_modules` (Llama, Qwen2, GPT-2), and a real
2-process DeepSpeed ZeRO-3 run of scripts/train_sft.py on CPU (skipped when deepspeed is not installed), and the
end of a launch (`core.finish_processes`: every process leaves the group together)."""
import importlib.util, json, os, subprocess, sys
from pathlib import Path
import pytest

SCRIPTS = Path(__file__).parents[1]
CONFIGS = SCRIPTS/'configs'

def tiny_models():
    "Tiny random causal LMs of three architectures, built from configs."
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config
    size = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    cfgs = [LlamaConfig(**size), Qwen2Config(**size, num_key_value_heads=2),
            GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)]
    return [AutoModelForCausalLM.from_config(c) for c in cfgs]

def test_fsdp_wraps_each_models_decoder_layers(monkeypatch):
    "fsdp.yaml through accelerate's own launch-env and FSDP2 wrap-policy code: one unit per decoder layer, any architecture."
    from accelerate.commands.launch import launch_command_parser, _validate_launch_command
    from accelerate.utils.launch import prepare_multi_gpu_env
    args, *_ = _validate_launch_command(launch_command_parser().parse_args(['--config_file', str(CONFIGS/'fsdp.yaml'), 'x.py']))
    env = prepare_multi_gpu_env(args)
    assert env['ACCELERATE_USE_FSDP'] == 'true' and env['FSDP_VERSION'] == '2' and 'FSDP_TRANSFORMER_CLS_TO_WRAP' not in env
    for k, v in env.items():
        if k.startswith('FSDP_'): monkeypatch.setenv(k, v)
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    plugin = FullyShardedDataParallelPlugin()
    for model in tiny_models():
        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
        wrapped = [type(m).__name__ for m in model.modules() if policy(m)]
        assert wrapped == list(model._no_split_modules) * 2, (type(model).__name__, wrapped)   # 2 layers each

@pytest.mark.skipif(importlib.util.find_spec('deepspeed') is None, reason='deepspeed is not installed (pip install deepspeed)')
def test_deepspeed_zero3_two_cpu_processes(tmp_path):
    "ZeRO-3 SFT on 2 CPU processes (DeepSpeed's CPU accelerator, gloo): the loss falls and the gathered model loads in transformers."
    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny import write_jsonl, toy_tokenizer, save_tiny
    from social_align.toyworld import toy_preferences, split_situations
    model = save_tiny(toy_tokenizer(), tmp_path/'model', seed=0)
    data = write_jsonl(tmp_path/'sft.jsonl', [{'prompt': r['prompt'], 'completion': r['chosen']}
                                              for r in toy_preferences(split_situations()[0])[:16]])
    out = tmp_path/'zero3'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false', 'DS_ACCELERATOR': 'cpu',
           'ACCELERATE_USE_CPU': 'false'}
    r = subprocess.run([sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(CONFIGS/'deepspeed_zero3_cpu.yaml'),
                        str(SCRIPTS/'train_sft.py'), '--model_name_or_path', str(model), '--data_path', str(data),
                        '--output_dir', str(out), '--ddp_backend', 'gloo', '--per_device_train_batch_size', '2',
                        '--max_steps', '4', '--logging_steps', '1', '--learning_rate', '1e-3', '--save_strategy', 'no',
                        '--report_to', 'none', '--disable_tqdm', 'True', '--max_length', '96', '--seed', '0'],
                       capture_output=True, text=True, timeout=500, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    hist = json.loads((out/'trainer_state.json').read_text())['log_history']
    assert hist[-1]['epoch'] == 1.0, hist[-1]              # 16 records in 4 steps of 2 x 2: both processes trained
    losses = [h['loss'] for h in hist if 'loss' in h]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    trained, start = load_file(out/'model.safetensors'), load_file(model/'model.safetensors')
    assert sorted(trained) == sorted(start) and all(trained[k].shape == start[k].shape for k in start)   # full, not partitions
    assert any((trained[k].float() - start[k]).abs().max() > 1e-4 for k in start)
    AutoModelForCausalLM.from_pretrained(out)

END_OF_LAUNCH = '''
import json, sys, time
import torch.distributed as dist
from social_align.core import process_info, sum_over_processes, finish_processes, on_main_process
rank, world = process_info()
assert sum_over_processes(1) == world == 2        # the group is up
saved = None
if rank == 1:                                     # a process other than rank 0 writes a model vLLM can load (a node's pusher)
    from social_align.models import tiny_tokenizer, build_tiny_causal_lm
    from social_align.trainers.vllm import save_policy_weights
    tok = tiny_tokenizer()
    saved = save_policy_weights(build_tiny_causal_lm(tok, hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64), tok, sys.argv[1])
got = on_main_process(lambda: 40 + rank + 2)      # the main process's result, on every process
def fail(): raise KeyError('disk full')
try: on_main_process(fail); err = None
except KeyError as e: err = str(e)                # every process raises, none waits for the main one
if rank == 0: time.sleep(3)                      # the main process still works (saves a model, say) after the other is done
finish_processes()
print(json.dumps({'rank': rank, 'left': time.time(), 'group': dist.is_initialized(), 'got': got, 'err': err, 'saved': saved}), flush=True)
'''

def test_finish_processes_ends_a_launch_together(tmp_path):
    "A real 2-process launch: `on_main_process` hands the main process's result and error to both; rank 1 saves a model for vLLM (transformers' save_pretrained writes only on rank 0); the process done first waits at `finish_processes` for the main one, then both leave the group and exit 0."
    script = tmp_path/'end.py'; script.write_text(END_OF_LAUNCH)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    t0 = __import__('time').time()
    r = subprocess.run([sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(CONFIGS/'cpu.yaml'),
                        '--num_processes', '2', str(script), str(tmp_path/'pushed')], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {o['rank']: o for o in map(json.loads, [l for l in r.stdout.splitlines() if l.startswith('{')])}
    assert set(rows) == {0, 1} and not any(o['group'] for o in rows.values()), rows   # both left the group
    assert rows[1]['left'] - t0 >= 3 and abs(rows[1]['left'] - rows[0]['left']) < 2, rows   # rank 1 left with rank 0, not 3 s before
    assert [rows[r]['got'] for r in (0, 1)] == [42, 42], rows                 # on_main_process: the main process's result everywhere
    assert rows[0]['err'] == "'disk full'" and 'on the main process: KeyError' in rows[1]['err'], rows   # and its error
    from transformers import AutoModelForCausalLM
    assert rows[1]['saved'] > 0 and (tmp_path/'pushed'/'model.safetensors').exists(), rows
    AutoModelForCausalLM.from_pretrained(tmp_path/'pushed')                  # a whole model, written by rank 1
    assert json.loads((tmp_path/'pushed'/'config.json').read_text())['architectures'] == ['LlamaForCausalLM']   # what vLLM builds

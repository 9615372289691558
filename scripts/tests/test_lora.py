"LoRA through peft (#16): TRL's flags on every trainer's command line, one real script run, and the Python API with a `peft.LoraConfig`."
import importlib.util, json, os
from pathlib import Path
from unittest import mock
import pytest
import torch

from _tiny import write_jsonl, toy_tokenizer, save_tiny

SCRIPTS = Path(__file__).parents[1]
LORA_FLAGS = ['--use_peft', 'True', '--lora_r', '4', '--lora_alpha', '8', '--lora_dropout', '0.0',
              '--lora_target_modules', 'q_proj', 'v_proj', '--warmup_ratio', '0.1']

@pytest.fixture
def clean_environ():
    "TrainingArguments writes settings into os.environ; put it back."
    with mock.patch.dict(os.environ, {'OMP_NUM_THREADS': '1'}): yield

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny Llama (causal LM and reward model) with its tokenizer in folders, and toy preference pairs."
    from social_align.toyworld import toy_preferences
    root, tok = tmp_path_factory.mktemp('lora'), toy_tokenizer()
    save_tiny(tok, root/'model'); save_tiny(tok, root/'rm', reward=True)
    return dict(root=root, tok=tok, model=root/'model', rm=root/'rm', prefs=toy_preferences()[:8],
                data=write_jsonl(root/'prefs.jsonl', toy_preferences()[:8]))

def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS/f'{name}.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

def test_every_trainer_takes_the_lora_flags(clean_environ, tmp_path):
    "The flags are AlignmentConfig's, so every trainer config (and script) parses them, with --warmup_ratio."
    from social_align.trainers.base import parse_script_args, get_peft_config
    from social_align.trainers.sft import SFTConfig
    from social_align.trainers.reward import RewardConfig
    from social_align.trainers.stable_alignment import StableAlignmentConfig
    from social_align.trainers.dpo import PreferenceConfig
    from social_align.trainers.sso import SSOConfig
    from social_align.trainers.rl import RLConfig
    base = ['--model_name_or_path', 'm', '--data_path', 'd.jsonl', '--output_dir', str(tmp_path)]
    for cls in (SFTConfig, RewardConfig, StableAlignmentConfig, PreferenceConfig, SSOConfig, RLConfig):
        _, c = parse_script_args(cls, base + LORA_FLAGS)
        assert (c.use_peft, c.lora_r, c.lora_alpha, c.lora_dropout, c.lora_target_modules) == (True, 4, 8, 0.0, ['q_proj', 'v_proj']), cls
        assert c.warmup_steps == 0.1 and c.get_warmup_steps(100) == 10, cls
    _, c = parse_script_args(PreferenceConfig, base + ['--use_peft', 'True', '--lora_target_modules', 'all-linear'])
    assert get_peft_config(c).target_modules == 'all-linear'

def test_qlora_refused_without_cuda(clean_environ, tmp_path, capsys):
    "--load_in_4bit exits 2 naming the flag and what it needs, before any model is loaded."
    if torch.cuda.is_available(): pytest.skip('this machine has CUDA')
    with pytest.raises(SystemExit) as e:
        load_script('train_dpo').main(['--model_name_or_path', 'no-such-model', '--data_path', 'd.jsonl', '--output_dir', str(tmp_path),
                                       '--use_peft', 'True', '--load_in_4bit', 'True'])
    assert e.value.code == 2 and '--load_in_4bit (QLoRA) needs a CUDA GPU' in capsys.readouterr().err

def test_train_dpo_with_lora_flags(clean_environ, tiny, tmp_path):
    "train_dpo.py --use_peft True ...: the adapter alone is saved, loads in plain peft, and merges into a plain model."
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM
    from social_align.trainers.base import merge_adapter
    out = tmp_path/'dpo'
    load_script('train_dpo').main(['--model_name_or_path', str(tiny['model']), '--data_path', str(tiny['data']), '--output_dir', str(out),
                                   '--per_device_train_batch_size', '4', '--max_steps', '3', '--logging_steps', '1', '--learning_rate', '1e-2',
                                   '--save_strategy', 'no', '--report_to', 'none', '--disable_tqdm', 'True', '--max_length', '96', *LORA_FLAGS])
    assert (out/'adapter_model.safetensors').exists() and not (out/'model.safetensors').exists() and (out/'tokenizer.json').exists()
    cfg = json.loads((out/'adapter_config.json').read_text())
    assert (cfg['r'], cfg['lora_alpha'], sorted(cfg['target_modules']), cfg['task_type']) == (4, 8, ['q_proj', 'v_proj'], 'CAUSAL_LM')
    assert Path(cfg['base_model_name_or_path']) == tiny['model']
    args = json.loads((out/'training_args.json').read_text())
    assert (args['use_peft'], args['warmup_steps']) == (True, 0.1)
    log = json.loads((out/'trainer_state.json').read_text())['log_history']
    first = next(h for h in log if 'loss' in h)
    assert abs(first['loss'] - 0.693147) < 1e-5 and first['rewards/chosen'] == 0   # the reference is the adapter-off policy
    x = torch.tensor([tiny['tok']('It is normal to feel that way.')['input_ids']])
    with torch.no_grad():
        trained = AutoPeftModelForCausalLM.from_pretrained(out).eval()(x).logits
        assert not torch.allclose(trained, AutoModelForCausalLM.from_pretrained(tiny['model'])(x).logits, atol=1e-4)   # it trained
        merged = merge_adapter(out, tmp_path/'merged')
        assert torch.allclose(AutoModelForCausalLM.from_pretrained(merged)(x).logits, trained, atol=1e-5)

def test_reward_model_python_api(clean_environ, tiny, tmp_path):
    "RewardModelTrainer(peft_config=LoraConfig(...)): the score head trains and is saved; the merged folder scores the same."
    from peft import LoraConfig
    from social_align.models import load_reward_model, load_tokenizer, score_texts
    from social_align.trainers.base import merge_adapter
    from social_align.trainers.reward import RewardConfig, RewardModelTrainer
    args = RewardConfig(output_dir=str(tmp_path/'rm'), per_device_train_batch_size=4, max_steps=3, learning_rate=1e-2, save_strategy='no',
                        report_to='none', disable_tqdm=True, max_length=96)
    t = RewardModelTrainer(str(tiny['rm']), args, train_dataset=tiny['prefs'], processing_class=tiny['tok'],
                           peft_config=LoraConfig(task_type='SEQ_CLS', r=4, lora_alpha=8))
    head0 = t.model.base_model.model.score.modules_to_save['default'].weight.detach().clone()
    t.train(); t.save_model(args.output_dir)
    assert not torch.equal(head0, t.model.base_model.model.score.modules_to_save['default'].weight)   # the head trained fully
    merged = merge_adapter(args.output_dir, tmp_path/'merged')
    texts = [r['prompt'] + ' ' + r['chosen'] for r in tiny['prefs'][:4]]
    lib = score_texts(load_reward_model(merged, device='cpu'), load_tokenizer(merged), texts)
    fresh = score_texts(load_reward_model(tiny['rm'], device='cpu'), load_tokenizer(tiny['rm']), texts)
    assert not torch.allclose(lib, fresh, atol=1e-4)
    tok = load_tokenizer(args.output_dir)
    with torch.no_grad():
        model = t.model.eval()
        direct = torch.cat([model(**tok(x, return_tensors='pt')).logits[:, 0] for x in texts])
    assert torch.allclose(lib, direct, atol=1e-5)

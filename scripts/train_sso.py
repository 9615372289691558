"""Self-Steering Optimization (SSO), offline or online, for `python` or `accelerate launch`.

Offline: train on a principled_preference dataset (made by scripts/principle_pairs.py, or your own):

    python scripts/train_sso.py --model_name_or_path MODEL --data_path pairs.jsonl --output_dir runs/sso

Online: per iteration, sample pairs with the current policy, filter them, train on them; repeat:

    python scripts/train_sso.py --online True --model_name_or_path MODEL --prompts_path queries.jsonl \\
        --iterations 3 --output_dir runs/sso-online

Both modes run on several GPUs with `accelerate launch` (offline: DDP, FSDP or DeepSpeed through its config; online:
data-parallel only, every process holding the whole model, as it samples and scores with it). Online, every
process samples its share of the pair chunks (--chunk_size) on its own GPU, the main process merges them and runs
the filter once, and every process trains on the pairs:

    accelerate launch --num_processes 8 scripts/train_sso.py --online True --model_name_or_path MODEL \\
        --prompts_path queries.jsonl --chunk_size 64 --per_device_train_batch_size 2 --output_dir runs/sso-online

Every TrainingArguments flag works (--learning_rate, --bf16, --gradient_accumulation_steps, ...), plus the SSO loss
flags (--beta, --base, --alpha, --gamma, --combination, --use_w, --use_g) and, online, the pair-generation flags
(--temperature, --top_p, --max_new_tokens, --num_features, --apply_filter, ...) and TRL's vLLM flags: --use_vllm True
samples with one vLLM engine for the whole run (--vllm_mode colocate: in every process; --vllm_mode server with
--vllm_server_base_url: a running `vllm serve`, started with VLLM_SERVER_DEV_MODE=1), which gets the policy's new weights
(merged, with --use_peft) after every iteration. A single .json/.yaml argument is read
as a config file. The offline data can also be a dataset by name (--dataset_name, --dataset_split, --dataset_columns).
"""
import json, sys
from dataclasses import dataclass, field

@dataclass
class SSOScriptArguments:
    "SSO-specific script arguments."
    ref_model_name_or_path: str = field(default=None, metadata={'help': 'frozen reference model (default: a frozen copy of the initial policy)'})
    online: bool = field(default=False, metadata={'help': 'online SSO: generate pairs with the current policy, filter, train; repeat'})
    prompts_path: str = field(default=None, metadata={'help': 'online: the queries (.txt one per line, .jsonl or .json records)', 'aliases': ['--queries_path']})
    prompt_field: str = field(default=None, metadata={'help': 'online: record field of the query (default: prompt, query, instruction or question)', 'aliases': ['--query_field']})
    iterations: int = field(default=3, metadata={'help': 'online: generate -> filter -> train rounds'})
    ref_update: str = field(default='initial', metadata={'help': "online: 'initial' keeps the initial policy as reference; 'iteration' refreshes it every iteration", 'choices': ['initial', 'iteration']})
    principles_path: str = field(default=None, metadata={'help': 'online: JSON/JSONL principles that extend (or replace) the built-in set'})
    replace_principles: bool = field(default=False, metadata={'help': 'online: the principles file replaces the built-in set'})
    generation_batch_size: int = field(default=32, metadata={'help': 'online: sequences per generate batch'})

def parser_classes():
    from social_align.trainers.command_line import ScriptArguments
    from social_align.trainers.sso import SSOConfig
    from social_align.principles import PairConfig
    from social_align.trainers.vllm import VLLMArguments
    return (ScriptArguments, SSOConfig, SSOScriptArguments, PairConfig, VLLMArguments)

def main(argv=None):
    classes = parser_classes()
    from social_align.trainers.command_line import parse_script_args, run_training
    script_args, config, sso_args, pair_config, vllm_args = parse_script_args(classes[1], argv, __doc__, extra=classes[2:], require_data=False)
    from social_align.trainers.sso import SSOTrainer, sso_online
    if not sso_args.online:
        if not (script_args.data_path or script_args.dataset_name):
            sys.exit('error: --data_path (principled_preference records) or --dataset_name is required offline')
        trainer = run_training(SSOTrainer, script_args, config, ref_model=sso_args.ref_model_name_or_path)
        if trainer.is_world_process_zero(): print(json.dumps({'output_dir': config.output_dir, 'steps': trainer.state.global_step}))
        return
    if not sso_args.prompts_path: sys.exit('error: --prompts_path (alias --queries_path) is required with --online True')
    if script_args.data_path or script_args.dataset_name:
        sys.exit('error: --data_path/--dataset_name are for offline training; online mode samples its own pairs from --prompts_path')
    from social_align.models import load_causal_lm, load_tokenizer, save_model
    from social_align.principles import load_principles, load_queries
    tok = load_tokenizer(script_args.tokenizer_name_or_path or script_args.model_name_or_path, padding_side=config.padding_side)
    policy = load_causal_lm(script_args.model_name_or_path, device=str(config.device))   # this process's own device
    queries = load_queries(sso_args.prompts_path, sso_args.prompt_field)
    principles = load_principles(sso_args.principles_path, extend=not sso_args.replace_principles)
    rows = sso_online(policy, tok, queries, config, iterations=sso_args.iterations, pair_config=pair_config,
                      principles=principles, ref_model=sso_args.ref_model_name_or_path, ref_update=sso_args.ref_update,
                      generation_batch_size=sso_args.generation_batch_size, vllm_args=vllm_args)
    from social_align.core import process_info
    if process_info()[0] != 0: return
    save_model(policy, tok, config.output_dir)                        # the final policy, at the top of output_dir
    for r in rows: print(json.dumps({k: r[k] for k in ('iteration', 'queries', 'scored', 'kept', 'loss', 'w', 'steps')}))

if __name__ == '__main__':
    main()
    from social_align.core import finish_processes
    finish_processes()   # every process waits for the others, then leaves the launch's process group

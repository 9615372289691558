"""RAFT (Reward rAnked FineTuning): sample K responses per prompt from the policy, keep the best by the reward
model, finetune on them, repeat. A rerun with the same --output_dir resumes after the last completed iteration; it
must use the settings the run was made with (only --iterations and a few output flags may change), or it stops.

The finetuning step takes every transformers TrainingArguments flag (--report_to tensorboard, --max_grad_norm,
--optim, --lr_scheduler_type, --warmup_ratio, --bf16, ...) except those RAFT decides itself (checkpoints, evaluation,
the hub, multi-process training). --use_peft True with TRL's LoRA flags (--lora_r, --lora_alpha, --lora_dropout,
--lora_target_modules, --lora_modules_to_save) finetunes a LoRA adapter: samples come from the policy with its
current adapter, and output_dir holds the adapter only (--save_merged True adds the merged model in output_dir/merged). --data_path is also --prompts_path, --reward_model_name_or_path also
--reward_model_path (TRL's name), --k also --num_samples (train_rl.py's name).

    python scripts/raft.py --model_name_or_path runs/sft --reward_model_name_or_path runs/rm \\
        --data_path prompts.jsonl --output_dir runs/raft --iterations 20 --prompts_per_iteration 1024 --k 8 \\
        --learning_rate 2e-5 --warmup_ratio 0.1 --lr_scheduler_type cosine --report_to tensorboard
"""
import sys
from dataclasses import dataclass, field

from social_align.trainers.command_line import parse_cli
from social_align.trainers.raft import RAFTConfig, finetune_arguments


@dataclass
class RAFTScriptArguments:
    "What the RAFT script needs besides `RAFTConfig`."
    model_name_or_path: str = field(metadata={'help': 'the policy to align: a local folder (safetensors) or a hub name'})
    reward_model_name_or_path: str = field(metadata={'help': 'the reward model (1-output sequence classifier): a folder or hub name',
                                                     'aliases': ['--reward_model_path']})
    data_path: str = field(metadata={'help': 'prompts: .jsonl of {"prompt": ...} records, a .json list, or text with one prompt per line',
                                     'aliases': ['--prompts_path', '--queries_path']})
    prompt_field: str = field(default='prompt', metadata={'help': 'the record field holding the prompt (.jsonl / .json)', 'aliases': ['--query_field']})
    tokenizer_name_or_path: str | None = field(default=None, metadata={'help': "the policy's tokenizer (default: the policy's folder)", 'aliases': ['--tokenizer_name']})
    reward_tokenizer_name_or_path: str | None = field(default=None, metadata={'help': "the reward model's tokenizer (default: its folder)"})
    as_chat: bool = field(default=False, metadata={'help': 'wrap each string prompt as one user message (rendered by the chat template)'})
    dtype: str = field(default='auto', metadata={'help': "weights dtype of both models: 'auto', 'fp32', 'bf16', 'fp16'"})
    device: str | None = field(default=None, metadata={'help': "'cpu', 'cuda', 'cuda:1', ... (default: the best available)"})
    plot: bool = field(default=True, metadata={'help': 'draw raft.png (reward and distinct-2 per iteration) in output_dir'})
    save_merged: bool = field(default=False, metadata={'help': 'with --use_peft: also write the merged model (base + adapter) to output_dir/merged'})


# flags that do not change what the run writes (the prompts are checked by their contents, not by their path);
# every other flag and setting must stay the same on a resume
RUN_ONLY = ('device', 'plot', 'data_path', 'save_merged')


def parse_args(argv=None):
    "(RAFTScriptArguments, RAFTConfig, finetuning TrainingArguments) from the command line, or from a single .json/.yaml file."
    return parse_cli((RAFTScriptArguments, RAFTConfig, finetune_arguments()), argv, description=__doc__.split('\n\n')[0])


def main(argv=None):
    args, config, ft_args = parse_args(argv)
    from pathlib import Path
    from social_align.models import load_causal_lm, load_reward_model, load_tokenizer
    from social_align.models import RewardHeadMissingError
    from social_align.core import DataError, ResumeSettingsError
    from social_align.trainers.raft import raft, plot_raft, changed_finetune_args, finetune_config
    from social_align.data import load_prompts
    finetune_args = changed_finetune_args(ft_args)
    try: finetune_config(config, 1, finetune_args)
    except ValueError as e: sys.exit(f'raft.py: error: {e}')
    try:
        prompts = load_prompts(args.data_path, field=args.prompt_field)
        tok = load_tokenizer(args.tokenizer_name_or_path or args.model_name_or_path)
        policy = load_causal_lm(args.model_name_or_path, dtype=args.dtype, device=args.device)
        rtok = load_tokenizer(args.reward_tokenizer_name_or_path or args.reward_model_name_or_path)
        rm = load_reward_model(args.reward_model_name_or_path, dtype=args.dtype, device=args.device, tokenizer=rtok)
    except (DataError, FileNotFoundError, RewardHeadMissingError) as e: sys.exit(f'raft.py: error: {e}')
    if args.as_chat: prompts = [[{'role': 'user', 'content': p}] if isinstance(p, str) else p for p in prompts]
    settings = {k: v for k, v in vars(args).items() if k not in RUN_ONLY}
    try: results = raft(policy, tok, rm, rtok, prompts, config, settings=settings, finetune_args=finetune_args)
    except ResumeSettingsError as e: sys.exit(f'raft.py: error: {e}')
    if args.plot and results: plot_raft(results, Path(config.output_dir)/'raft.png')
    where = config.output_dir
    if args.save_merged and (Path(config.output_dir)/'adapter_config.json').exists():
        from social_align.trainers.base import merge_adapter
        where = merge_adapter(config.output_dir, Path(config.output_dir)/'merged', base_model=args.model_name_or_path, dtype=args.dtype)
    elif args.save_merged: print('raft.py: --save_merged: no adapter was trained (add --use_peft True); the policy in output_dir is a full model')
    print(f'{len(results)} iterations in {config.output_dir}/iterations.jsonl; final policy in {where}')


if __name__ == '__main__': main()

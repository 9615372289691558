"""RAFT (Reward rAnked FineTuning): sample K responses per prompt from the policy, keep the best by the reward
model, finetune on them, repeat. A rerun with the same --output_dir resumes after the last completed iteration; it
must use the settings the run was made with (only --iterations and a few output flags may change), or it stops.

The finetuning step takes every transformers TrainingArguments flag (--report_to tensorboard, --max_grad_norm,
--optim, --lr_scheduler_type, --warmup_ratio, --bf16, ...) except those RAFT decides itself (checkpoints, evaluation,
the hub, the ranks). --use_peft True with TRL's LoRA flags (--lora_r, --lora_alpha, --lora_dropout,
--lora_target_modules, --lora_modules_to_save) finetunes a LoRA adapter: samples come from the policy with its
current adapter, and output_dir holds the adapter only (--save_merged True adds the merged model in output_dir/merged). --data_path is also --prompts_path, --reward_model_name_or_path also
--reward_model_path (TRL's name), --k also --num_samples (train_rl.py's name).

Rollouts come from transformers' generate on the policy by default; --use_vllm True starts one vLLM engine per process
for the whole run (--vllm_mode colocate) or samples from a running `vllm serve` (--vllm_mode server
--vllm_server_base_url http://HOST:8000, started with VLLM_SERVER_DEV_MODE=1); after each iteration's finetuning the
policy's weights (merged, with --use_peft) are pushed into the engine, and a server is checked to generate with them.

Under `accelerate launch --num_processes N` each process samples and scores its share of every iteration's prompts,
the samples are gathered and ranked the same on every process, and the finetuning step is data-parallel (DDP); the
main process writes the log, samples and checkpoints. With the same data, seeds and global batch
(--per_device_train_batch_size B on N processes = N*B on one) N processes keep what one keeps.

    python scripts/raft.py --model_name_or_path runs/sft --reward_model_name_or_path runs/rm \\
        --data_path prompts.jsonl --output_dir runs/raft --iterations 20 --prompts_per_iteration 1024 --k 8 \\
        --learning_rate 2e-5 --warmup_ratio 0.1 --lr_scheduler_type cosine --report_to tensorboard
    accelerate launch --num_processes 8 scripts/raft.py ... --per_device_train_batch_size 1   # 8 GPUs, global batch 8
"""
import os, sys
from dataclasses import dataclass, field

from social_align.trainers.command_line import parse_cli, use_cpu_ranks_without_accelerator
from social_align.trainers.raft import RAFTConfig, finetune_arguments
from social_align.trainers.vllm import VLLMArguments


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
    "(RAFTScriptArguments, RAFTConfig, finetuning TrainingArguments, VLLMArguments) from the command line, or from a single .json/.yaml file."
    use_cpu_ranks_without_accelerator()   # a multi-process launch with no GPU: data-parallel on CPU over gloo
    return parse_cli((RAFTScriptArguments, RAFTConfig, finetune_arguments(), VLLMArguments), argv, description=__doc__.split('\n\n')[0])


def main(argv=None):
    args, config, ft_args, vllm_args = parse_args(argv)
    from pathlib import Path
    from social_align.models import load_causal_lm, load_reward_model, load_tokenizer
    from social_align.models import RewardHeadMissingError
    from social_align.core import DataError, ResumeSettingsError
    from social_align.trainers.raft import raft, plot_raft, changed_finetune_args, finetune_config, engine_name
    from social_align.data import load_prompts
    import torch
    finetune_args = changed_finetune_args(ft_args)
    ranks = int(os.environ.get('WORLD_SIZE', '1'))
    device = args.device
    if device is None and ranks > 1 and torch.cuda.is_available(): device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"   # each rank its GPU
    main = int(os.environ.get('RANK', '0')) == 0
    try: finetune_config(config, 1, finetune_args); engine_name(vllm_args)
    except ValueError as e: sys.exit(f'raft.py: error: {e}')
    try:
        prompts = load_prompts(args.data_path, field=args.prompt_field)
        tok = load_tokenizer(args.tokenizer_name_or_path or args.model_name_or_path)
        policy = load_causal_lm(args.model_name_or_path, dtype=args.dtype, device=device)
        rtok = load_tokenizer(args.reward_tokenizer_name_or_path or args.reward_model_name_or_path)
        rm = load_reward_model(args.reward_model_name_or_path, dtype=args.dtype, device=device, tokenizer=rtok)
    except (DataError, FileNotFoundError, RewardHeadMissingError) as e: sys.exit(f'raft.py: error: {e}')
    if args.as_chat: prompts = [[{'role': 'user', 'content': p}] if isinstance(p, str) else p for p in prompts]
    settings = {k: v for k, v in vars(args).items() if k not in RUN_ONLY}
    try: results = raft(policy, tok, rm, rtok, prompts, config, settings=settings, finetune_args=finetune_args, vllm_args=vllm_args)
    except ResumeSettingsError as e: sys.exit(f'raft.py: error: {e}')
    if not main: return
    if args.plot and results: plot_raft(results, Path(config.output_dir)/'raft.png')
    where = config.output_dir
    if args.save_merged and (Path(config.output_dir)/'adapter_config.json').exists():
        from social_align.trainers.base import merge_adapter
        where = merge_adapter(config.output_dir, Path(config.output_dir)/'merged', base_model=args.model_name_or_path, dtype=args.dtype)
    elif args.save_merged: print('raft.py: --save_merged: no adapter was trained (add --use_peft True); the policy in output_dir is a full model')
    print(f'{len(results)} iterations in {config.output_dir}/iterations.jsonl; final policy in {where}')


if __name__ == '__main__':
    main()
    from social_align.core import finish_processes
    finish_processes()   # every process waits for the others, then leaves the launch's process group

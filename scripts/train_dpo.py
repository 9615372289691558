"""DPO / IPO training (social_align.trainers.dpo.PreferenceTrainer) on preference pairs.

Data: a .jsonl/.json file of `preference` records `{"prompt": ..., "chosen": ..., "rejected": ...}` (prompts may be
chat message lists). The reference model is --ref_model_name_or_path, or by default a frozen copy of the starting
policy. --loss_type sigmoid (DPO, summed log-probs) or ipo (IPO, per-token-averaged log-probs), --beta, and
--precompute_ref_log_probs True to score the data with the reference once before training and free it (one model in
memory instead of two). Every transformers TrainingArguments flag works too.

    python scripts/train_dpo.py --model_name_or_path runs/sft --data_path data/prefs_train.jsonl \\
        --eval_data_path data/prefs_eval.jsonl --output_dir runs/dpo --beta 0.1 --loss_type sigmoid \\
        --learning_rate 5e-7 --num_train_epochs 1 --per_device_train_batch_size 4 --gradient_accumulation_steps 8 \\
        --max_length 1024 --precompute_ref_log_probs True

    accelerate launch --config_file scripts/configs/multi_gpu.yaml scripts/train_dpo.py ...   # data parallel
    accelerate launch --config_file scripts/configs/cpu.yaml scripts/train_dpo.py ...         # 2 CPU processes (gloo)

Writes model.safetensors, the tokenizer, train_results.json (eval_rewards/accuracies etc. with eval data) and
trainer_state.json into --output_dir. Resume with --resume_from_checkpoint PATH|True, giving the same starting model
(the reference is built from it, not from the checkpoint).
With --use_peft True (LoRA: --lora_r, --lora_alpha, --lora_target_modules, ...) the reference is the model with its adapter off (no
second copy) and only the adapter is saved
(adapter_model.safetensors, adapter_config.json); `social-align merge-adapter OUTPUT_DIR MERGED` makes a plain model.
"""
import sys
from dataclasses import dataclass, field


@dataclass
class ReferenceArguments:
    ref_model_name_or_path: str | None = field(default=None, metadata={
        'help': 'the frozen reference model: a local folder (safetensors) or hub name (default: a copy of the starting policy)'})


def main(argv=None):
    from social_align.core import DataError
    from social_align.trainers.command_line import parse_script_args, run_training
    from social_align.trainers.dpo import PreferenceConfig, PreferenceTrainer
    script_args, config, ref_args = parse_script_args(PreferenceConfig, argv, description=__doc__, extra=(ReferenceArguments,))
    try: trainer = run_training(PreferenceTrainer, script_args, config, ref_model=ref_args.ref_model_name_or_path)
    except DataError as e: sys.exit(f'train_dpo.py: error: bad data: {e}')
    if trainer.is_world_process_zero():
        print(f'{config.loss_type} preference training: {trainer.state.global_step} optimizer steps on '
              f'{trainer.args.world_size} process(es); model saved to {config.output_dir}')


if __name__ == '__main__':
    main()
    from social_align.core import finish_processes
    finish_processes()   # every process waits for the others, then leaves the launch's process group

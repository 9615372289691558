"""Supervised finetuning with the loss on the response only (social_align.trainers.sft.SFTTrainer).

Data: a .jsonl/.json file of `sft` records, `{"prompt": ..., "completion": ...}` or `{"messages": [...]}` (every
assistant turn is learned, through the chat template when the tokenizer has one). Every `transformers.TrainingArguments` flag works, plus the SFT settings
(--completion_only_loss, --packing, --block_size) and the length settings (--max_length, --truncation_side, ...).

Example (ALMoST's SFT settings; LMFlow's recipe adds --packing True --block_size 1024 --num_train_epochs 2):

    python scripts/train_sft.py --model_name_or_path runs/base --data_path data/sft.jsonl \\
        --output_dir runs/sft --learning_rate 2e-5 --num_train_epochs 3 --max_length 512 \\
        --per_device_train_batch_size 4 --gradient_accumulation_steps 8 --bf16 True

Writes model.safetensors, the tokenizer, train_results.json and trainer_state.json into --output_dir.
With --use_peft True (LoRA: --lora_r, --lora_alpha, --lora_target_modules, ...) only the adapter is saved
(adapter_model.safetensors, adapter_config.json); `social-align merge-adapter OUTPUT_DIR MERGED` makes a plain model.
Multi-GPU: `accelerate launch scripts/train_sft.py ...` (add --fsdp / --deepspeed flags as usual).
"""
import sys

def main(argv=None):
    from social_align.core import DataError
    from social_align.trainers.command_line import parse_script_args, run_training
    from social_align.trainers.sft import SFTConfig, SFTTrainer
    script_args, config = parse_script_args(SFTConfig, argv, description=__doc__)
    try: run_training(SFTTrainer, script_args, config)
    except DataError as e: sys.exit(f'train_sft.py: error: bad data: {e}')

if __name__ == '__main__':
    main()
    from social_align.core import finish_processes
    finish_processes()   # every process waits for the others, then leaves the launch's process group

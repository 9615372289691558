"""Stable Alignment training (Liu et al., ICLR 2024) on rated responses: JSON/JSONL records {query, responses, scores}.

Takes the published command's flags unchanged (--model_max_length, --evaluation_strategy, --warmup_ratio and
--fsdp_transformer_layer_cls_to_wrap included), and every transformers TrainingArguments flag:

    accelerate launch --config_file scripts/configs/fsdp.yaml scripts/train_alignment.py \\
        --model_name_or_path hhh_sft --data_path sandbox_v1.json --output_dir socially_good_lm \\
        --bf16 True --num_train_epochs 2 --per_device_train_batch_size 1 --gradient_accumulation_steps 8 \\
        --learning_rate 2e-5 --warmup_ratio 0.03 --lr_scheduler_type cosine --model_max_length 480 \\
        --rating_scale 7 --margin 1 --max_flow False --ratio 0.2 --num_comp 3

Runs with plain `python`, `torchrun` or `accelerate launch` (configs in scripts/configs/); any batch size works.
"""
import sys

def parse_args(argv=None):
    "(ScriptArguments, StableAlignmentConfig) from the command line, or from a single .json/.yaml file."
    from social_align.trainers.command_line import parse_script_args
    from social_align.trainers.stable_alignment import StableAlignmentConfig
    return parse_script_args(StableAlignmentConfig, argv, description=__doc__)

def main(argv=None):
    script_args, config = parse_args(argv)
    from social_align.core import DataError
    from social_align.trainers.command_line import run_training
    from social_align.trainers.stable_alignment import StableAlignmentTrainer
    try: trainer = run_training(StableAlignmentTrainer, script_args, config)
    except DataError as e: sys.exit(f'train_alignment.py: error: bad data: {e}')   # names the file, line and field
    if trainer.is_world_process_zero():
        print(f'stable alignment: {trainer.state.global_step} optimizer steps on {trainer.args.world_size} process(es), '
              f'{trainer.args.per_device_train_batch_size} queries per device per micro-batch; model saved to {config.output_dir}')

if __name__ == '__main__':
    main()
    from social_align.core import finish_processes
    finish_processes()   # every process waits for the others, then leaves the launch's process group

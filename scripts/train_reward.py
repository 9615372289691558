"""Pairwise (Bradley-Terry) reward-model training (social_align.trainers.reward.RewardModelTrainer).

Data: a .jsonl/.json file of `preference` records `{"prompt": ..., "chosen": ..., "rejected": ...}` (optional
"margin"). The model is loaded as `AutoModelForSequenceClassification` with one output, so a causal-LM (e.g. SFT)
checkpoint gets a fresh score head. Every `transformers.TrainingArguments` flag works, plus --margin,
--center_rewards_coefficient, --drop_long and the length settings (--max_length, --truncation_side, default left).

Example (LMFlow's recipe: 1 epoch, lr 5e-6, pairs over 512 tokens dropped; eval accuracy in train_results.json):

    python scripts/train_reward.py --model_name_or_path runs/sft --data_path data/prefs_train.jsonl \\
        --eval_data_path data/prefs_eval.jsonl --output_dir runs/rm --learning_rate 5e-6 \\
        --num_train_epochs 1 --max_length 512 --drop_long True --per_device_train_batch_size 4 \\
        --gradient_accumulation_steps 8 --eval_strategy steps --eval_steps 200

ALMoST's reward-model command works as written (it passes --train_reward_model True, accepted and implied here).

Writes model.safetensors, the tokenizer, train_results.json (with eval_accuracy when eval data is given) and
trainer_state.json into --output_dir. Multi-GPU: `accelerate launch scripts/train_reward.py ...`.
With --use_peft True (LoRA: --lora_r, --lora_alpha, --lora_target_modules, ...) only the adapter (with the score head) is saved
(adapter_model.safetensors, adapter_config.json); `social-align merge-adapter OUTPUT_DIR MERGED` makes a plain model.
"""
import sys
from dataclasses import dataclass, field


@dataclass
class RewardScriptArguments:
    train_reward_model: bool = field(default=True, metadata={
        'help': "accepted for ALMoST's command line, which passes --train_reward_model True; this script always trains a reward model"})


def main(argv=None):
    from social_align.core import DataError
    from social_align.trainers.command_line import parse_script_args, run_training
    from social_align.trainers.reward import RewardConfig, RewardModelTrainer
    script_args, config, rm_args = parse_script_args(RewardConfig, argv, description=__doc__, extra=(RewardScriptArguments,))
    if not rm_args.train_reward_model:
        sys.exit('train_reward.py: error: --train_reward_model False: this script trains reward models; for SFT use scripts/train_sft.py')
    try: run_training(RewardModelTrainer, script_args, config)
    except DataError as e: sys.exit(f'train_reward.py: error: bad data: {e}')

if __name__ == '__main__':
    main()
    from social_align.core import finish_processes
    finish_processes()   # every process waits for the others, then leaves the launch's process group

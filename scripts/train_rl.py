"""Online RL against a reward model (social_align.trainers.rl.RLTrainer): PPO, as ALMoST did, RLOO or GRPO.

Data: a .jsonl/.json file of prompt records `{"prompt": ...}` (text, or chat message lists), or a text file with one
prompt a line (social_align.data.load_prompts). Every RL step samples responses from the current policy for
per_device_train_batch_size prompts per process (--num_samples per prompt),
scores them with --reward_model_name_or_path (also --reward_model_path, TRL's name; a 1-output sequence-classification
model, read through its own tokenizer),
subtracts a per-token KL penalty to the starting policy (--kl_coef, or --adaptive_kl True with --target_kl), and
updates the policy for --ppo_epochs passes of --num_mini_batches mini-batches. --algorithm ppo trains a value model
too (default: a copy of the reward model; --value_model_path to choose); --algorithm rloo uses --num_samples >= 2
samples per prompt and a leave-one-out baseline. --algorithm grpo takes TRL's GRPOConfig flags and defaults:
--num_generations (= --num_samples, default 8), --beta (= --kl_coef, default 0: no reference model; > 0: the k3 KL
in the loss), --num_iterations (= --ppo_epochs, default 1), --epsilon (= --cliprange), --epsilon_high, --loss_type
(grpo, bnpo, dapo (default), dr_grpo), --scale_rewards (group (default), batch, none), --use_bias_correction_kl.
Advantages are whitened (GRPO: batch-scaled) with the statistics of the global batch of all processes;
--seed_per_prompt True seeds each prompt's samples by its place in the global batch, so that 1 and N processes
sample the same responses (HF generation; slower). --generation_backend vllm samples with an in-process vLLM engine per
process, given the new weights before every rollout (default hf: transformers generate). --max_steps counts RL steps. Every transformers TrainingArguments
flag works (learning_rate, seed, save_steps, warmup_ratio, report_to, ...). --use_peft True with TRL's LoRA flags
(--lora_r, --lora_alpha, --lora_dropout, --lora_target_modules, --lora_modules_to_save) trains a LoRA adapter on the
policy: the KL reference is then the policy with its adapter disabled (no copy), vLLM gets the merged weights, and
the adapter alone is saved (social_align.trainers.base.merge_adapter makes a plain model of it).

    python scripts/train_rl.py --model_name_or_path runs/sft --reward_model_name_or_path runs/rm --data_path data/prompts.jsonl \\
        --output_dir runs/ppo --algorithm ppo --max_steps 200 --per_device_train_batch_size 16 --max_new_tokens 128 \\
        --learning_rate 1e-6 --kl_coef 0.05 --save_strategy steps --save_steps 50

    python scripts/train_rl.py ... --output_dir runs/grpo --algorithm grpo --num_generations 8 --beta 0.04 --loss_type grpo

    accelerate launch --config_file scripts/configs/cpu.yaml --num_processes 2 scripts/train_rl.py ...   # data parallel

Writes the policy (model.safetensors; with --use_peft the adapter: adapter_config.json, adapter_model.safetensors), its tokenizer, training_args.json, value_model/ (ppo), trainer_state.json (one
record per RL step: score, reward, kl (absent for grpo with --beta 0), response_length, entropy, policy_loss, value_loss, clip_fraction, kl_coef,
num_samples ...), train_results.json and rl.png (reward and KL curves) into --output_dir. Resume a killed run with
--resume_from_checkpoint True (the latest checkpoint-N in --output_dir) or a checkpoint folder, giving the same
starting model (the reference is built from it).
"""
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ReferenceArguments:
    ref_model_name_or_path: str | None = field(default=None, metadata={
        'help': 'the frozen reference model for the KL penalty: a local folder or hub name (default: a copy of the starting policy)'})


def main(argv=None):
    from social_align.core import DataError, atomic_write_json
    from social_align.models import load_tokenizer
    from social_align.trainers.command_line import parse_script_args, _resume_arg
    from social_align.trainers.rl import RLConfig, RLTrainer, plot_rl
    script_args, config, ref_args = parse_script_args(RLConfig, argv, description=__doc__, extra=(ReferenceArguments,))
    if not config.reward_model_name_or_path: sys.exit('train_rl.py: error: --reward_model_name_or_path (or --reward_model_path) is required')
    if script_args.eval_data_path: sys.exit('train_rl.py: error: --eval_data_path is not used by RL training (it has no eval pass)')
    tok = load_tokenizer(script_args.tokenizer_name_or_path or script_args.model_name_or_path)
    try: trainer = RLTrainer(script_args.model_name_or_path, config, script_args.data_path, processing_class=tok,
                             ref_model=ref_args.ref_model_name_or_path)
    except DataError as e: sys.exit(f'train_rl.py: error: bad data: {e}')
    try:
        metrics = trainer.train(resume_from_checkpoint=_resume_arg(config.resume_from_checkpoint))
        trainer.save_model(config.output_dir)
        trainer.save_state()
        if trainer.is_world_process_zero():
            out = Path(config.output_dir)
            atomic_write_json(out/'train_results.json', metrics)
            hist = trainer.state.log_history
            if hist: plot_rl(hist, out/'rl.png')
            first, last = (hist[0], hist[-1]) if hist else ({}, {})
            print(f'{config.algorithm} training: {trainer.state.global_step} RL steps on {trainer.world_size} process(es), '
                  f'{last.get("num_samples")} samples per step; score {first.get("score")} -> {last.get("score")}, '
                  f'kl {last.get("kl")}; model saved to {config.output_dir}')
    finally: trainer.close()       # last: shutting a vLLM engine down also ends the processes' process group

if __name__ == '__main__':
    main()
    from social_align.core import finish_processes
    finish_processes()   # every process waits for the others, then leaves the launch's process group

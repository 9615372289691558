"""Self-Steering Optimization (SSO), offline or online, for `python` or `accelerate launch`.

Offline: train on a principled_preference dataset (made by scripts/principle_pairs.py, or your own):

    python scripts/train_sso.py --model_name_or_path MODEL --data_path pairs.jsonl --output_dir runs/sso

Online: per iteration, sample pairs with the current policy, filter them, train on them; repeat (one process):

    python scripts/train_sso.py --online True --model_name_or_path MODEL --queries_path queries.jsonl \\
        --iterations 3 --output_dir runs/sso-online

Every TrainingArguments flag works (--learning_rate, --bf16, --gradient_accumulation_steps, ...), plus the SSO loss
flags (--beta, --base, --alpha, --gamma, --combination, --use_w, --use_g) and, online, the pair-generation flags
(--temperature, --top_p, --max_new_tokens, --num_features, --apply_filter, ...). A single .json/.yaml argument is read
as a config file (online, give it "data_path": "").
"""
import json, sys
from dataclasses import dataclass, field

DESCRIPTION = 'Train a causal LM with Self-Steering Optimization (offline on principled pairs, or online).'

@dataclass
class SSOScriptArguments:
    "SSO-specific script arguments."
    ref_model_name_or_path: str = field(default=None, metadata={'help': 'frozen reference model (default: a frozen copy of the initial policy)'})
    online: bool = field(default=False, metadata={'help': 'online SSO: generate pairs with the current policy, filter, train; repeat'})
    queries_path: str = field(default=None, metadata={'help': 'online: the queries (.txt one per line, .jsonl or .json records)'})
    query_field: str = field(default=None, metadata={'help': 'online: record field of the query (default: prompt, query, instruction or question)'})
    iterations: int = field(default=3, metadata={'help': 'online: generate -> filter -> train rounds'})
    ref_update: str = field(default='initial', metadata={'help': "online: 'initial' keeps the initial policy as reference; 'iteration' refreshes it every iteration", 'choices': ['initial', 'iteration']})
    principles_path: str = field(default=None, metadata={'help': 'online: JSON/JSONL principles that extend (or replace) the built-in set'})
    replace_principles: bool = field(default=False, metadata={'help': 'online: the principles file replaces the built-in set'})
    generation_batch_size: int = field(default=32, metadata={'help': 'online: sequences per generate batch'})

def parser_classes():
    from social_align.trainers.base import ScriptArguments
    from social_align.trainers.sso import SSOConfig
    from social_align.principles import PairConfig
    return (ScriptArguments, SSOConfig, SSOScriptArguments, PairConfig)

def _online(argv):
    for i, a in enumerate(argv):
        if a.startswith('--online='): return a.split('=', 1)[1].lower() in ('true', '1', 'yes')
        if a == '--online': return i + 1 >= len(argv) or argv[i+1].startswith('--') or argv[i+1].lower() in ('true', '1', 'yes')
    return False

def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    classes = parser_classes()
    if not (len(argv) == 1 and argv[0].endswith(('.json', '.yaml', '.yml'))):
        if _online(argv) and not any(a == '--data_path' or a.startswith('--data_path=') for a in argv):
            argv += ['--data_path', '']                              # online mode reads --queries_path instead
    from social_align.trainers.base import parse_script_args, run_training
    script_args, config, sso_args, pair_config = parse_script_args(classes[1], argv, DESCRIPTION, extra=classes[2:])
    from social_align.trainers.sso import SSOTrainer, sso_online
    if not sso_args.online:
        if not script_args.data_path: sys.exit('error: --data_path (principled_preference records) is required offline')
        trainer = run_training(SSOTrainer, script_args, config, ref_model=sso_args.ref_model_name_or_path)
        if trainer.is_world_process_zero(): print(json.dumps({'output_dir': config.output_dir, 'steps': trainer.state.global_step}))
        return
    if not sso_args.queries_path: sys.exit('error: --queries_path is required with --online True')
    if script_args.data_path: sys.exit('error: --data_path is for offline training; online mode samples its own pairs from --queries_path')
    from social_align.models import load_causal_lm, load_tokenizer, save_model
    from social_align.principles import load_principles, load_queries
    tok = load_tokenizer(script_args.tokenizer_name_or_path or script_args.model_name_or_path, padding_side=config.padding_side)
    policy = load_causal_lm(script_args.model_name_or_path)
    queries = load_queries(sso_args.queries_path, sso_args.query_field)
    principles = load_principles(sso_args.principles_path, extend=not sso_args.replace_principles)
    rows = sso_online(policy, tok, queries, config, iterations=sso_args.iterations, pair_config=pair_config,
                      principles=principles, ref_model=sso_args.ref_model_name_or_path, ref_update=sso_args.ref_update,
                      generation_batch_size=sso_args.generation_batch_size)
    save_model(policy, tok, config.output_dir)                        # the final policy, at the top of output_dir
    for r in rows: print(json.dumps({k: r[k] for k in ('iteration', 'queries', 'scored', 'kept', 'loss', 'w', 'steps')}))

if __name__ == '__main__': main()

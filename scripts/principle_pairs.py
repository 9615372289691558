"""Generate SSO's principle-steered preference pairs from a queries file with a model (SPEC §4.1).

    python scripts/principle_pairs.py --model_name_or_path MODEL --prompts_path queries.jsonl \\
        --output_path data/pairs.jsonl [--principles_path my_principles.jsonl] [--backend vllm]

The output is principled_preference JSONL (prompt, chosen, rejected, system, p_system, n_system, raw), ready for
scripts/train_sso.py. Rerunning with the same --output_path resumes: queries already in
<output>.candidates.jsonl are not generated again, and the chunk a killed run stopped in is generated again whole
with its own seed (from --sampling_seed and its place), so the resumed output is exactly an uninterrupted run's.

On several processes (GPUs), each makes its share of the chunks on its own device and the main process merges them
and runs the filter once; the output is the same file one process writes, and a killed run resumes on any number:

    accelerate launch --num_processes 8 scripts/principle_pairs.py --model_name_or_path MODEL ... --chunk_size 64

Sampling and filter flags: --temperature (0.7), --top_p (0.8), --max_new_tokens, --num_features (2), --apply_filter,
--chunk_size, ... (see --help).
"""
import json, os, sys
from dataclasses import dataclass, field

@dataclass
class PairScriptArguments:
    "What the pair-generation script needs besides `PairConfig`."
    model_name_or_path: str = field(metadata={'help': 'the policy: a local folder (safetensors) or a hub name'})
    prompts_path: str = field(metadata={'help': 'the queries: .txt (one per line), .jsonl or .json records', 'aliases': ['--queries_path']})
    output_path: str = field(metadata={'help': 'principled_preference JSONL to write (its .candidates.jsonl makes the run resumable)'})
    principles_path: str = field(default=None, metadata={'help': 'JSON/JSONL principles that extend (or replace) the built-in seven'})
    replace_principles: bool = field(default=False, metadata={'help': 'the principles file replaces the built-in set instead of extending it'})
    concision: bool = field(default=False, metadata={'help': 'include the optional built-in Concision principle'})
    prompt_field: str = field(default=None, metadata={'help': 'record field of the query (default: prompt, query, instruction or question)', 'aliases': ['--query_field']})
    backend: str = field(default='hf', metadata={'help': "sampling backend: 'hf' (transformers) or 'vllm'; log-probs are always scored with transformers", 'choices': ['hf', 'vllm'], 'aliases': ['--generation_backend']})
    batch_size: int = field(default=32, metadata={'help': 'hf backend: sequences per generate batch'})
    device: str = field(default=None, metadata={'help': "'cpu', 'cuda', 'cuda:1', ... (default: the best available; under a multi-process launch, the process's own)"})
    dtype: str = field(default='auto', metadata={'help': "'auto' (the checkpoint's), 'fp32', 'bf16' or 'fp16'"})

def main(argv=None):
    from social_align.principles import PairConfig
    from social_align.trainers.command_line import parse_cli, use_cpu_ranks_without_accelerator
    use_cpu_ranks_without_accelerator()                               # a launch on a machine with no GPU: gloo between CPU ranks
    args, cfg = parse_cli((PairScriptArguments, PairConfig), argv, __doc__)
    from social_align.core import process_info
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:                       # join the launch's processes (gloo on CPU ranks)
        from social_align.core import distributed_state
        state = distributed_state()
        if args.device is None: args.device = str(state.device)          # every process on its own device
    from social_align.models import load_causal_lm, load_tokenizer
    from social_align.generation import HFGenerator, VLLMGenerator
    from social_align.principles import load_principles, load_queries, principle_pairs
    principles = load_principles(args.principles_path, extend=not args.replace_principles, concision=args.concision)
    queries = load_queries(args.prompts_path, args.prompt_field)
    tok = load_tokenizer(args.model_name_or_path)
    model = load_causal_lm(args.model_name_or_path, dtype=args.dtype, device=args.device)
    gen = (HFGenerator(model, tok, batch_size=args.batch_size) if args.backend == 'hf'
           else VLLMGenerator(args.model_name_or_path, tok, dtype=args.dtype))
    try: stats = principle_pairs(queries, gen, args.output_path, principles, cfg, model=model, tokenizer=tok, progress=True)
    finally: gen.close()
    if process_info()[0] == 0: print(json.dumps(stats))

if __name__ == '__main__':
    main()
    from social_align.core import finish_processes
    finish_processes()   # every process waits for the others, then leaves the launch's process group

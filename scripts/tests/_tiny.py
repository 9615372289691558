"What the script tests share: JSON Lines files, and tiny random Llamas of the toy world saved in folders."
import json

TINY = dict(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128)   # a tiny Llama's size

def write_jsonl(path, recs):
    "Write `recs` to `path`, one JSON object a line; returns `path`."
    path.write_text(''.join(json.dumps(r) + '\n' for r in recs))
    return path

def toy_tokenizer(**kw):
    "The toy world's BPE tokenizer (400 tokens, no chat template) the tiny models use."
    from social_align.models import train_bpe_tokenizer
    from social_align.toyworld import toy_corpus
    return train_bpe_tokenizer(toy_corpus(), vocab_size=400, chat_template=None, **kw)

def save_tiny(tok, path, seed=0, reward=False):
    "A tiny random Llama with `seed` (a causal LM, or with `reward` a reward model) saved with `tok` in `path`; returns `path`."
    from social_align.models import build_tiny_causal_lm, build_tiny_reward_model, save_model
    save_model((build_tiny_reward_model if reward else build_tiny_causal_lm)(tok, seed=seed, **TINY), tok, path)
    return path

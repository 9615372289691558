"""Chat models done right (issue 16), through the Python API, with two real template styles written into locally built
tokenizers (ChatML as Qwen2 ships it; Llama 3 style with a `<|begin_of_text|>` BOS): every trainer learns and scores
the tokens `apply_chat_template` gives, ending with the template's end-of-turn token, and generation stops there."""
import tempfile
import pytest
import torch

from _tiny import TINY

STYLES = {'chatml': '<|im_end|>', 'llama3': '<|eot_id|>'}
USER = lambda q: [{'role': 'user', 'content': q}]
QA = [('What is the capital of France?', 'Paris.', 'No idea, go away.'),
      ('How do I stay safe online?', 'Use strong passwords.', 'Who cares.'),
      ('Can you help me write a note?', 'Of course, gladly.', 'No.'),
      ('Tell me about sleep.', 'Sleep well and often.', 'Sleep is boring.')]
CONV = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello.'},
        {'role': 'user', 'content': 'Capital of France?'}, {'role': 'assistant', 'content': 'Paris.'}]
STEPS = dict(per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3, logging_steps=1, save_strategy='no',
             report_to=[], disable_tqdm=True, seed=0, max_length=128)

@pytest.fixture(scope='module', params=list(STYLES))
def chat(request):
    "A chat tokenizer of one style, its end-of-turn id, and tiny seeded models on it."
    from social_align.models import chat_tokenizer, build_tiny_causal_lm, build_tiny_reward_model
    tok = chat_tokenizer(request.param)
    eot = tok.convert_tokens_to_ids(STYLES[request.param])
    assert eot != tok.eos_token_id
    return dict(style=request.param, tok=tok, eot=eot, eot_text=STYLES[request.param],
                lm=lambda seed=0: build_tiny_causal_lm(tok, seed=seed, **TINY),
                rm=lambda seed=0: build_tiny_reward_model(tok, seed=seed, **TINY))

def _out(): return tempfile.mkdtemp(prefix='chat-test-')

def _ends_turn(c, ids, mask=None):
    "The learned/scored tokens end with the end-of-turn token, with no bare EOS anywhere."
    assert ids[-1] == c['eot'] and c['tok'].eos_token_id not in ids
    if mask is not None: assert mask[-1] == 1

def _trained(trainer):
    losses = [h['loss'] for h in trainer.state.log_history if 'loss' in h]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))

def test_sft_single_and_multi_turn(chat):
    from social_align.trainers.sft import SFTTrainer, SFTConfig
    recs = [{'prompt': USER(q), 'completion': a} for q, a, _ in QA[:2]] + [{'messages': CONV}] * 2
    tr = SFTTrainer(chat['lm'](), args=SFTConfig(output_dir=_out(), **STEPS), train_dataset=recs, processing_class=chat['tok'])
    for row in tr.train_dataset: _ends_turn(chat, row['sequence_input_ids'], row['sequence_response_mask'])
    multi = tr.train_dataset[2]
    learned = [i for i, m in zip(multi['sequence_input_ids'], multi['sequence_response_mask']) if m]
    assert chat['tok'].decode(learned) == f"Hello.{chat['eot_text']}Paris.{chat['eot_text']}"   # both assistant turns, nothing else
    tr.train(); _trained(tr)

def _prefs(): return [{'prompt': USER(q), 'chosen': a, 'rejected': b} for q, a, b in QA]

def test_reward_model_reads_where_it_scores(chat):
    from social_align.trainers.reward import RewardModelTrainer, RewardConfig
    from social_align.models import score_texts, sequence_rewards
    from social_align.tokenization import pair_text
    tr = RewardModelTrainer(chat['rm'](), args=RewardConfig(output_dir=_out(), **STEPS), train_dataset=_prefs(), processing_class=chat['tok'])
    row = tr.train_dataset[0]
    _ends_turn(chat, row['chosen_input_ids'], row['chosen_response_mask']); _ends_turn(chat, row['rejected_input_ids'])
    tr.train(); _trained(tr)
    rm, rt = tr.model.eval(), tr.processing_class
    ids = torch.tensor([row['chosen_input_ids']])
    at_train = sequence_rewards(rm, ids, torch.ones_like(ids))               # the reward read as training reads it
    text = pair_text(_prefs()[0]['prompt'], _prefs()[0]['chosen'], rt)
    assert text.endswith(chat['eot_text']) and rt(text)['input_ids'] == row['chosen_input_ids']
    torch.testing.assert_close(score_texts(rm, rt, [text]), at_train.detach().cpu(), atol=1e-5, rtol=1e-5)

def test_stable_alignment(chat):
    from social_align.trainers.stable_alignment import StableAlignmentTrainer, StableAlignmentConfig
    recs = [{'query': USER(q), 'responses': [a, b], 'scores': [7, 2]} for q, a, b in QA]
    tr = StableAlignmentTrainer(chat['lm'](), args=StableAlignmentConfig(output_dir=_out(), **STEPS), train_dataset=recs,
                                processing_class=chat['tok'])
    row = tr.train_dataset[0]
    for ids, mask in zip(row['responses_input_ids'], row['responses_response_mask']): _ends_turn(chat, ids, mask)
    tr.train(); _trained(tr)

@pytest.mark.parametrize('loss_type', ['sigmoid', 'ipo'])
def test_dpo_and_ipo(chat, loss_type):
    from social_align.trainers.dpo import PreferenceTrainer, PreferenceConfig
    tr = PreferenceTrainer(chat['lm'](), args=PreferenceConfig(output_dir=_out(), loss_type=loss_type, **STEPS), train_dataset=_prefs(),
                           processing_class=chat['tok'])
    row = tr.train_dataset[0]
    _ends_turn(chat, row['chosen_input_ids'], row['chosen_response_mask']); _ends_turn(chat, row['rejected_input_ids'], row['rejected_response_mask'])
    tr.train(); _trained(tr)

def test_sso(chat):
    from social_align.trainers.sso import SSOTrainer, SSOConfig
    recs = [{'prompt': q, 'chosen': a, 'rejected': b, 'raw': b, 'system': 'Answer.', 'p_system': 'Be helpful.', 'n_system': 'Be rude.'}
            for q, a, b in QA]
    tr = SSOTrainer(chat['lm'](), args=SSOConfig(output_dir=_out(), **STEPS), train_dataset=recs, processing_class=chat['tok'])
    row = tr.train_dataset[0]
    groups = sorted({k.removesuffix('_input_ids') for k in row if k.endswith('_input_ids')})
    assert len(groups) == 6
    for g in groups: _ends_turn(chat, row[f'{g}_input_ids'], row[f'{g}_response_mask'])
    tr.train(); _trained(tr)

def test_raft_one_iteration(chat):
    from social_align.trainers.raft import raft, RAFTConfig, reward_text
    from social_align.models import reward_tokenizer
    rm = chat['rm'](seed=1); rt = reward_tokenizer(chat['tok'], rm)
    prompts = [USER(q) for q, _, _ in QA]
    assert reward_text(prompts[0], ' Paris.', rt).endswith('Paris.' + chat['eot_text'])
    cfg = RAFTConfig(output_dir=_out(), iterations=1, prompts_per_iteration=4, k=2, max_new_tokens=6, per_device_train_batch_size=2,
                     learning_rate=1e-3, min_chars=0, bad_markers=[], verbose=False)
    res = raft(chat['lm'](), chat['tok'], rm, rt, prompts, cfg)
    assert len(res) == 1 and res[0]['iteration'] == 1 and res[0]['n_samples'] == 8

def test_rl_one_step(chat):
    from social_align.trainers.rl import RLTrainer, RLConfig
    args = RLConfig(output_dir=_out(), algorithm='rloo', num_samples=2, max_steps=1, per_device_train_batch_size=4, max_new_tokens=6,
                    temperature=1.0, ppo_epochs=1, report_to='none', disable_tqdm=True, save_strategy='no', seed=0)
    tr = RLTrainer(chat['lm'](), args, [USER(q) for q, _, _ in QA[:2]], processing_class=chat['tok'], reward_funcs=len)
    tr.train()
    assert tr.state.log_history and 'loss' in ''.join(tr.state.log_history[0])

def test_trained_model_stops_at_end_of_turn(chat):
    "A tiny model SFT-trained on one chat answers it greedily and stops at the end-of-turn token (not at EOS, not at the length limit)."
    from social_align.trainers.sft import SFTTrainer, SFTConfig
    from social_align.generation import HFGenerator, stop_token_ids
    tok, prompt = chat['tok'], USER('What is the capital of France?')
    tr = SFTTrainer(chat['lm'](), args=SFTConfig(output_dir=_out(), **{**STEPS, 'max_steps': 40, 'learning_rate': 1e-2}),
                    train_dataset=[{'prompt': prompt, 'completion': 'Paris.'}] * 2, processing_class=tok)
    tr.train()
    gen = HFGenerator(tr.model, tok)
    c = gen.generate([prompt], temperature=0, max_new_tokens=20)[0][0]
    assert (c.text, c.finish_reason) == ('Paris.', 'stop')
    assert c.token_ids[-1] == chat['eot'] and c.token_ids[-1] in stop_token_ids(tok, tr.model)
    assert chat['eot_text'] not in c.text

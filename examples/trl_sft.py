"""GEKOTrainerMixin with TRL's SFTTrainer (the runnable version of the docs' block): a tiny GPT-2
and a word-level tokenizer trained here on prompt/completion rows.

Run: python examples/trl_sft.py  (offline, a few seconds on a CPU; writes ./runs/sft)
"""
import random

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from trl import SFTConfig, SFTTrainer

from geko_torch.hf import GEKOTrainerMixin


class GEKOSFT(GEKOTrainerMixin, SFTTrainer):
    pass


rng = random.Random(0)
rows = []
for _ in range(48):
    a, b = rng.randrange(10), rng.randrange(10)
    rows.append({"prompt": f"add {a} and {b} ?", "completion": f" {a + b} done"})

tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tok.train_from_iterator([r["prompt"] + r["completion"] for r in rows],
                        trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOS]", "[PAD]"]))
tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]", pad_token="[PAD]")
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=len(tokenizer), n_positions=64,
                                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
train = Dataset.from_list(rows)

trainer = GEKOSFT(model=model, args=SFTConfig(output_dir="runs/sft", packing=False, num_train_epochs=2,
                                              per_device_train_batch_size=8, max_length=32, use_cpu=True,
                                              report_to=[], save_strategy="no", learning_rate=5e-3,
                                              dataloader_num_workers=0, disable_tqdm=True),
                  train_dataset=train, processing_class=tokenizer)
trainer.train()
print(trainer.get_efficiency_report())

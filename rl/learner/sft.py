"""Supervised warm start with TRL's SFTTrainer; the result is a plain model RL starts from.

RePrompt and the recommender recipes warm-start from SFT. Merging keeps the RL side unchanged:
rollout workers load the merged model as their base, RL trains a fresh adapter on top, and the
"start" policy of an evaluation is exactly that merged model.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


def sft_progress_line(step: int, max_steps: int, loss: float, elapsed_s: float) -> str:
    """One progress line of the warm start: step, loss, time so far and a linear estimate of the rest."""
    left = elapsed_s / max(step, 1) * (max_steps - step)
    return f"SFT step {step}/{max_steps}: loss {loss:.3f}, {elapsed_s / 60:.1f} min elapsed, ~{left / 60:.1f} min left"


def sft_progress_callback(echo: bool):
    """A ``TrainerCallback`` that writes ``sft_progress_line`` to the log at each of TRL's logging steps (every
    tenth of the run), and to stderr too when ``echo`` (the progress bar is off, so the console would otherwise
    show nothing for the whole stage)."""
    from transformers import TrainerCallback

    class SFTProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                line = sft_progress_line(
                    state.global_step, state.max_steps, logs["loss"], time.perf_counter() - self.start
                )
                logger.info(line)
                if echo:
                    print(line, file=sys.stderr)

    return SFTProgress()


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The text a rollout engine feeds the model: continue a pre-filled assistant turn, else open one."""
    if messages and messages[-1]["role"] == "assistant":
        return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def supervised_split(prompt: str, completion: str, marker: str | None) -> tuple[str, str]:
    """(prompt, completion) as the SFT trains them: the loss covers the completion only. With a ``marker``
    (an env's optional ``prompt_loss_from`` column), the rendered prompt's text after the marker's first
    occurrence moves to the completion, so it is trained too: e.g. every history item's semantic ID given the
    ones before it (genrec's ``sequence`` task), as SASRec trains every position of a sequence. The token
    stream is unchanged; only where the loss starts moves."""
    if not marker:
        return prompt, completion
    at = prompt.find(marker)
    if at < 0:
        raise ValueError(f"SFT row: prompt_loss_from {marker!r} is not in the rendered prompt {prompt[:200]!r}")
    cut = at + len(marker)
    return prompt[:cut], prompt[cut:] + completion


def sft_lora_config(cfg, env, model_path: str):
    """The warm start's LoraConfig. When the env added tokens (``Env.trainable_token_ids``, e.g.
    semantic-ID codes) their embedding rows must learn, so the embedding matrix is trained in full
    (``modules_to_save=["embed_tokens"]``; tied output embeddings follow) and ``merge_and_unload``
    folds it into the saved model. Not PEFT's ``trainable_token_indices`` (only the new rows): TRL
    1.16's SFTTrainer always runs its fused LM head, which reads ``lm_head.bias`` and fails on the
    ``TrainableTokensWrapper`` PEFT puts on a tied ``lm_head`` (tests/envs/test_genrec_env.py)."""
    from peft import LoraConfig

    kwargs = cfg.lora.peft_kwargs()
    token_ids = env.trainable_token_ids(model_path)
    if token_ids:
        kwargs["modules_to_save"] = ["embed_tokens"]
    return LoraConfig(**kwargs)


def sft_training_args(cfg, output_dir: Path):
    """TRL's ``SFTConfig`` for the warm start: ``cfg.sft``'s steps, batch, learning rate and schedule;
    loss on the completion only; no checkpoints (the merged model is saved once at the end)."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        max_steps=cfg.sft.steps,
        per_device_train_batch_size=cfg.sft.batch_size,
        learning_rate=cfg.sft.learning_rate,
        lr_scheduler_type=cfg.sft.lr_scheduler,
        warmup_steps=round(cfg.sft.warmup_ratio * cfg.sft.steps),
        use_cpu=cfg.learner.device == "cpu",
        bf16=False,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=max(1, cfg.sft.steps // 10),
        report_to=[],
        save_strategy="no",
        completion_only_loss=True,
        max_length=None,
        disable_tqdm=not cfg.logging.progress_bar,
        dataset_num_proc=None,
        gradient_checkpointing=cfg.learner.gradient_checkpointing,
        # sft.attention_dropout: the model is loaded with it for the warm start (warm_start saves it without)
        model_init_kwargs={"attention_dropout": cfg.sft.attention_dropout} if cfg.sft.attention_dropout else None,
    )


@contextmanager
def hidden_dropout(model, p: float):
    """Dropout ``p`` on the input embeddings and on each decoder layer's attention and MLP outputs (before
    their residual add) while ``model`` trains: SASRec's and GPT-2's embedding and residual dropout, for
    decoder classes that have none (Qwen2, Llama: only attention dropout). Forward hooks, removed on exit:
    the weights and the saved config are untouched, so the saved model runs without dropout."""
    if not p:
        yield
        return
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel's own model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None or not all(hasattr(layer, "self_attn") and hasattr(layer, "mlp") for layer in layers):
        from rl.config import ConfigError

        raise ConfigError(
            [
                f"sft.hidden_dropout ({p}): {type(base).__name__}'s decoder has no layers with self_attn/mlp submodules "
                "to drop out after; set sft.hidden_dropout=0 for this model"
            ]
        )

    def drop(module, _args, output):  # attention returns (output, weights); embeddings and MLP a tensor
        if not module.training:
            return output
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, training=True), *output[1:])
        return F.dropout(output, p, training=True)

    modules = [base.get_input_embeddings()] + [m for layer in layers for m in (layer.self_attn, layer.mlp)]
    handles = [m.register_forward_hook(drop) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class TeacherForcedLoss:
    """``compute_loss_func`` of the warm start with ``sft.distill_coef`` > 0: the token-mean NLL of the labels
    (what the SFTTrainer computes without it) plus ``coef`` x the mean KL(m_T || π_θ) over the label positions
    where the env's token teacher has a target (``forced_log_probs``: genrec's SASRec through the ID trie, at
    every code of every item that has items before it). Knowledge distillation along the data's own path.
    ``input_ids`` is set per batch by ``_DistillSFTTrainer`` (the loss function itself only gets the labels)."""

    def __init__(self, teacher, coef: float):
        self.teacher, self.coef, self.input_ids = teacher, coef, None
        self.last: dict[str, float] = {}

    def __call__(self, outputs, labels, num_items_in_batch=None):
        import torch
        from transformers.loss.loss_utils import ForCausalLMLoss

        # the causal LM loss transformers' models compute (shifted, token mean, num_items_in_batch aware)
        nll = ForCausalLMLoss(outputs.logits, labels, outputs.logits.shape[-1], num_items_in_batch=num_items_in_batch)
        logits = outputs.logits[:, :-1]  # [B, T-1, V]: position t predicts token t + 1
        target = labels[:, 1:]  # [B, T-1]
        teacher = self.teacher.forced_log_probs(self.input_ids, logits.shape[-1])[:, :-1].to(logits.device)
        where = torch.isfinite(teacher).any(-1) & target.ne(-100)  # [B, T-1]: a label the teacher has a target for
        kd = self.mean_kl(logits, teacher, where)
        self.last = {"nll": float(nll.detach()), "kd": float(kd.detach()), "kd_positions": int(where.sum())}
        return nll + self.coef * kd

    @staticmethod
    def mean_kl(logits, teacher, where):
        """logits, teacher [B, T-1, V], where [B, T-1] -> the mean KL(teacher || policy) over the ``where`` positions,
        computed at those N positions only ([N, V]; a fraction of B x T): the same sum, without the softmax, exp
        and backward over every position of the vocabulary-wide logits."""
        from rl.algos.distill import forward_kl_per_token

        kl, _ = forward_kl_per_token(logits[where], teacher[where])  # [N]
        return kl.sum() / where.sum().clamp(min=1)


def _distill_trainer_class():
    from trl import SFTTrainer

    class _DistillSFTTrainer(SFTTrainer):
        """An SFTTrainer that hands each batch's input ids to its ``TeacherForcedLoss`` and runs one forward per
        step. TRL 1.16's ``SFTTrainer.compute_loss``, given a ``compute_loss_func``, runs a second (no-grad)
        forward through its fused LM head only for its entropy and token-accuracy metrics: 35% of a distilled step
        on full Scientific with item tokens (py-spy). Here the loss's own parts (``nll``, ``kd``) are logged
        instead; the loss and its gradient are the same."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss_func = self.compute_loss_func
            loss_func.input_ids = inputs["input_ids"]
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
            loss = loss_func(outputs, inputs["labels"], num_items_in_batch=num_items_in_batch)
            mode = "train" if model.training else "eval"
            for key in ("nll", "kd"):
                self._metrics[mode][key].append(loss_func.last[key])  # averaged into each log line by TRL
            return (loss, outputs) if return_outputs else loss

    return _DistillSFTTrainer


def sft_trainer(cfg, env, model_path: str, trainer_dir: Path, *, loss_class=None, trainer_class=None):
    """The warm start's ``SFTTrainer`` on ``env.sft_dataset`` and its loss function (None without
    ``sft.distill_coef``). ``loss_class`` / ``trainer_class`` replace the distilled step's two parts
    (``TeacherForcedLoss``, ``_DistillSFTTrainer``): ``bench/distill_sft_step.py`` times the alternatives."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = env.sft_dataset(cfg.sft.num_examples)
    # Plain-text prompt/completion pairs: the prompt is rendered exactly as the rollout engine renders
    # it, so SFT and RL see the same token boundary; the loss covers the completion (and, for rows with a
    # ``prompt_loss_from`` marker, the prompt's text after it: see ``supervised_split``).
    markers = rows["prompt_loss_from"] if "prompt_loss_from" in rows.column_names else [None] * len(rows)
    pairs = [
        supervised_split(render_prompt(tokenizer, m), c + tokenizer.eos_token, marker)
        for m, c, marker in zip(rows["prompt"], rows["completion"], markers, strict=True)
    ]
    data = Dataset.from_dict({"prompt": [p for p, _ in pairs], "completion": [c for _, c in pairs]})
    loss_func = None
    if cfg.sft.distill_coef > 0:  # preflight checked that the env has a token teacher
        from rl.registry import import_object

        target, kwargs = env.token_teacher(trainer_dir.parent)
        teacher = import_object(target, what="env token_teacher")(tokenizer, **kwargs)
        loss_func = (loss_class or TeacherForcedLoss)(teacher, cfg.sft.distill_coef)
    if trainer_class is None:
        trainer_class = SFTTrainer if loss_func is None else _distill_trainer_class()
    trainer = trainer_class(
        model=model_path,
        args=sft_training_args(cfg, trainer_dir),
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=sft_lora_config(cfg, env, model_path) if cfg.sft.lora else None,
        compute_loss_func=loss_func,
    )
    return trainer, loss_func


def warm_start(cfg, env, model_path: str, out_dir: Path) -> str:
    """SFT ``model_path`` on ``env.sft_dataset``; save the merged model + tokenizer to ``out_dir``."""
    trainer, loss_func = sft_trainer(cfg, env, model_path, out_dir.parent / "sft_trainer")
    tokenizer = trainer.processing_class
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # no raw loss dicts on the console: SFTProgress writes readable lines
    trainer.add_callback(sft_progress_callback(echo=not cfg.logging.progress_bar))
    with hidden_dropout(trainer.model, cfg.sft.hidden_dropout):
        runtime_s = trainer.train().metrics["train_runtime"]  # the Trainer's own wall time of the loop
    merged = trainer.model.merge_and_unload() if cfg.sft.lora else trainer.model
    if cfg.sft.attention_dropout:
        merged.config.attention_dropout = 0.0  # dropout was the warm start's regulariser; RL and eval run without
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    msg = f"SFT warm start: {cfg.sft.steps} steps in {runtime_s / 60:.1f} min, loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    if loss_func is not None:
        msg += f" (last batch: NLL {loss_func.last['nll']:.3f}, KL to the teacher {loss_func.last['kd']:.3f})"
    logger.info(msg)
    print(msg, file=sys.stderr)  # the stage's one line with its wall time, bar or no bar
    return str(out_dir)

"""The moment a training step peaks, and what is alive then (the refined model's peak).

A step as Lightning runs it has three candidate moments; the peak is the largest, and the
components are what each holds (they sum to it). Per device, with P, G, O the parameter,
gradient and optimizer-state bytes, A the activations the forward saved, and b·s·V the logits:

- ``forward``: the previous step's gradients are still alive (Lightning calls ``zero_grad``
  after ``training_step``), beside the largest tensors the forward makes and does not save: the
  logits and their fp32 copy when the loss upcasts them, or, for a small vocabulary and attention
  that materialises its scores, the last layer's raw scores: P + G + O + A + max(logits, scores),
  plus, where the loop keeps the last micro-batch's outputs (``keeps_outputs``), what they hold.
- ``backward``: ``zero_grad`` has freed G; the loss's backward holds the gradient of the
  log-probabilities and of the logits, both fp32, beside the log-probabilities themselves (in A):
  P + O + A + 2 · 4·b·s·V; or, where it is larger, the last layer's MLP gradients (``Computing``).
- a layer computing (``Computing.forward``): what it holds only meanwhile, a dequantised 4-bit
  weight or gathered expert weights, beside every saved activation: P + G + O + A + that.
- ``optimizer``: the activations are gone, every gradient exists, and the step makes its
  temporaries: P + G + O + T (``optimizer_temporary_bytes``).

What outlives its use (``Held``) joins these: logits the loop keeps, and what old bitsandbytes keeps
until the graph is freed (``layer.held``).

Each loss tensor was read off real CPU steps of Hugging Face models (``bench/accuracy.py``
measures the whole peak against ``torch.profiler``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from llmops.spec.choices import CHECKPOINTED, SHARDED
from llmops.spec.training import TrainingSpec
from llmops.units import get_precision

FP32 = 4
ADAM_FAMILY = ("adamw", "adam", "adamw-amsgrad", "adam-amsgrad")


@dataclass(frozen=True)
class Moment:
    """What one moment of the step holds, per device."""

    phase: str
    params: Fraction
    grads: Fraction
    optimizer_states: Fraction
    activations: Fraction
    temporaries: Fraction

    @property
    def total(self) -> Fraction:
        return self.params + self.grads + self.optimizer_states + self.activations + self.temporaries


def loss_value_bytes(spec: TrainingSpec) -> Fraction:
    """Bytes per value of the loss's tensors (log-probabilities and their gradients): fp32 where the
    loss upcasts or autocast runs cross-entropy in fp32, else the compute dtype (``*-true``)."""
    prec = get_precision(spec.precision)
    return Fraction(FP32) if spec.loss_upcast or not prec.name.endswith("-true") else prec.compute_bytes


def logits_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """Forward: the logits (compute dtype; nothing saves them, the loss saves its log-probabilities) and,
    where the loss upcasts 2-byte logits (Hugging Face's ``logits.float()``, autocast's fp32
    cross-entropy), their fp32 copy, alive while ``log_softmax`` runs."""
    if not spec.vocab or not spec.seq_len:
        return Fraction(0)
    p = get_precision(spec.precision).compute_bytes
    copy = loss_value_bytes(spec) if loss_value_bytes(spec) != p else 0
    return (p + copy) * b * spec.seq_len * spec.vocab / spec.tensor_parallel


def attention_scores_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """Forward: attention that materialises its s×s scores holds some before softmax that nothing
    saves. Plain attention: ``q·kᵀ`` and its scaled, masked copy at once, 2 · a·s²·b values of the
    compute dtype; the CPU's math path of SDPA with dropout: one fp32 copy. Fused kernels hold none."""
    s, a = spec.seq_len or 0, spec.heads or 0
    math_sdpa = spec.attention == "sdpa" and spec.dropout and spec.device == "cpu"
    if spec.attention != "plain" and not math_sdpa:
        return Fraction(0)
    if math_sdpa:  # its scores are saved in fp32 (layer.layer_activation_bytes); the unsaved raw ones once
        return Fraction(FP32 * a * s * s * b, spec.tensor_parallel)
    return 2 * get_precision(spec.precision).compute_bytes * a * s * s * b / spec.tensor_parallel


def loss_grad_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """Backward of the loss: the gradients of the log-probabilities and of the logits (the loss's
    dtype), alive together while ``log_softmax``'s backward runs."""
    if not spec.vocab or not spec.seq_len:
        return Fraction(0)
    return 2 * loss_value_bytes(spec) * b * spec.seq_len * spec.vocab / spec.tensor_parallel


def largest_trainable(spec: TrainingSpec) -> int:
    """Elements of the largest trainable parameter tensor: the embedding or the output head (V·h),
    else an MLP or attention matrix; ``spec.largest_param`` when the run said."""
    if spec.largest_param is not None:
        return spec.largest_param
    if spec.trainable_params is not None and spec.params is not None and spec.trainable_params < spec.params:
        return 0  # adapters: small matrices; the frozen base makes no temporaries
    h, f = spec.hidden or 0, spec.ffn_hidden or 4 * (spec.hidden or 0)
    return max((spec.vocab or 0) * h, spec.expert_ffn() * h if spec.experts > 1 else f * h, h * h)


def optimizer_temporary_bytes(spec: TrainingSpec, trainable: int) -> Fraction:
    """Temporaries of the optimizer step, per device.

    Adam(W) computes ``exp_avg_sq.sqrt() / bias_correction`` before adding eps: on the CPU it runs
    one tensor at a time (PyTorch's for-loop default there), so two copies of the largest tensor;
    on CUDA the foreach default builds that square root for every parameter at once, one
    state-sized list. SGD and the one-state optimizers update in place.
    """
    if spec.optimizer not in ADAM_FAMILY:
        return Fraction(0)
    state = get_precision(spec.precision).state_bytes
    if spec.device == "cpu":
        return Fraction(2 * state * largest_trainable(spec), spec.tensor_parallel)
    size = state * trainable / spec.tensor_parallel
    return size / spec.world_size if "optimizer_states" in SHARDED[spec.strategy] else size


@dataclass(frozen=True)
class Rebuild:
    """Under checkpointing: the one layer backward rebuilds at a time (its activations, the gradients
    flowing through it), and what backward has freed by the time it rebuilds the first layer (every later
    layer's checkpoint and the head's saved tensors)."""

    layer: Fraction = Fraction(0)
    freed: Fraction = Fraction(0)


@dataclass(frozen=True)
class Gathered:
    """Under FSDP: the unsharded parameters held beside the shards while the forward and backward run (the
    root's and the gathered layers'), and one layer's unsharded gradients before their reduce-scatter."""

    params: Fraction = Fraction(0)
    grads: Fraction = Fraction(0)


@dataclass(frozen=True)
class Computing:
    """What one layer holds only while it computes, beside the activations (``experts.computing``): in
    forward, each a moment of its own (a dequantised weight, gathered expert weights); in backward, the
    gradients through the widest part of the last layer's MLP, beside the loss's gradients or after them."""

    forward: tuple[Fraction, ...] = ()
    backward: Fraction = Fraction(0)


@dataclass(frozen=True)
class Held:
    """What a step holds past its use: ``outputs``, the logits the loop keeps (through backward and the
    optimizer step); ``graph``, what the step's graph keeps past backward (through the optimizer step);
    ``previous``, what the last micro-batch left alive through this forward."""

    outputs: Fraction = Fraction(0)
    graph: Fraction = Fraction(0)
    previous: Fraction = Fraction(0)


def moments(spec: TrainingSpec, states: dict[str, Fraction], activations: Fraction, b: int,
            trainable: int, rebuild: Rebuild = Rebuild(), cached: Fraction = Fraction(0),
            gathered: Gathered = Gathered(), held: Held = Held(), computing: Computing = Computing()) -> list[Moment]:
    """The step's candidate moments for ``b`` samples; ``states`` are per-device P, G, O; ``cached``:
    what the forward holds and frees at its end without saving it (autocast's weight cache); ``held``:
    what outlives its use (``layer.held``); ``computing``: what one layer holds only while it computes."""
    P, G, S = (states.get(k, Fraction(0)) for k in ("params", "grads", "optimizer_states"))
    Pg, Gg = P + gathered.params, gathered.grads  # the optimizer step runs on the shards alone
    found = [
        # the forward's largest unsaved tensors: the logits at its end, or the last layer's attention scores
        Moment("forward", Pg, G, S,
               activations + cached + held.previous + max(logits_bytes(spec, b), attention_scores_bytes(spec, b)),
               Fraction(0)),
        Moment("backward", Pg, Fraction(0), S, activations + held.outputs,
               max(loss_grad_bytes(spec, b), computing.backward)),
        # a layer computing (a quantised head at the forward's end): at most every saved activation, and what it
        # holds meanwhile; the loss's tensors are not made yet (or, in backward, already freed)
        *(Moment("forward", Pg, G, S, activations + cached + held.previous, t) for t in computing.forward),
        Moment("optimizer", P, G, S, held.outputs + held.graph, optimizer_temporary_bytes(spec, trainable)),
    ]
    if Gg:  # the last layer's gradients, unsharded, beside every activation
        found.append(Moment("backward", Pg, Gg, S, activations + held.outputs, Fraction(0)))
    if spec.recompute in CHECKPOINTED:
        # Backward rebuilds the last layer first, beside every layer's checkpoint, and the first layer
        # last, when the later layers' gradients exist and their checkpoints are freed. Between the two
        # the held bytes change linearly, layer by layer, so these ends bound them.
        L = spec.layers or 1
        found.append(Moment("backward", Pg, Gg, S, activations + held.outputs, rebuild.layer))
        found.append(Moment("backward", Pg, G * (L - 1) / L + Gg, S, activations + held.outputs - rebuild.freed,
                            rebuild.layer))
    return found


def peak_moment(spec: TrainingSpec, states: dict[str, Fraction], activations: Fraction, b: int,
                trainable: int, rebuild: Rebuild = Rebuild(), cached: Fraction = Fraction(0),
                gathered: Gathered = Gathered(), held: Held = Held(), computing: Computing = Computing()) -> Moment:
    """The largest of ``moments``: the step's peak, and what holds it."""
    return max(moments(spec, states, activations, b, trainable, rebuild, cached, gathered, held, computing),
               key=lambda m: m.total)


def max_batch_moments(spec: TrainingSpec, states: dict[str, Fraction], act: tuple[Fraction, Fraction],
                      trainable: int, rebuild: tuple[Rebuild, Rebuild], room: Fraction,
                      cached: Fraction = Fraction(0), gathered: Gathered = Gathered(),
                      held: tuple[Held, Held] = (Held(), Held()),
                      computing: tuple[Computing, Computing] = (Computing(), Computing())) -> int:
    """The largest ``b`` whose every moment fits in ``room`` (budget less overhead); each moment is
    linear in b (``act = (fixed, per_sample)``, ``rebuild``, ``held`` and ``computing`` at b = 0 and 1), so each gives
    ``floor((room − at b=0) / slope)``."""
    fixed, per_sample = act
    at0 = moments(spec, states, fixed, 0, trainable, rebuild[0], cached, gathered, held[0], computing[0])
    at1 = moments(spec, states, fixed + per_sample, 1, trainable, rebuild[1], cached, gathered, held[1], computing[1])
    best: int | None = None
    for m0, m1 in zip(at0, at1, strict=True):
        slope = m1.total - m0.total
        if m0.total > room:
            return 0
        if slope > 0:
            limit = int((room - m0.total) // slope)
            best = limit if best is None else min(best, limit)
    return best if best is not None else 0

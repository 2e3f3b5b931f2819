"""Tensor-parallel communication: the collectives vLLM issues per forward step, and their alpha-beta cost.

Count (vLLM 0.26-0.32 model code, per step, tensor-parallel degree t > 1):
  all-reduce  after the vocab-parallel embedding (VocabParallelEmbedding, reduce_results=True)   1
              after attention's output projection (RowParallelLinear o_proj)                     1 per layer
              after the MLP (RowParallelLinear down_proj) or the fused MoE's output (MoERunner)   1 per layer
  all-gather  of the logits (LogitsProcessor._gather_logits; all-gather on every platform)        1
so 2L + 1 all-reduces of tokens x hidden activations and one all-gather of rows x vocab logits.
A shared expert is summed into the fused output before that one all-reduce. Pipeline stages split
the layers, not the count, and add one send of tokens x hidden per stage boundary.

Cost of one collective (the alpha-beta model nccl-tests reports against): latency alpha plus the
bytes each rank must move over the bus bandwidth B,
  all-reduce of S bytes:          alpha + 2 (t - 1) / t * S / B
  all-gather into S bytes:        alpha + (t - 1) / t * S / B
alpha and B are properties of the interconnect (Ceilings.collective_latency_s and
Ceilings.interconnect_bytes_per_s): measured by `llmprobe roofline` on 2+ GPUs, else the catalog's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import ModelSpec


@dataclass(frozen=True)
class Collectives:
    """The collectives of one forward step on one rank."""
    allreduces: int      # each over tokens x hidden activations
    allgathers: int      # each over rows x vocab logits
    sends: int           # pipeline-stage boundaries, each tokens x hidden


def collectives(model: ModelSpec, tp: int, pp: int = 1) -> Collectives:
    """What vLLM's tensor-parallel layers issue in one step (module docstring), dense or MoE alike."""
    if tp <= 1:
        return Collectives(0, 0, pp - 1)
    return Collectives(allreduces=2 * model.num_layers + 1, allgathers=1, sends=pp - 1)


def allreduce_factor(tp: int) -> float:
    """Bytes each rank moves per byte reduced, in a ring: 2 (t - 1) / t (nccl-tests' bus-bandwidth factor)."""
    return 2 * (tp - 1) / tp


def allgather_factor(tp: int) -> float:
    return (tp - 1) / tp


@dataclass(frozen=True)
class Interconnect:
    """What a collective costs on this link: alpha (s per call) and the bus bandwidth B (B/s)."""
    latency_s: float
    bus_bytes_per_s: float
    # False (llmprobe): a call pays its latency, then moves its bytes. True: whichever is longer
    # (llm-analysis' assumption, kept to cross-check against it; docs/model.md says why not by default).
    latency_hides_transfer: bool = False

    def _one(self, moved_bytes: float) -> float:
        t = moved_bytes / self.bus_bytes_per_s
        return max(self.latency_s, t) if self.latency_hides_transfer else self.latency_s + t

    def allreduce_s(self, nbytes: float, tp: int) -> float:
        return self._one(allreduce_factor(tp) * nbytes) if tp > 1 else 0.0

    def allgather_s(self, nbytes: float, tp: int) -> float:
        return self._one(allgather_factor(tp) * nbytes) if tp > 1 else 0.0


def step_comm_s(n: Collectives, link: Interconnect, tp: int, allreduce_bytes: float, allgather_bytes: float) -> float:
    """One step's collectives: ``n.allreduces`` calls of ``allreduce_bytes`` each, ``n.allgathers`` of
    ``allgather_bytes`` each (pipeline sends are not priced: the floors model one stage)."""
    return n.allreduces * link.allreduce_s(allreduce_bytes, tp) + n.allgathers * link.allgather_s(allgather_bytes, tp)

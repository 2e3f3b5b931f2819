"""What tables and charts call the parts of a step's time and the kernel classes, in which order and colour.

Words and colours only: the numbers they label come from explain.py and traces.py.
"""

# The parts of a phase's time (explain.run_breakdown's keys), grouped as tables and charts show them, in this order.
PART_GROUPS = [
    ("floor: weights", ("weights_s",)),
    ("floor: KV cache", ("kv_read_s", "kv_write_s")),
    ("floor: FLOPs", ("linear_flops_s", "attention_flops_s")),
    ("floor: communication", ("comm_s",)),
    ("above floor (in step)", ("above_floor_s",)),
    ("host in step", ("host_in_step_s",)),
    ("host between steps", ("host_between_steps_s",)),
    ("mixed steps", ("mixed_steps_s",)),
]
PART_COLOURS = {"floor: weights": "#1f77b4", "floor: KV cache": "#17becf", "floor: FLOPs": "#2ca02c",
                "floor: communication": "#9467bd", "above floor (in step)": "#ff7f0e", "host in step": "#d62728",
                "host between steps": "#8c564b", "mixed steps": "#7f7f7f"}

# The kernel classes of traces.CLASSES, and the two rows explain adds (host time; what no kernel covers).
CLASS_LABELS = {"dense_gemm": "dense GEMMs", "lm_head": "LM head", "moe_routing": "MoE routing",
                "moe_experts": "MoE expert GEMMs", "attention": "attention", "elementwise": "elementwise",
                "communication": "communication", "sampling": "sampling", "memcpy": "memory copies",
                "host": "host (the engine's Python)", "other": "other (unclassified)",
                "unattributed": "unattributed (host gaps, launches, idle)"}
CLASS_COLOURS = {"dense_gemm": "#1f77b4", "lm_head": "#aec7e8", "moe_routing": "#ffbb78", "moe_experts": "#ff7f0e",
                 "attention": "#2ca02c", "elementwise": "#98df8a", "communication": "#9467bd", "sampling": "#c5b0d5",
                 "memcpy": "#8c564b", "host": "#e377c2", "other": "#7f7f7f", "unattributed": "#d9d9d9"}
# a priced row's kind (compare): measured on the card, or predicted from other runs
KIND_COLOURS = {"measured": "#1f77b4", "predicted": "#ff7f0e"}
BOUND_NAMES = {"memory": "memory bandwidth", "hbm": "HBM bandwidth", "compute": "peak FLOP/s",
               "communication": "the collectives' floor"}


def headline(h: dict | None, phase: str) -> str | None:
    """The class furthest above its own floor (explain's ``kernels.headline``), in words."""
    if not h:
        return None
    return (f"{CLASS_LABELS[h['class']]} at {h['efficiency']:.0%} of {BOUND_NAMES[h['bound']]}"
            + (f": {h['share_of_gap']:.0%} of the {phase} gap" if h["share_of_gap"] is not None else ""))

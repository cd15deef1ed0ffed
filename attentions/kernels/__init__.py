"""Triton kernels for the DBRA/BRA hot path, registered as torch custom ops (namespace ``attentions``).

* :func:`routed_attention_triton` (``attentions::routed_attention``): queries of each region attend to their top-k
  routed key regions, K/V read by index (no gather); same contract as :func:`attentions.routing.routed_attention`.
* :func:`pixel_agent_attention_triton` (``attentions::pixel_agent_attention``): every pixel against all agents,
  with DBRA's bilinear RPE-table bias computed on the fly; same contract as
  :func:`attentions.deformable.pixel_to_agent_attention_torch`.

They run on CUDA tensors, or on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1`` set before this
package is first imported). Design, tolerances and benchmarks: ``docs/kernels.md``.
"""
from .pixel_agent_attention import pixel_agent_attention_macs, pixel_agent_attention_triton
from .routed_attention import routed_attention_macs, routed_attention_triton

__all__ = [
    "routed_attention_triton",
    "routed_attention_macs",
    "pixel_agent_attention_triton",
    "pixel_agent_attention_macs",
]

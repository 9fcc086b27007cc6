r"""Zero-shot HSA inside pre-trained Hugging Face transformers: patch chosen
self-attention layers (:func:`patch_model`), build token hierarchies
(:mod:`~hsa_graph.zero_shot.builders`) and count attention FLOPs
(:mod:`~hsa_graph.zero_shot.flops`)."""
from .builders import (SentenceHierarchyBuilder, check_token_hierarchy,
                       flat_hierarchy, sentence_hierarchy, sequence_ends,
                       window_hierarchy)
from .flops import (attention_flops_report, hsa_attention_flops,
                    softmax_attention_flops)
from .patch import HSAPatch, find_self_attention_layers, patch_model

__all__ = ['patch_model', 'HSAPatch', 'find_self_attention_layers',
           'flat_hierarchy', 'window_hierarchy', 'sentence_hierarchy',
           'sequence_ends', 'SentenceHierarchyBuilder', 'check_token_hierarchy',
           'softmax_attention_flops', 'hsa_attention_flops',
           'attention_flops_report']

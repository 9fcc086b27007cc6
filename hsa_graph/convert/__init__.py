r"""Converters from users' data (graphs, point clouds, meshes, images,
documents) to :class:`~hsa_graph.Hierarchy`, one module per input kind."""
from .compose import compose_hierarchies
from .graph import hierarchy_from_graph
from .image import from_image
from .mesh import from_mesh
from .mesh_io import read_mesh
from .networkx import from_networkx, to_networkx
from .point_cloud import from_point_cloud
from .document import (DocumentToHierarchy, Vocabulary, flatten_hierarchy,
                       from_document)

__all__ = ['from_networkx', 'to_networkx', 'hierarchy_from_graph',
           'from_point_cloud', 'from_mesh', 'read_mesh', 'from_image',
           'compose_hierarchies']
__all__ += ['from_document', 'DocumentToHierarchy', 'flatten_hierarchy',
            'Vocabulary']

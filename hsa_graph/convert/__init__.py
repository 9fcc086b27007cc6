from .document import (DocumentToHierarchy, Vocabulary, flatten_hierarchy,
                       from_document)

__all__ = []
__all__ += ['from_document', 'DocumentToHierarchy', 'flatten_hierarchy',
            'Vocabulary']

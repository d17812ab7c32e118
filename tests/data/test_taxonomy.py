"""Universal taxonomy: file validation, relabelling, universal -> dataset probabilities,
the `multi` dataset on real CamVid + Cityscapes, and the eval.taxonomy inference hook."""

from _testlib import tiny_demo_config
import flax.nnx as nnx
import jax
import ml_collections
import numpy as np
import pytest

from jaxseg import data as data_lib
from jaxseg.data import taxonomy as T
from jaxseg.data.datasets import get_class_table
from jaxseg.data.datasets import get_dataset
from jaxseg.data.datasets import multi
from jaxseg.data.datasets.ade20k import ade20k_table
from jaxseg.data.datasets.camvid import CAMVID_CLASSES
from jaxseg.data.datasets.camvid import camvid_table
from jaxseg.data.datasets.cityscapes import cityscapes_table
from jaxseg.data.datasets.kitti import kitti_table
from jaxseg.data.datasets.mapillary import mapillary_table
from jaxseg.data.datasets.pascal_context import pascal_context_table
from jaxseg.data.datasets.voc import voc_table
from jaxseg.inference import model as inference_model
from jaxseg.models import registry
from jaxseg.runtime import variables

TABLES = {"cityscapes": cityscapes_table(), "kitti": kitti_table(),
          "camvid": camvid_table(), "mapillary": mapillary_table(),
          "ade20k": ade20k_table(), "voc": voc_table(),
          "pascal_context": pascal_context_table(59),
          "pascal_context60": pascal_context_table(60)}


def test_builtin_universal_taxonomy_covers_every_dataset():
  tax = T.load_taxonomy("universal")
  assert tax.datasets() == sorted(TABLES)
  assert tax.class_names[:19] == cityscapes_table().class_names
  idx = tax.index()
  for name, table in TABLES.items():
    m = T.load_mapping(tax, name, table.class_names)
    assert len(m.targets) == table.num_classes
  cs = T.load_mapping(tax, "cityscapes", TABLES["cityscapes"].class_names)
  np.testing.assert_array_equal(cs.train_lut()[:19], np.arange(19))
  camvid = T.load_mapping(tax, "camvid", TABLES["camvid"].class_names)
  assert camvid.targets[1] == tuple(idx[n] for n in ("building", "wall", "bridge", "tunnel"))
  assert camvid.train_targets[1] == idx["building"] and camvid.train_targets[10] is None
  voc = T.load_mapping(tax, "voc", TABLES["voc"].class_names)
  named = {u for t in voc.targets[1:] for u in t}
  assert set(voc.targets[0]) == set(range(tax.num_classes)) - named  # '@rest'
  assert voc.train_targets[0] is None
  mapillary = T.load_mapping(tax, "mapillary", TABLES["mapillary"].class_names)
  assert "Ego Vehicle" in mapillary.unrepresented


def write_taxonomy(root, classes, **datasets):
  root.mkdir(exist_ok=True)
  (root / "classes.tsv").write_text("# name\tcolour\n" + "".join(
      f"{n}\t{i},{i},{i}\n" for i, n in enumerate(classes)))
  for name, text in datasets.items():
    (root / f"{name}.tsv").write_text(text)
  return str(root)


@pytest.mark.parametrize("text, pattern", [
    ("a\tsky\n", r"toy\.tsv: dataset 'toy' classes without a row: \['b', 'c'\]"),
    ("a\tsky\nb\tgrass\nc\tignore\n", r"toy\.tsv:2: dataset class 'b' maps to unknown "
                                       r"universal class 'grass'"),
    ("a\tsky\nb\tsky\na\tground\nc\tignore\n", r"toy\.tsv:3: dataset class 'a' is mapped "
                                                r"twice \(first on line 1\)"),
    ("a\tsky\nx\tsky\n", r"toy\.tsv:2: 'x' is not a class of dataset 'toy'"),
    ("a\tsky,ground\tcar\nb\tsky\nc\tsky\n", r"toy\.tsv:1: dataset class 'a': training "
                                             r"target 'car'"),
    ("a\tsky,ignore\nb\tsky\nc\tsky\n", r"toy\.tsv:1: dataset class 'a': 'ignore' must "
                                        r"stand alone"),
    ("a\t@rest\nb\t@rest\nc\tsky\n", r"toy\.tsv:2: '@rest' is used twice"),
])
def test_mapping_errors_name_file_line_and_class(tmp_path, text, pattern):
  root = write_taxonomy(tmp_path / "tax", ["sky", "ground", "car"], toy=text)
  with pytest.raises(T.TaxonomyError, match=pattern):
    T.load_mapping(root, "toy", ["a", "b", "c"])


def test_classes_file_errors(tmp_path):
  (tmp_path / "classes.tsv").write_text("sky\t1,2,3\nroad\t4,5,6\nsky\t7,8,9\n")
  with pytest.raises(T.TaxonomyError, match=r"classes\.tsv:3: universal class 'sky' is listed "
                                            r"twice \(first on line 1\)"):
    T.load_taxonomy(str(tmp_path))
  (tmp_path / "classes.tsv").write_text("sky\t1,2\n")
  with pytest.raises(T.TaxonomyError, match=r"classes\.tsv:1: colour of universal class 'sky'"):
    T.load_taxonomy(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="taxonomy 'nope' not found.*universal"):
    T.load_taxonomy("nope")
  with pytest.raises(FileNotFoundError, match="no mapping for dataset 'toy'"):
    T.load_mapping("universal", "toy", ["a"])


def test_lut_relabel_and_multi_target_rows(tmp_path):
  root = write_taxonomy(tmp_path / "tax", ["sky", "ground", "car", "truck"],
                        toy="a\tground\nb\tcar,truck\tcar\nc\tcar,truck\nd\tignore\ne\t@rest\n")
  m = T.load_mapping(root, "toy", ["a", "b", "c", "d", "e"])
  assert m.targets == ((1,), (2, 3), (2, 3), (), (0,))
  assert m.train_targets == (1, 2, None, None, None) and m.unrepresented == ("d",)
  label = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
  np.testing.assert_array_equal(T.relabel(label, m.train_lut()), [[1, 2, 255], [255, 255, 255]])
  np.testing.assert_array_equal(m.eval_matrix(), [[0, 0, 0, 0, 1], [1, 0, 0, 0, 0],
                                                  [0, 1, 1, 0, 0], [0, 1, 1, 0, 0]])


def test_universal_to_dataset_log_probs_hand_example():
  # 4 universal classes; dataset class 0 <- {u0}, 1 <- {u1, u2}, 2 <- nothing.
  m = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 0]], np.float32)
  logits = np.array([[np.log(1.0), np.log(2.0), np.log(3.0), np.log(4.0)],
                     [0.0, 0.0, 0.0, 100.0]], np.float32)
  out = np.asarray(T.universal_to_dataset_log_probs(logits, m))
  tiny = np.log(np.finfo(np.float32).tiny)
  # The empty class: log(tiny) below the best mapped class (u2, log-probability log 0.3).
  np.testing.assert_allclose(out[0], [np.log(1 / 10), np.log(5 / 10), tiny + np.log(0.3)],
                             rtol=1e-6)
  # An unmapped universal class dominates by 100 nats: the mapped ones keep their exact
  # log-probabilities (no underflow to a tie); the empty class sits log(tiny) below them.
  np.testing.assert_allclose(out[1], [-100.0, np.log(2.0) - 100.0, tiny - 100.0], rtol=1e-5)
  chw = np.asarray(T.universal_to_dataset_log_probs(logits.T[None], m, axis=1))
  np.testing.assert_allclose(chw[0].T, out, rtol=1e-6)


def multi_cfg(data, **sources):
  c = data_lib.defaults.data_config()
  c.name = "multi"
  c.crop_size = 32
  c.read_num_threads = 1
  c.multi.sources = ml_collections.ConfigDict(sources)
  return c


def test_multi_dataset_real_camvid_cityscapes(shared_data):
  c = multi_cfg(shared_data,
                camvid={"root": str(shared_data / "camvid"), "repeat": 0.02},
                cityscapes={"root": str(shared_data / "cityscapes"), "repeat": 2.0})
  tax = T.load_taxonomy("universal")
  assert get_class_table(c).class_names == tax.class_names
  ds = get_dataset(c, "train")
  assert [p.key for p in ds.parts] == ["camvid", "cityscapes"]
  assert len(ds) == round(367 * 0.02) + 2 * 8
  camvid_ds = get_dataset(ml_collections.ConfigDict(
      {"name": "camvid", "root": str(shared_data / "camvid")}), "train")
  key, j = ds.source_of(0)
  assert key == "camvid" and ds.records[0] == camvid_ds.records[j]
  sample = ds[0]
  own = camvid_ds.read_label(j)
  idx = tax.index()
  expect = {1: idx["building"], 3: idx["road"], 5: idx["vegetation"], 6: 255, 10: 255}
  for k, u in expect.items():
    assert np.all(sample["label"][own == k] == u)
  assert (own == 1).any() and (own == 3).any()
  cs = sample_cs = ds[len(ds) - 1]
  assert ds.source_of(len(ds) - 1)[0] == "cityscapes"
  cs_ids = set(np.unique(sample_cs["label"]).tolist()) - {255}
  assert cs_ids and cs_ids <= set(range(19)) and cs["image"].shape == (1024, 2048, 3)
  val = get_dataset(c, "val")  # every image once: CamVid val + the Cityscapes val frame
  assert len(val) == 101 + 1
  c.multi.sources.camvid.weight = 3.0
  with pytest.raises(ValueError, match=r"weight is set for some sources but not for "
                                       r"\['cityscapes'\]"):
    get_dataset(c, "train")
  c.multi.sources.cityscapes.weight = 1.0
  weighted = get_dataset(c, "train")  # 3:1 shares of 367 + 8 samples
  assert [len(p.indices) for p in weighted.parts] == [281, 94]


def test_multi_dataset_errors_and_loader(shared_data):
  c = multi_cfg(shared_data, camvid={"root": str(shared_data / "camvid"), "rooot": "x"})
  with pytest.raises(ValueError, match=r"sources\.camvid: unknown field\(s\) \['rooot'\]"):
    get_dataset(c, "train")
  c = multi_cfg(shared_data, camvid={"root": str(shared_data / "nope")})
  with pytest.raises(FileNotFoundError, match=r"sources\.camvid \(camvid.*CamVid root not"):
    get_dataset(c, "train")
  np.testing.assert_array_equal(multi.repeat_indices(4, 1.5), [0, 1, 2, 3, 0, 2])
  c = multi_cfg(shared_data, camvid={"root": str(shared_data / "camvid"), "repeat": 0.01})
  loader = data_lib.build_train_loader(c, global_batch_size=2, seed=0, process_index=0,
                                             process_count=1)
  batch = next(loader)
  loader.close()
  allowed = {t for t in T.load_mapping("universal", "camvid", CAMVID_CLASSES).train_targets
             if t is not None} | {255}
  assert batch["label"].shape == (2, 32, 32)
  assert set(np.unique(batch["label"]).tolist()) <= allowed


def test_eval_taxonomy_hook_maps_universal_logits(tmp_path):
  config = tiny_demo_config()
  names = get_class_table(config.data).class_names
  rows = "".join(f'{n}\t{"u0,u1" if i == 0 else "ignore" if i == 1 else f"u{i}"}\n'
                 for i, n in enumerate(names))
  root = write_taxonomy(tmp_path / "tax", [f"u{i}" for i in range(len(names) + 1)],
                        synthetic=rows)
  assert inference_model.eval_taxonomy_mapping(config) is None
  config.eval.taxonomy = root
  with pytest.raises(ValueError, match="set both"):
    inference_model.model_num_classes(config, len(names))
  config.eval.taxonomy_dataset = "synthetic"
  assert inference_model.model_num_classes(config, len(names)) == len(names) + 1
  _, apply_fn = inference_model.build_apply_fn(config, len(names))
  model = registry.from_config(config, len(names) + 1, rngs=nnx.Rngs(3))
  params, stats = variables.model_variables(model)
  x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
  out = np.asarray(apply_fn({"params": params, "batch_stats": stats}, x))
  universal = model(x, train=False)
  m = inference_model.eval_taxonomy_mapping(config).eval_matrix()
  np.testing.assert_allclose(out, T.universal_to_dataset_log_probs(universal, m), atol=1e-5)
  p = np.exp(np.asarray(jax.nn.log_softmax(universal)))
  np.testing.assert_allclose(np.exp(out[..., 0]), p[..., 0] + p[..., 1], rtol=1e-4)
  assert out.shape == (1, 32, 32, len(names)) and np.isfinite(out).all()

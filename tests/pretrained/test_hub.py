"""Tests for jaxseg.pretrained: the catalog, the resumable verified download (against a local
HTTP server on 127.0.0.1, never the network), Google-Drive confirm pages, the offline message,
and `python -m jaxseg.pretrained get` converting a torch-written tiny model."""
import collections
import hashlib
import http.server
import io
import pathlib
import re
import shutil
import socket
import threading
import urllib.parse

import numpy as np
import pytest

from jaxseg.data.datasets.tables import BUILTIN_TABLES
from jaxseg.pretrained import __main__ as cli
from jaxseg.pretrained import catalog
from jaxseg.pretrained import download
from jaxseg.pretrained import hub

_MODEL = "DeepR18V3PlusD_m1"
_OVERRIDES = {"width_multiplier": 0.0625}
_CLASSES = 3
_NAME = "test/tiny-r18"


# --- a local server: files with Range support, a cut connection, Drive-style confirm pages ---

class _State:
  def __init__(self, payload: bytes):
    self.payload = payload
    self.cut_next = 0  # > 0: the next full answer stops after this many bytes.
    self.ranges = True  # Honour Range headers.
    self.drive = "form"  # The confirm page /uc answers with: form | cookie | link.
    self.requests: list[tuple[str, str | None]] = []  # (path?query, Range header)


class _Handler(http.server.BaseHTTPRequestHandler):
  state: _State

  def log_message(self, *args):  # Quiet test output.
    pass

  def do_GET(self):
    state = self.state
    state.requests.append((self.path, self.headers.get("Range")))
    url = urllib.parse.urlsplit(self.path)
    query = dict(urllib.parse.parse_qsl(url.query))
    if url.path == "/files/tiny.pth":
      return self._file()
    if url.path == "/uc" and query.get("confirm") == "TOKEN":
      return self._file()
    if url.path == "/uc":
      return self._confirm_page(query["id"])
    if url.path == "/usercontent" and query.get("confirm") == "t" and query.get("uuid") == "u1":
      return self._file()
    self.send_error(404)

  def _confirm_page(self, file_id: str):
    page = {
        "form": ('<form id="download-form" action="/usercontent" method="get">'
                 f'<input type="hidden" name="id" value="{file_id}">'
                 '<input type="hidden" name="confirm" value="t">'
                 '<input type="hidden" name="uuid" value="u1"></form>'),
        "link": f'<a href="/uc?export=download&amp;confirm=TOKEN&amp;id={file_id}">anyway</a>',
        "cookie": "<p>Google Drive can't scan this file for viruses.</p>",
    }[self.state.drive]
    body = f"<html><body>{page}</body></html>".encode()
    self.send_response(200)
    self.send_header("Content-Type", "text/html; charset=utf-8")
    if self.state.drive == "cookie":
      self.send_header("Set-Cookie", "download_warning_1234=TOKEN; Path=/")
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def _file(self):
    state, data = self.state, self.state.payload
    match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
    start = int(match.group(1)) if match and state.ranges else 0
    if start >= len(data):
      self.send_response(416)
      self.send_header("Content-Range", f"bytes */{len(data)}")
      self.send_header("Content-Length", "0")
      self.end_headers()
      return
    self.send_response(206 if start else 200)
    self.send_header("Content-Type", "application/octet-stream")
    self.send_header("Content-Length", str(len(data) - start))
    if start:
      self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    self.end_headers()
    if state.cut_next:  # Promise the whole file, send part of it, hang up.
      self.wfile.write(data[start:start + state.cut_next])
      state.cut_next = 0
      return
    self.wfile.write(data[start:])


@pytest.fixture(scope="module")
def tiny_pth() -> bytes:
  """A torch-written checkpoint of a tiny registry model, laid out as NVIDIA publishes them."""
  torch = pytest.importorskip("torch")
  from flax import nnx

  from jaxseg.convert import torch_layout
  from jaxseg.models import registry
  model = registry.create_model(_MODEL, num_classes=_CLASSES, rngs=nnx.Rngs(0), **_OVERRIDES)
  sd = collections.OrderedDict(("module." + k, torch.from_numpy(np.array(v)))
                               for k, v in torch_layout.model_state_dict(model).items())
  buffer = io.BytesIO()
  torch.save({"state_dict": sd, "epoch": 3}, buffer)
  return buffer.getvalue()


@pytest.fixture
def server(tiny_pth):
  state = _State(tiny_pth)
  handler = type("Handler", (_Handler,), {"state": state})
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}", state
  httpd.shutdown()
  httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXSEG_CACHE", str(tmp_path / "cache"))
  return tmp_path / "cache"


def _entry(url: str, payload: bytes, monkeypatch, **changes) -> hub.Entry:
  """A catalog of one entry for the tiny model (the CLI looks names up in the catalog)."""
  fields = dict(name=_NAME, filename="tiny_best.pth", url=url, download="direct",
                model=_MODEL, source="tests", sha256=hashlib.sha256(payload).hexdigest(),
                num_classes=_CLASSES, class_table="camvid", model_overrides=dict(_OVERRIDES))
  fields.update(changes)
  monkeypatch.setattr(catalog, "CATALOG", (fields,))
  return hub.get_entry(_NAME)


def _files(root) -> list[str]:
  return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- the catalog ------------------------------------------------------------------------------

def test_catalog_is_consistent():
  from jaxseg.models import registry
  from jaxseg.sdcnet import convert_weights
  entries = hub.entries()
  assert len({e.name for e in entries}) == len(entries)
  models = {"segmentation": set(registry.list_models()),
            "sdcnet": set(convert_weights.MODELS), "flownet2": {convert_weights.FLOWNET2}}
  for e in entries:
    assert e.model in models[e.converter], e.name
    assert e.class_table in (*BUILTIN_TABLES, "mseg_universal", None), e.name
    assert (e.num_classes is None) == (e.converter != "segmentation"), e.name
    assert e.sha256 == "" or re.fullmatch(r"[0-9a-f]{64}", e.sha256), e.name
    if e.download == "gdrive":
      assert download.drive_download_url(e.url).startswith("https://drive.google.com/uc?"), e.name
    assert (e.download == "manual") == bool(e.folder_path), e.name
    if e.sha256_prefix:  # torchvision's file names end in the hash prefix.
      assert e.filename.endswith(f"-{e.sha256_prefix}.pth") and e.url.endswith(e.filename)
  assert {e.name.split("/")[0] for e in entries} == {"nvidia", "semseg", "torchvision", "mseg"}
  wanted = {"cityscapes_best.pth", "camvid_best.pth", "kitti_best.pth", "wider_resnet38.pth.tar",
            "sdc_cityscapes_vrec.pth.tar", "FlowNet2_checkpoint.pth.tar"}
  assert wanted <= {e.filename for e in entries}
  with pytest.raises(hub.PretrainedError, match="unknown pretrained checkpoint 'no/such'"):
    hub.get_entry("no/such")


def test_list_command(capsys):
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  assert re.search(r"nvidia/cityscapes-wrn38 +DeepWV3Plus +19 cityscapes +1071 MB +size", out)
  assert re.search(r"torchvision/deeplabv3-resnet50-coco .* sha256 prefix +direct", out)


# --- downloads --------------------------------------------------------------------------------

def test_get_downloads_verifies_converts_and_caches(server, cache, monkeypatch, capsys,
                                                    tiny_pth):
  base, state = server
  entry = _entry(f"{base}/files/tiny.pth", tiny_pth, monkeypatch)
  assert cli.main(["get", _NAME, "--quiet"]) == 0
  out, err = capsys.readouterr()
  path = hub.checkpoint_path(entry)
  assert out == f"{path}\n" and path == cache / "pretrained/converted/test/tiny-r18/0"
  assert hub.download_path(entry).read_bytes() == tiny_pth
  from flax import nnx

  from jaxseg.convert import torch_layout
  from jaxseg.models import registry
  from jaxseg.runtime.checkpoint import restore_model_variables
  model = registry.create_model(_MODEL, num_classes=_CLASSES, rngs=nnx.Rngs(7), **_OVERRIDES)
  meta = restore_model_variables(str(path), model, expected_model=_MODEL)
  assert meta["model_overrides"] == _OVERRIDES and meta["num_classes"] == _CLASSES
  want = torch_layout.model_state_dict(
      registry.create_model(_MODEL, num_classes=_CLASSES, rngs=nnx.Rngs(0), **_OVERRIDES))
  got = torch_layout.model_state_dict(model)
  assert list(got) == list(want)
  for key in want:  # Every tensor of the file, not the re-seeded initialisation.
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  assert not [p for p in _files(cache) if ".tmp-" in p or p.endswith(".part")]
  served = len(state.requests)
  assert cli.main(["get", _NAME]) == 0  # Cached: no request, the same path.
  assert capsys.readouterr().out == f"{path}\n" and len(state.requests) == served


def test_wrong_checksum_is_refused_and_nothing_is_kept(server, cache, monkeypatch, tiny_pth):
  base, _ = server
  entry = _entry(f"{base}/files/tiny.pth", tiny_pth, monkeypatch, sha256="ab" * 32)
  with pytest.raises(hub.PretrainedError, match="does not match the published sha256 abab"):
    hub.fetch(entry, progress=False)
  assert _files(cache) == []
  entry = _entry(f"{base}/files/tiny.pth", tiny_pth, monkeypatch, sha256="",
                 sha256_prefix="0badc0de")
  with pytest.raises(hub.PretrainedError, match="published prefix 0badc0de"):
    hub.fetch(entry, progress=False)
  assert _files(cache) == []


@pytest.mark.parametrize("ranges", [True, False])
def test_interrupted_download_resumes(server, monkeypatch, tiny_pth, ranges):
  base, state = server
  entry = _entry(f"{base}/files/tiny.pth", tiny_pth, monkeypatch)
  state.ranges, state.cut_next = ranges, len(tiny_pth) // 3
  with pytest.raises(hub.PretrainedError, match="resumes on the next run"):
    hub.fetch(entry, progress=False, retries=0)  # The connection is cut: the .part stays.
  part = hub.download_path(entry).with_name("tiny_best.pth.part")
  assert part.stat().st_size == len(tiny_pth) // 3 and not hub.download_path(entry).exists()
  assert hub.fetch(entry, progress=False).read_bytes() == tiny_pth
  assert state.requests[-1][1] == f"bytes={len(tiny_pth) // 3}-"  # It asked for the rest.
  assert not part.exists()
  # Within one call a cut connection is resumed at once.
  hub.download_path(entry).unlink()
  state.cut_next = 1000
  assert hub.fetch(entry, progress=False).read_bytes() == tiny_pth
  assert [r for _, r in state.requests[-2:]] == [None, "bytes=1000-"]


def test_complete_part_file_is_verified_and_kept(server, monkeypatch, tiny_pth):
  """A .part that already holds every byte (a run stopped before the rename): HTTP 416."""
  base, state = server
  entry = _entry(f"{base}/files/tiny.pth", tiny_pth, monkeypatch)
  part = hub.download_path(entry).with_name("tiny_best.pth.part")
  part.parent.mkdir(parents=True)
  part.write_bytes(tiny_pth)
  assert hub.fetch(entry, progress=False).read_bytes() == tiny_pth
  assert state.requests == [("/files/tiny.pth", f"bytes={len(tiny_pth)}-")]


def test_sdcnet_and_flownet2_entries_convert_into_their_folders(cache, monkeypatch, tiny_pth):
  from jaxseg.sdcnet import convert_weights
  calls = []

  def fake_convert(*, out: str, **files):  # The real one: test_propagation.py.
    calls.append(files)
    (kind, _), = files.items()
    (pathlib.Path(out) / kind / "0").mkdir(parents=True)

  monkeypatch.setattr(convert_weights, "convert", fake_convert)
  for kind, model in [("sdcnet", "SDCNet2DRecon"), ("flownet2", "FlowNet2")]:
    entry = _entry("http://127.0.0.1:9/unused", tiny_pth, monkeypatch, converter=kind,
                   model=model, num_classes=None, class_table=None, model_overrides={})
    hub.download_path(entry).parent.mkdir(parents=True, exist_ok=True)
    hub.download_path(entry).write_bytes(tiny_pth)
    path = hub.get(entry, progress=False)
    assert path == cache / f"pretrained/converted/test/tiny-r18/{kind}/0" and path.is_dir()
    assert calls.pop() == {kind: str(hub.download_path(entry))}
    shutil.rmtree(hub.converted_dir(entry))


def _closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_offline_says_where_to_put_the_file_and_uses_it(cache, monkeypatch, tiny_pth):
  entry = _entry(f"http://127.0.0.1:{_closed_port()}/files/tiny.pth", tiny_pth, monkeypatch)
  dest = hub.download_path(entry)
  assert dest == cache / "pretrained/downloads/test/tiny-r18/tiny_best.pth"
  with pytest.raises(hub.PretrainedError) as error:
    hub.fetch(entry, progress=False)
  message = str(error.value)
  assert "\n" not in message and "refused" in message.lower()
  assert message.endswith(f"by hand and put it at {dest}")
  assert _files(cache) == []
  dest.write_bytes(tiny_pth)  # The user's copy (its folder exists) is verified and used.
  assert hub.fetch(entry, progress=False) == dest
  dest.write_bytes(tiny_pth[:-1])
  with pytest.raises(hub.PretrainedError, match=f"{dest}: sha256 .* does not match"):
    hub.fetch(entry, progress=False)


@pytest.mark.parametrize("kind", ["form", "link", "cookie"])
def test_google_drive_confirm_page(server, monkeypatch, tiny_pth, kind):
  base, state = server
  state.drive = kind
  entry = _entry(f"{base}/uc?export=download&id=FILE1", tiny_pth, monkeypatch,
                 download="gdrive")
  assert hub.fetch(entry, progress=False).read_bytes() == tiny_pth
  first, confirmed = (urllib.parse.urlsplit(p) for p, _ in state.requests)
  assert first.path == "/uc" and "confirm" not in first.query
  assert ("confirm=t" if kind == "form" else "confirm=TOKEN") in confirmed.query
  assert "id=FILE1" in confirmed.query


def test_html_instead_of_the_file_is_an_error(server, monkeypatch, tiny_pth):
  base, _ = server
  entry = _entry(f"{base}/uc?export=download&id=X", tiny_pth, monkeypatch)
  monkeypatch.setattr(download, "drive_confirm_url", lambda *args: None)
  with pytest.raises(hub.PretrainedError, match="answered with an HTML page, not the file"):
    hub.fetch(entry, progress=False)


def test_drive_urls():
  assert download.drive_download_url("https://drive.google.com/file/d/1Ab_-c/view?usp=sharing") \
      == "https://drive.google.com/uc?export=download&id=1Ab_-c"
  assert download.drive_download_url("https://x.org/a.pth") == "https://x.org/a.pth"
  page = "<html><p>Google Drive can't scan this file for viruses.</p></html>"
  assert download.drive_confirm_url(page, "https://drive.google.com/uc?export=download&id=1Ab",
                                    {}) == ("https://drive.usercontent.google.com/download?"
                                            "id=1Ab&export=download&confirm=t")
  assert download.drive_confirm_url(page, "https://x.org/login?id=1", {}) is None


def test_verify_size_sanity_check(tmp_path):
  path = tmp_path / "f.bin"
  path.write_bytes(b"x" * 1_000_000)
  assert download.verify(path, size_mb=1) is None
  assert download.verify(path, size_mb=0.95) is None  # MiB vs MB: within 10%.
  assert "far from the published size of about 2 MB" in download.verify(path, size_mb=2)
  assert download.verify(path) is None  # Nothing published: nothing to check.

"""Published checkpoints by name: `python -m jaxseg.pretrained list | get NAME`.

    from jaxseg import pretrained
    ckpt_dir = pretrained.get("nvidia/cityscapes-wrn38")  # download, verify, convert (cached)

The catalog (jaxseg/pretrained/catalog.py) lists each file's URL, published size and hash,
jaxseg model and class table; jaxseg/pretrained/hub.py holds the cache and the conversion,
jaxseg/pretrained/download.py the resumable download.
"""
from jaxseg.pretrained.download import ChecksumError
from jaxseg.pretrained.download import DownloadError
from jaxseg.pretrained.hub import Entry
from jaxseg.pretrained.hub import PretrainedError
from jaxseg.pretrained.hub import cache_dir
from jaxseg.pretrained.hub import checkpoint_path
from jaxseg.pretrained.hub import download_path
from jaxseg.pretrained.hub import entries
from jaxseg.pretrained.hub import fetch
from jaxseg.pretrained.hub import get
from jaxseg.pretrained.hub import get_entry

__all__ = ["ChecksumError", "DownloadError", "Entry", "PretrainedError", "cache_dir",
           "checkpoint_path", "download_path", "entries", "fetch", "get", "get_entry"]

"""Resumable, verified file downloads with the standard library (urllib), Google Drive included.

`download_file(url, dest)` writes `dest + ".part"`, resumes it with an HTTP Range request when
a previous attempt was cut (also across processes), verifies the finished file with `verify`
and only then renames it to `dest` (atomic on one file system): `dest` either does not exist or
holds the whole, checked file. A file that fails verification is deleted, never kept.

Google Drive: a "drive.google.com/file/d/ID/view" link is fetched from the download endpoint
(`drive_download_url`); for large files Drive first answers with an HTML warning page ("can't
scan for viruses"), whose confirm token is taken from the page's download form, a `confirm=`
link or the `download_warning` cookie (`drive_confirm_url`), falling back to the
drive.usercontent.google.com form with `confirm=t`.
"""
from __future__ import annotations

import hashlib
import html.parser
import http.client
import http.cookiejar
import os
import re
from typing import Callable
import urllib.error
import urllib.parse
import urllib.request

from tqdm import tqdm

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_MAX_PAGE_BYTES = 4 << 20  # An HTML answer larger than this is not a confirm page.
_MAX_CONFIRM_HOPS = 3
_USER_AGENT = "jaxseg-pretrained/1 (urllib)"
_DRIVE_FILE = re.compile(r"^https://drive\.google\.com/file/d/([\w-]+)")
_DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
_USERCONTENT = "https://drive.usercontent.google.com/download"


class DownloadError(RuntimeError):
  """A download that cannot complete; the message is one line for the user."""


class ChecksumError(DownloadError):
  """The downloaded bytes are not the published file (the download was deleted)."""


def drive_download_url(url: str) -> str:
  """A Drive "file/d/ID/view" sharing link -> its download endpoint; other URLs unchanged."""
  match = _DRIVE_FILE.match(url)
  if not match:
    return url
  return f"https://drive.google.com/uc?export=download&id={match.group(1)}"


class _PageParser(html.parser.HTMLParser):
  """Collects the download form (action + inputs) and every href of a Drive warning page."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.form_action: str | None = None
    self.form_inputs: list[tuple[str, str]] = []
    self.hrefs: list[str] = []
    self._in_form = False

  def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
    a = {k: v or "" for k, v in attrs}
    if tag == "form" and (a.get("id") == "download-form" or "download" in a.get("action", "")):
      self._in_form, self.form_action = True, a.get("action", "")
    elif tag == "input" and self._in_form and a.get("name"):
      self.form_inputs.append((a["name"], a.get("value", "")))
    elif tag == "a" and "href" in a:
      self.hrefs.append(a["href"])

  def handle_endtag(self, tag: str) -> None:
    if tag == "form":
      self._in_form = False


def _with_query(url: str, **params: str) -> str:
  parts = urllib.parse.urlsplit(url)
  query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
  query.update(params)
  return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def drive_confirm_url(page: str, page_url: str, cookies: dict[str, str]) -> str | None:
  """The URL that confirms a Drive "download anyway" page, or None if the page has none.

  Args:
    page: the HTML Drive answered with instead of the file.
    page_url: the URL that answered (relative links resolve against it).
    cookies: cookie name -> value after that answer (old Drive: `download_warning_*`).
  """
  parser = _PageParser()
  parser.feed(page)
  if parser.form_action is not None and parser.form_inputs:
    action = urllib.parse.urljoin(page_url, parser.form_action)
    return _with_query(action, **dict(parser.form_inputs))
  for href in parser.hrefs:
    if "confirm=" in href:
      return urllib.parse.urljoin(page_url, href)
  for name, value in cookies.items():
    if name.startswith("download_warning"):
      return _with_query(page_url, confirm=value)
  file_id = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page_url).query)).get("id")
  if file_id and urllib.parse.urlsplit(page_url).hostname in _DRIVE_HOSTS[:2]:
    return _with_query(_USERCONTENT, id=file_id, export="download", confirm="t")
  return None


def file_sha256(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(_CHUNK), b""):
      digest.update(block)
  return digest.hexdigest()


def verify(path: str | os.PathLike, *, sha256: str = "", sha256_prefix: str = "",
           size_mb: float | None = None) -> str | None:
  """None if `path` matches what is known of the published file, else why not (one line).

  The full sha256 when published, else torchvision's hash prefix, else the stated size within
  10% (MB or MiB: publishers do not say which) as a sanity check.
  """
  if sha256 or sha256_prefix:
    got = file_sha256(path)
    want = sha256 or sha256_prefix
    if not got.startswith(want.lower()):
      return f"sha256 {got} does not match the published {'sha256' if sha256 else 'prefix'} {want}"
    return None
  if size_mb:
    size = os.path.getsize(path)
    if not 0.9 * size_mb * 1e6 <= size <= 1.1 * size_mb * 2**20:
      return f"{size} bytes, far from the published size of about {size_mb} MB"
  return None


def _content_range_start(value: str | None) -> int | None:
  match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
  return int(match.group(1)) if match else None


class _Fetcher:
  """One download: a cookie-keeping opener, the current URL and the .part file."""

  def __init__(self, url: str, part: str, *, progress: bool, desc: str):
    self.url = drive_download_url(url)
    self.part = part
    self.progress = progress
    self.desc = desc
    self.jar = http.cookiejar.CookieJar()
    self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

  def _open(self, offset: int) -> http.client.HTTPResponse:
    request = urllib.request.Request(self.url, headers={"User-Agent": _USER_AGENT})
    if offset:
      request.add_header("Range", f"bytes={offset}-")
    try:
      return self.opener.open(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as e:
      if e.code == 416 and offset:  # The .part already holds every byte.
        return e
      raise

  def _response_for_file(self, offset: int) -> http.client.HTTPResponse:
    """The response carrying the file's bytes, after following Drive confirm pages."""
    for _ in range(_MAX_CONFIRM_HOPS + 1):
      response = self._open(offset)
      kind = response.headers.get("Content-Type", "")
      if response.status == 416 or not kind.startswith("text/html"):
        return response
      page_url = response.geturl()
      page = response.read(_MAX_PAGE_BYTES).decode("utf-8", "replace")
      response.close()
      cookies = {c.name: c.value or "" for c in self.jar}
      confirm = drive_confirm_url(page, page_url, cookies)
      if confirm is None or confirm == self.url:
        raise DownloadError(f"{page_url} answered with an HTML page, not the file (a quota or "
                            "sign-in page?)")
      self.url = confirm
    raise DownloadError(f"{self.url}: more than {_MAX_CONFIRM_HOPS} confirm pages")

  def fetch(self) -> None:
    """Appends the missing bytes to the .part file (restarts it if the server ignores Range)."""
    offset = os.path.getsize(self.part) if os.path.exists(self.part) else 0
    response = self._response_for_file(offset)
    with response:
      if response.status == 416:
        return
      if offset and (response.status != 206
                     or _content_range_start(response.headers.get("Content-Range")) != offset):
        offset = 0  # A full answer (200): start the file again.
      length = response.headers.get("Content-Length")
      os.makedirs(os.path.dirname(self.part) or ".", exist_ok=True)
      total = offset + int(length) if length and length.isdigit() else None
      with open(self.part, "ab" if offset else "wb") as f, tqdm(
          total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
          desc=self.desc, disable=not self.progress, leave=False) as bar:
        received = 0
        for block in iter(lambda: response.read(_CHUNK), b""):
          f.write(block)
          received += len(block)
          bar.update(len(block))
      if length and length.isdigit() and received < int(length):
        raise http.client.IncompleteRead(b"", int(length) - received)


def download_file(url: str, dest: str | os.PathLike, *,
                  check: Callable[[str], str | None] = lambda path: None,
                  retries: int = 3, progress: bool = True) -> str:
  """Downloads `url` to `dest` (resuming `dest.part`), verified by `check`; returns `dest`.

  Args:
    url: an http(s) URL or a Google Drive "file/d/ID/view" link.
    dest: the final path; written only once the whole file passed `check`.
    check: path -> None if the file is good, else the reason (see `verify`).
    retries: how many times a cut connection is resumed within this call.
    progress: show a tqdm progress bar on stderr.

  Raises:
    DownloadError: the server cannot be reached or keeps cutting the connection (the .part
      file stays for the next call to resume), or it answers with a page, not the file.
    ChecksumError: the file is not the published one (nothing is left behind).
  """
  dest = os.fspath(dest)
  part = dest + ".part"
  fetcher = _Fetcher(url, part, progress=progress, desc=os.path.basename(dest))
  for attempt in range(retries + 1):
    try:
      fetcher.fetch()
      break
    except urllib.error.HTTPError as e:
      raise DownloadError(f"{fetcher.url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
      reason = getattr(e, "reason", None) or e
      if attempt == retries or isinstance(e, urllib.error.URLError) and not os.path.exists(part):
        raise DownloadError(f"cannot download {url}: {reason}") from e
  problem = check(part)
  if problem:
    os.remove(part)
    raise ChecksumError(f"{url}: {problem}; the download was deleted")
  os.replace(part, dest)
  return dest

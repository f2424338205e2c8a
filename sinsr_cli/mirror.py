"""``sinsr export``: a folder that, uploaded as a Hugging Face model repo, is a mirror of the
zoo's weights for ``SINSR_HUB_REPO``: the converted safetensors, a model card (licences,
sources, hashes) and ``SHA256SUMS``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import SettingError
from .fetch import Progress, sha256_file
from .files import atomic_path, unwritable_reason
from .cache import CachePaths, cache_root, link_or_copy, read_sidecar
from .hub import resolve_weights
from .zoo import HF_LICENCE, LICENCE_URLS, ZOO, ZooEntry, zoo_entry


def export_mirror(
    folder: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    *,
    force: bool = False,
    offline: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write a folder that, uploaded as a Hugging Face model repo, is a mirror for ``SINSR_HUB_REPO``.

    For each model (default: the whole zoo; missing ones are fetched first): the converted
    safetensors under the file name the zoo asks the Hub for (hard-linked from the cache where
    possible), plus ``README.md`` (a model card: licences, sources, hashes, how to use it) and
    ``SHA256SUMS`` (``sha256sum -c`` format). Files already in ``folder`` are an error unless
    ``force``, which also removes the model files an earlier export wrote (listed in its
    SHA256SUMS, bytes unchanged) that this one does not: the folder is uploaded whole, and a
    file missing from the card and the sums must not go with it. Any other file is kept and
    named in one ``warn`` line. Returns the files written.
    """
    entries = [zoo_entry(n) for n in dict.fromkeys(names)] if names else list(ZOO)
    out = Path(folder).expanduser()
    targets = [out / e.hub_filename for e in entries] + [out / "README.md", out / "SHA256SUMS"]
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file, not a folder")
    reason = unwritable_reason(out / "README.md")
    if reason:
        raise ValueError(f"{out}: {reason}")
    existing = [t for t in targets if os.path.lexists(t)]
    if existing and not force:
        raise SettingError("force", f"{existing[0]}: already exists (use force to replace the mirror's files)", ("force",))
    sources = [resolve_weights(e.name, offline=offline, cache_dir=cache_dir, progress=progress) for e in entries]
    earlier = _listed(out / "SHA256SUMS") if force else {}
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for e, src in zip(entries, sources):
        rec = read_sidecar(CachePaths(cache_root(cache_dir), e).sidecar) or {}
        dst = out / e.hub_filename
        link_or_copy(src, dst)
        sha = rec.get("sha256") or sha256_file(dst)
        rows.append((e, sha, dst.stat().st_size, rec.get("source", e.url)))
    _write(out / "SHA256SUMS", "".join(f"{sha}  {e.hub_filename}\n" for e, sha, _, _ in rows))
    _write(out / "README.md", _model_card(rows))
    written = {t.name for t in targets}
    for name, sha in earlier.items():  # an earlier export's model that this one leaves out
        old = out / name
        if name not in written and old.is_file() and not old.is_symlink() and sha256_file(old) == sha:
            old.unlink()
    others = sorted(c.name for c in out.iterdir() if c.name not in written and not c.name.startswith("."))
    if others and warn is not None:
        warn(f"{out}: {len(others)} file(s) this export did not write stay and would be uploaded too "
             f"(not in its SHA256SUMS or model card): {', '.join(others)}")
    return [out / e.hub_filename for e in entries] + [out / "SHA256SUMS", out / "README.md"]


def _listed(sums: Path) -> dict[str, str]:
    """``{file name: sha256}`` of a folder's SHA256SUMS (an earlier export's files); bare names
    only, so no line can point outside the folder."""
    try:
        lines = sums.read_text(encoding="utf-8").splitlines() if sums.is_file() and not sums.is_symlink() else []
    except (OSError, UnicodeDecodeError):
        return {}
    pairs = (line.split(maxsplit=1) for line in lines)
    return {n.lstrip("*"): h.lower() for h, n in (p for p in pairs if len(p) == 2)
            if len(h) == 64 and n.lstrip("*") not in ("", ".", "..") and "/" not in n and os.sep not in n}


def _write(path: Path, text: str) -> None:
    """Replace ``path`` whole: a link there is replaced, never written through (``--force`` over a
    folder where README.md links to a user's file must not change that file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _model_card(rows: Sequence[tuple[ZooEntry, str, int, str]]) -> str:
    """A Hub model card for a mirror: YAML front matter, then what each file is and whose it is."""
    licences = list(dict.fromkeys(e.licence for e, *_ in rows))
    hf_id = HF_LICENCE[licences[0]] if len(licences) == 1 else "other"
    front = ["---", f"license: {hf_id}"]
    if hf_id == "other":
        front += [f"license_name: {'-'.join(licences).lower().replace(' ', '-').replace('.', '-')}",
                  f"license_link: {LICENCE_URLS[licences[0]] if len(licences) == 1 else 'README.md'}"]
    front += ["library_name: sinsr-cli", "pipeline_tag: image-to-image",
              "tags: [super-resolution, diffusion, sinsr, resshift]", "---", ""]
    lines = [
        "# sinsr weights mirror", "",
        "A mirror of the authors' SinSR / ResShift weights, converted to self-describing safetensors by "
        f"`sinsr export` (sinsr-cli {__version__}). The weights are **the authors'**, under their "
        "licences below (**non-commercial use only**); this mirror changes the file format, not the "
        "licence.", "",
        "Use it with [sinsr](https://pypi.org/project/sinsr-cli/):", "",
        "```bash", "export SINSR_HUB_REPO=<user>/<this-repo>   # optional: SINSR_HUB_REVISION=<commit>",
        "sinsr upscale photo.png", "```", "",
        "| file | model | licence | original | sha256 | bytes |", "|---|---|---|---|---|---|",
    ]
    for e, sha, size, source in rows:
        lines.append(f"| `{e.hub_filename}` | {e.name}: {e.description} | [{e.licence}]({LICENCE_URLS[e.licence]}) "
                     f"| {e.url} | `{sha}` | {size} |")
    lines += ["", "## Licences", ""]
    for lic in licences:
        names = ", ".join(e.name for e, *_ in rows if e.licence == lic)
        lines.append(f"- {names}: {lic}, {LICENCE_URLS[lic]}")
    lines += [
        "", "SinSR: Yufei Wang et al., *SinSR: Diffusion-Based Image Super-Resolution in a Single Step*, "
        "CVPR 2024, https://github.com/wyf0912/SinSR.",
        "ResShift: Zongsheng Yue et al., *ResShift: Efficient Diffusion Model for Image Super-resolution "
        "by Residual Shifting*, NeurIPS 2023, https://github.com/zsyOAOA/ResShift.", "",
        "Check the files with `sha256sum -c SHA256SUMS`.", "",
    ]
    return "\n".join(front + lines)


__all__ = ["export_mirror"]

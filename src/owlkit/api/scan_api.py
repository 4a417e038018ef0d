"""`owl scan`: a verdict for every file of a path or a stored artifact, nothing loaded."""

from __future__ import annotations

from pathlib import Path

from owlkit.api.base import ApiBase, Ref, ref_str
from owlkit.api.results import ScannedFile, ScanReport
from owlkit.errors import NotFound


class ScanApi(ApiBase):
    def scan(self, target: Ref | str | Path) -> ScanReport:
        """Scan a file or folder in place when ``target`` is an existing path, else the stored files of
        the artifact it names. Every file is judged by content (pickle opcodes against the tensor
        allowlist, safetensors and GGUF structure, chat templates), never loaded."""
        from owlkit.formats.scan import scan_file, scan_path, worst

        digest: str | None = None
        if isinstance(target, Path) or (isinstance(target, str) and Path(target).exists()):
            verdicts, name = scan_path(Path(target)), str(target)
        else:
            with self._store() as store:
                try:
                    rec = self._record(store, target)
                except NotFound:
                    if isinstance(target, str) and ("/" in target or target.startswith(".")):
                        raise NotFound(
                            f"{target}: no such file or folder (nor a stored artifact of that name)"
                        ) from None
                    raise
                verdicts = [scan_file(store.blobs.path(f.sha256), f.path) for f in rec.manifest.files]
            verdicts.sort(key=lambda v: v.path)
            name, digest = ref_str(target), rec.digest
        files = [ScannedFile(v.path, v.kind, v.verdict, v.reasons) for v in verdicts]
        return ScanReport(name, digest, worst(verdicts), files)

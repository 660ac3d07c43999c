"""Admitting test desks to one cluster without the network: a CA per test directory, kept beside the
desks' data directories, issues each desk its certificate (what `circmesh init` and `join` leave behind).
The enrolment protocol itself is tested on its own (test_enrolment.py, test_membership.py)."""

from __future__ import annotations

import threading
from pathlib import Path

from node.cluster import CLUSTER_FILE, admit_locally
from node.trust.ca import CertificateAuthority, create_ca, load_ca, save_ca
from node.trust.identity import load_or_create_identity

CA_DIR = "test-cluster-ca"


_LOCK = threading.Lock()  # desks of one test start concurrently: they must share one CA


def test_ca(root: Path) -> CertificateAuthority:
    directory = root / CA_DIR
    with _LOCK:
        if (directory / "ca-key.pem").exists():
            return load_ca(directory)
        ca = create_ca("Test library")
        save_ca(ca, directory)
        return ca


def provision(data_dir: Path, desk: str, role: str = "admin", ca: CertificateAuthority | None = None) -> None:
    """Makes `data_dir` a member of the cluster whose CA sits beside it (unless it already is one)."""
    if (data_dir / CLUSTER_FILE).exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    admit_locally(ca or test_ca(data_dir.parent), data_dir, load_or_create_identity(data_dir), desk, role)


test_ca.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name
